"""What a worker's health probes and lag metrics say, computed in the background so that a probe answers
at once even when PostgreSQL or Kafka hangs.

Every round (``every_s``, each bounded by ``round_timeout_s``) the monitor asks PostgreSQL and Kafka,
measures the lag of the partitions this worker owns (Kafka's end offset minus the offset PostgreSQL
applied) and the age of the oldest outbox row, and keeps the verdicts:

- ``postgres`` / ``kafka``: the last round reached them;
- ``consuming``: no owned partition has had records waiting for longer than ``stall_s`` without its
  applied offset moving (a record that stops a partition, a consumer loop that hangs);
- ``publishing``: no outbox row is older than ``stall_s`` (a relay that cannot publish);
- ``producers``: the relay, clock and janitor loops run.

A probe served from a round older than ``3 * every_s + round_timeout_s`` fails every check: the
monitor itself is stuck (a blocked event loop). Lag per partition, stuck partitions and the outbox age
are metrics too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("session_tally.health")

STALL_S = 120.0


class HealthMonitor:
    def __init__(
        self,
        *,
        ping_postgres: Callable[[], Awaitable[float | None]],
        ping_kafka: Callable[[], Awaitable[bool]],
        end_offsets: Callable[[str], Awaitable[dict[int, int]]],
        applied_offsets: Callable[[tuple[str, ...]], Awaitable[dict[tuple[str, int], int]]],
        assignments: Callable[[], set[tuple[str, int]]],
        producers_alive: Callable[[], bool],
        details: Callable[[], dict[str, Any]],
        metrics: Any = None,
        stall_s: float = STALL_S,
        every_s: float = 2.0,
        round_timeout_s: float = 5.0,
    ) -> None:
        """``ping_postgres`` returns the age in seconds of the oldest outbox row (None: the outbox is
        empty); ``assignments`` the (topic, partition)s this worker's consumers own now."""
        self.ping_postgres = ping_postgres
        self.ping_kafka = ping_kafka
        self.end_offsets = end_offsets
        self.applied_offsets = applied_offsets
        self.assignments = assignments
        self.producers_alive = producers_alive
        self.details = details
        self.metrics = metrics
        self.stall_s = stall_s
        self.every_s = every_s
        self.round_timeout_s = round_timeout_s
        self.postgres = False
        self.kafka = False
        self.outbox_age_s: float | None = None
        self.lag: dict[tuple[str, int], int] = {}
        self.stuck: list[tuple[str, int]] = []
        self.checked_at: float | None = None
        self._moved: dict[tuple[str, int], tuple[int, float]] = {}  # partition -> (applied, since)
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.round()
            try:
                await asyncio.wait_for(self._stop.wait(), self.every_s)
            except TimeoutError:
                pass

    async def round(self) -> None:
        postgres, kafka = await asyncio.gather(self._postgres(), self._kafka())
        self.postgres, self.kafka = postgres, kafka
        if postgres and kafka:
            try:
                await asyncio.wait_for(self._measure_lag(), self.round_timeout_s)
            except Exception as exc:
                log.debug("lag not measured this round: %s", exc)
        self.checked_at = time.monotonic()
        self._gauges()

    async def _postgres(self) -> bool:
        try:
            self.outbox_age_s = await asyncio.wait_for(self.ping_postgres(), self.round_timeout_s)
            return True
        except Exception:
            return False

    async def _kafka(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.ping_kafka(), self.round_timeout_s))
        except Exception:
            return False

    async def _measure_lag(self) -> None:
        owned = self.assignments()
        topics = tuple(sorted({t for t, _ in owned}))
        if not topics:
            self.lag, self.stuck = {}, []
            return
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            ends.update({(topic, p): o for p, o in (await self.end_offsets(topic)).items()})
        applied = await self.applied_offsets(topics)
        now = time.monotonic()
        lag: dict[tuple[str, int], int] = {}
        stuck = []
        for key in sorted(owned):
            done = applied.get(key, 0)
            lag[key] = max(0, ends.get(key, done) - done)
            previous = self._moved.get(key)
            if previous is None or previous[0] != done or lag[key] == 0:
                self._moved[key] = (done, now)
            elif now - previous[1] > self.stall_s:
                stuck.append(key)
        for key in set(self._moved) - owned:
            del self._moved[key]
        if stuck and set(stuck) != set(self.stuck):
            log.error(
                "partitions with records waiting and no progress for over %.0f s: %s",
                self.stall_s,
                ", ".join(f"{t}:{p} (lag {lag[(t, p)]})" for t, p in stuck),
            )
        self.lag, self.stuck = lag, stuck

    def _gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        for (topic, partition), value in self.lag.items():
            m.set("session_tally_consumer_lag", value, topic=topic, partition=str(partition))
        m.set("session_tally_stuck_partitions", len(self.stuck))
        m.set("session_tally_outbox_oldest_seconds", self.outbox_age_s or 0.0)

    def verdict(self) -> tuple[dict[str, bool], dict[str, Any]]:
        """(checks, details) for a probe, from the last round, without any I/O."""
        fresh = self.checked_at is not None and time.monotonic() - self.checked_at <= (
            3 * self.every_s + self.round_timeout_s
        )
        publishing = self.outbox_age_s is None or self.outbox_age_s <= self.stall_s
        checks = {
            "producers": self.producers_alive(),
            "postgres": fresh and self.postgres,
            "kafka": fresh and self.kafka,
            "consuming": fresh and not self.stuck,
            "publishing": fresh and publishing,
        }
        details: dict[str, Any] = {
            "checked_s_ago": None if self.checked_at is None else round(time.monotonic() - self.checked_at, 3),
            "lag_records": sum(self.lag.values()),
            "stuck_partitions": [f"{t}:{p}" for t, p in self.stuck],
            "outbox_oldest_s": None if self.outbox_age_s is None else round(self.outbox_age_s, 3),
            **self.details(),
        }
        return checks, details
