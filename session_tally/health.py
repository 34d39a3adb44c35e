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

Each round also ends the sessions of frozen clients that hold locks on the schema's tables and that the
PostgreSQL session bounds miss (``end_stalled``: storage.db.end_stalled_sessions); any worker of the
group may end a frozen peer's session, so the survivors are never held up by it for long.

A probe served from a round older than ``3 * every_s + round_timeout_s`` fails every check: the
monitor itself is stuck (a blocked event loop). Lag per partition, stuck partitions, assigned partitions,
the outbox age and each check are metrics too.

Two narrower verdicts serve the orchestrator's probes (docs/observability.md):

- :meth:`HealthMonitor.liveness` (``/livez``): the rounds are fresh and every consumer loop makes
  progress (its poll task runs; no batch has been in the handler for longer than ``stall_s``; a partition
  with records waiting saw a batch handled within ``stall_s``). PostgreSQL or Kafka being away never
  fails it: every wait on them is bounded, so the loops keep turning while they are away.
- :meth:`HealthMonitor.readiness` (``/readyz``): the last fresh round reached PostgreSQL and Kafka and
  every consumer has completed a group join (its assignment may be empty: a group with more members
  than partitions leaves some idle, which is a ready state, not a failure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger("session_tally.health")

STALL_S = 120.0


class ConsumerLoop(Protocol):
    """What the monitor asks of a consumer (consumers.subscriber.InputSubscriber)."""

    joined: bool  # a group join completed since the last revocation

    def assigned(self) -> set[tuple[str, int]]: ...

    def loop_problem(self, stall_s: float, records_waiting: bool) -> str | None: ...


class HealthMonitor:
    def __init__(
        self,
        *,
        ping_postgres: Callable[[], Awaitable[float | None]],
        ping_kafka: Callable[[], Awaitable[bool]],
        end_offsets: Callable[[str], Awaitable[dict[int, int]]],
        applied_offsets: Callable[[tuple[str, ...]], Awaitable[dict[tuple[str, int], int]]],
        consumers: Mapping[str, ConsumerLoop],
        producers_alive: Callable[[], bool],
        details: Callable[[], dict[str, Any]],
        end_stalled: Callable[[], Awaitable[list[tuple[int, str]]]] | None = None,
        metrics: Any = None,
        stall_s: float = STALL_S,
        every_s: float = 2.0,
        round_timeout_s: float = 5.0,
    ) -> None:
        """``ping_postgres`` returns the age in seconds of the oldest outbox row (None: the outbox is
        empty); ``consumers`` are this worker's consumer loops by name (their assignments are the
        partitions it owns)."""
        self.ping_postgres = ping_postgres
        self.ping_kafka = ping_kafka
        self.end_offsets = end_offsets
        self.applied_offsets = applied_offsets
        self.consumers = dict(consumers)
        self.producers_alive = producers_alive
        self.details = details
        self.end_stalled = end_stalled
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
        self.lag_at: float | None = None  # when ``lag`` was last measured
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
        if postgres and self.end_stalled is not None:
            await self._end_stalled(self.end_stalled)
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

    async def _end_stalled(self, end_stalled: Callable[[], Awaitable[list[tuple[int, str]]]]) -> None:
        try:
            ended = await asyncio.wait_for(end_stalled(), self.round_timeout_s)
        except Exception as exc:
            log.debug("stalled sessions not checked this round: %s", exc)
            return
        if ended:
            log.warning(
                "ended %d PostgreSQL session(s) of frozen clients (holding locks, waited on for over the bound): %s",
                len(ended),
                "; ".join(f"pid {pid}: {query!r}" for pid, query in ended),
            )
            if self.metrics is not None:
                self.metrics.inc("session_tally_stalled_sessions_ended_total", len(ended))

    async def _kafka(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.ping_kafka(), self.round_timeout_s))
        except Exception:
            return False

    def assignments(self) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for consumer in self.consumers.values():
            out |= consumer.assigned()
        return out

    async def _measure_lag(self) -> None:
        owned = self.assignments()
        topics = tuple(sorted({t for t, _ in owned}))
        if not topics:
            self.lag, self.stuck, self.lag_at = {}, [], time.monotonic()
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
        self.lag, self.stuck, self.lag_at = lag, stuck, now

    def _gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.replace("session_tally_consumer_lag", {(t, str(p)): v for (t, p), v in self.lag.items()})
        per_topic: dict[str, int] = {}
        for topic, _p in self.assignments():
            per_topic[topic] = per_topic.get(topic, 0) + 1
        m.replace("session_tally_assigned_partitions", {(t,): n for t, n in per_topic.items()})
        m.set("session_tally_stuck_partitions", len(self.stuck))
        m.set("session_tally_outbox_oldest_seconds", self.outbox_age_s or 0.0)
        for name, ok in self.verdict()[0].items():
            m.set("session_tally_health_check", 1 if ok else 0, check=name)

    def _fresh(self, at: float | None) -> bool:
        return at is not None and time.monotonic() - at <= 3 * self.every_s + self.round_timeout_s

    def liveness(self) -> tuple[dict[str, bool], dict[str, Any]]:
        """(checks, details) for ``/livez``: the monitor's rounds are fresh and every consumer loop turns."""
        measured = self._fresh(self.lag_at)
        problems: dict[str, str] = {}
        for name, consumer in self.consumers.items():
            waiting = measured and any(self.lag.get(tp, 0) > 0 for tp in consumer.assigned())
            problem = consumer.loop_problem(self.stall_s, waiting)
            if problem is not None:
                problems[name] = problem
        checks = {"monitor": self._fresh(self.checked_at), "consumer_loops": not problems}
        details: dict[str, Any] = {"checked_s_ago": self._ago(self.checked_at), "consumer_loops": problems}
        return checks, details

    def readiness(self) -> tuple[dict[str, bool], dict[str, Any]]:
        """(checks, details) for ``/readyz``: PostgreSQL and Kafka answered, every consumer joined its group."""
        fresh = self._fresh(self.checked_at)
        checks = {
            "postgres": fresh and self.postgres,
            "kafka": fresh and self.kafka,
            "joined": all(c.joined for c in self.consumers.values()),
        }
        details: dict[str, Any] = {
            "checked_s_ago": self._ago(self.checked_at),
            "assigned": {n: sorted(f"{t}:{p}" for t, p in c.assigned()) for n, c in self.consumers.items()},
        }
        return checks, details

    @staticmethod
    def _ago(at: float | None) -> float | None:
        return None if at is None else round(time.monotonic() - at, 3)

    def verdict(self) -> tuple[dict[str, bool], dict[str, Any]]:
        """(checks, details) for a probe, from the last round, without any I/O."""
        fresh = self._fresh(self.checked_at)
        publishing = self.outbox_age_s is None or self.outbox_age_s <= self.stall_s
        checks = {
            "producers": self.producers_alive(),
            "postgres": fresh and self.postgres,
            "kafka": fresh and self.kafka,
            "consuming": fresh and not self.stuck,
            "publishing": fresh and publishing,
        }
        details: dict[str, Any] = {
            "checked_s_ago": self._ago(self.checked_at),
            "lag_records": sum(self.lag.values()),
            "stuck_partitions": [f"{t}:{p}" for t, p in self.stuck],
            "outbox_oldest_s": None if self.outbox_age_s is None else round(self.outbox_age_s, 3),
            **self.details(),
        }
        return checks, details
