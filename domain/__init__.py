"""The policy engine of session-tally: pure functions of (state, event, time). No I/O, no clock, no
environment: the same code decides for `session-tally replay` and for the Kafka workers."""

__all__: list[str] = []
