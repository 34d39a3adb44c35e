"""PostgreSQL state of session-tally: tables, migrations and the unit of work that runs the engine over
a batch of input records in ONE transaction (state changes, outbox rows and input offsets together)."""

__all__: list[str] = []
