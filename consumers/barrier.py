"""Order across the two input topics (SPEC section 3): no path event overtakes an admin event that was
published before it, however far the admin consumers are behind.

Invariant: before a batch of path events is applied, every partition of the admin topic has been
applied in PostgreSQL (by whichever worker owns it) up to the end offset that Kafka reported *after*
the batch was read. A path event was appended before it was read, and an admin event published before
it was acknowledged before it was sent (``session-tally publish`` keeps that order), so that admin
event lies below the end offsets read here and is applied first. This is the synchronisation Kafka
Streams does between the input partitions of a task, with PostgreSQL as the shared clock: the applied
offsets live in ``consumer_offsets``, written in the same transaction as the state.

- Nothing deadlocks: the wait holds no lock and no transaction; the admin consumers never wait for the
  path consumers; when the admin partitions belong to a worker that died, the admin group rebalances
  (after its session timeout) and the wait resumes on what the new owner applies.
- A wait is bounded (:data:`MAX_WAIT_S`): then the batch is handed back (the consumer seeks back and
  polls again, which keeps it in its group) and waited for again.
- Offsets that hold no record (transaction markers of transactional producers, compacted or deleted
  records) are never applied by anyone: after a second without progress the lagging partitions are
  probed, and a gap without records counts as applied (:class:`consumers.kafka_offsets.Progress`).
- Cost when nothing is behind: one ListOffsets request per batch (and one small query of
  ``consumer_offsets`` when the admin topic has grown since the last check).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from consumers.kafka_offsets import Progress, behind, covered

log = logging.getLogger("session_tally.barrier")

MAX_WAIT_S = 60.0
LOG_EVERY_S = 60.0
FIRST_LOG_AFTER_S = 5.0


class BarrierTimeout(Exception):
    """The admin topic was not applied up to the wanted offsets within :data:`MAX_WAIT_S`."""


class AdminBarrier:
    """``await wait()`` returns once the admin topic is applied up to its current end offsets.

    ``waiting_since`` (monotonic seconds) and ``behind`` (records) describe the wait in progress, for
    health and metrics; both are reset when it ends."""

    def __init__(self, progress: Progress, metrics: Any = None, max_wait_s: float = MAX_WAIT_S) -> None:
        self.progress = progress
        self.metrics = metrics
        self.max_wait_s = max_wait_s
        self.waiting_since: float | None = None
        self.behind = 0
        self._last_log = 0.0

    async def wait(self) -> float:
        """Wait until the admin topic is applied up to the end offsets read now; the seconds waited."""
        progress = self.progress
        wanted = await progress.ends()
        if covered(wanted, progress.effective()):
            return 0.0
        started = time.monotonic()
        delay = 0.002
        try:
            while True:
                current = await progress.refresh()
                if covered(wanted, current):
                    return time.monotonic() - started
                now = time.monotonic()
                waited = now - started
                self.waiting_since = started
                self.behind = behind(wanted, current)
                self._gauges()
                if waited >= progress.probe_after_s:
                    await progress.probe_gaps(wanted)
                if waited >= FIRST_LOG_AFTER_S and now - self._last_log >= LOG_EVERY_S:
                    self._last_log = now
                    log.warning(
                        "path events wait for the admin topic: %d admin records not applied yet (%.0f s)",
                        self.behind,
                        waited,
                    )
                if waited >= self.max_wait_s:
                    raise BarrierTimeout(f"admin topic {self.behind} records behind after {waited:.0f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            if self.waiting_since is not None and self.metrics is not None:
                self.metrics.inc("session_tally_admin_barrier_waits_total")
                self.metrics.inc("session_tally_admin_barrier_wait_seconds_total", time.monotonic() - started)
            self.waiting_since = None
            self.behind = 0
            self._gauges()

    def _gauges(self) -> None:
        if self.metrics is None:
            return
        since = 0.0 if self.waiting_since is None else time.monotonic() - self.waiting_since
        self.metrics.set("session_tally_admin_barrier_behind_records", self.behind)
        self.metrics.set("session_tally_admin_barrier_waiting_seconds", since)

    def health(self) -> dict[str, Any]:
        """What a health probe shows of the wait in progress."""
        if self.waiting_since is None:
            return {"waiting": False}
        return {
            "waiting": True,
            "since_s": round(time.monotonic() - self.waiting_since, 3),
            "behind_records": self.behind,
        }
