"""When may an event that waits for a program or meeting be rejected (``unknown_program`` /
``unknown_meeting``)? Not merely after a wall-clock timeout: the consumers may be far behind.

Invariant: an event parked at (database) time ``p`` is rejected only once everything that was published
to the input topics up to ``p + park timeout`` has been applied. What could release it therefore
releases it however far a consumer lags, after a restart as after a long outage (the first snapshot
after a restart is reached only once the consumers have caught up with what was published before it).

:meth:`ReadHorizon.advance` takes a snapshot (the database's clock, then the end offsets of every input
partition: end offsets read after the clock are at least those of that instant) and returns the time of
the latest snapshot that the offsets applied in PostgreSQL cover: the read horizon. The janitor rejects
what was parked at or before ``horizon - park timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime

from consumers.kafka_offsets import Offsets, Progress, covered

MAX_SNAPSHOTS = 4096  # one a janitor round; beyond this every other one is dropped (later, never wrong)


class ReadHorizon:
    def __init__(self, progress: Progress, database_time: Callable[[], Awaitable[datetime]]) -> None:
        self.progress = progress
        self.database_time = database_time
        self.snapshots: deque[tuple[datetime, Offsets]] = deque()
        self.reached: datetime | None = None

    async def advance(self) -> datetime | None:
        """Take a snapshot, drop those the applied offsets cover; the time of the latest covered one."""
        taken_at = await self.database_time()
        self.snapshots.append((taken_at, await self.progress.ends()))
        if len(self.snapshots) > MAX_SNAPSHOTS:
            self.snapshots = deque(list(self.snapshots)[::2])
        current = await self.progress.refresh()
        self._pop_covered(current)
        if self.snapshots:
            await self.progress.probe_gaps(self.snapshots[0][1])
            self._pop_covered(self.progress.effective())
        return self.reached

    def _pop_covered(self, current: Offsets) -> None:
        while self.snapshots and covered(self.snapshots[0][1], current):
            self.reached = self.snapshots.popleft()[0]
