"""Publishers of session-tally: the outbox relay of tallies and statuses, the clock sweeper, and the
traffic generator used by ``session-tally simulate``, ``publish`` and the benchmarks."""

__all__: list[str] = []
