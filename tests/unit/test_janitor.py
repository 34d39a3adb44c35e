"""Waiting events expire against what the consumers have read, not against the wall clock alone
(consumers.horizon): an event parked at p is rejected only once everything published up to p + park
timeout has been applied. Unit tests with fakes for Kafka's end offsets and PostgreSQL's offsets."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.barrier import AdminBarrier, BarrierTimeout
from consumers.horizon import ReadHorizon
from consumers.kafka_offsets import Progress, behind, covered
from consumers.timers import WaitingJanitor
from storage.unit_of_work import Report

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A, P = "admin", "path"


class FakeKafka:
    """End offsets per (topic, partition), and which offset ranges hold records."""

    def __init__(self) -> None:
        self.end: dict[tuple[str, int], int] = {}
        self.no_records: set[tuple[str, int, int, int]] = set()
        self.probes = 0

    async def ends(self, topic: str) -> dict[int, int]:
        return {p: o for (t, p), o in self.end.items() if t == topic}

    async def ends_of(self, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        return {k: o for k, o in self.end.items() if k[0] in topics}

    async def has_records(self, topic: str, partition: int, start: int, end: int) -> bool | None:
        self.probes += 1
        return (topic, partition, start, end) not in self.no_records


class FakeDb:
    def __init__(self) -> None:
        self.applied: dict[tuple[str, int], int] = {}
        self.now = T0

    async def applied_offsets(self, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        return {k: o for k, o in self.applied.items() if k[0] in topics}

    async def database_time(self) -> datetime:
        return self.now


def horizon(kafka: FakeKafka, db: FakeDb, probe_after_s: float = 3600.0) -> ReadHorizon:
    progress = Progress(kafka, db.applied_offsets, (A, P), probe_after_s=probe_after_s)  # type: ignore[arg-type]
    return ReadHorizon(progress, db.database_time)


def test_covered_and_behind() -> None:
    assert covered({(A, 0): 5}, {(A, 0): 5}) and covered({(A, 0): 0}, {})
    assert not covered({(A, 0): 5, (A, 1): 1}, {(A, 0): 9})
    assert behind({(A, 0): 5, (A, 1): 3}, {(A, 0): 4}) == 4


def test_the_horizon_is_the_latest_snapshot_the_applied_offsets_cover() -> None:
    kafka, db = FakeKafka(), FakeDb()
    h = horizon(kafka, db)
    kafka.end = {(A, 0): 10, (P, 0): 100}
    assert asyncio.run(h.advance()) is None  # nothing applied yet
    db.now = T0 + timedelta(seconds=1)
    kafka.end = {(A, 0): 10, (P, 0): 200}
    db.applied = {(A, 0): 10, (P, 0): 150}  # covers the first snapshot only
    assert asyncio.run(h.advance()) == T0
    db.now = T0 + timedelta(seconds=2)
    db.applied = {(A, 0): 10, (P, 0): 200}  # covers the second and the one taken now
    assert asyncio.run(h.advance()) == T0 + timedelta(seconds=2)
    assert not h.snapshots


def test_a_restarted_worker_reaches_nothing_until_the_backlog_is_applied() -> None:
    """After a long stop every waiting event is older than the park timeout; the horizon starts at the
    restart and is reached only once what was published before it is applied."""
    kafka, db = FakeKafka(), FakeDb()
    db.now = T0 + timedelta(hours=5)
    kafka.end = {(P, 0): 1000}
    db.applied = {(P, 0): 10}
    h = horizon(kafka, db)
    for _ in range(3):
        assert asyncio.run(h.advance()) is None
    db.applied = {(P, 0): 1000}
    assert asyncio.run(h.advance()) == T0 + timedelta(hours=5)


def test_offsets_without_records_count_as_applied_once_probed() -> None:
    kafka, db = FakeKafka(), FakeDb()
    kafka.end = {(A, 0): 13}
    db.applied = {(A, 0): 12}  # offset 12 is a transaction marker: nobody will ever apply it
    kafka.no_records.add((A, 0, 12, 13))
    h = horizon(kafka, db, probe_after_s=0.0)
    assert asyncio.run(h.advance()) == T0
    assert kafka.probes == 1


def test_a_range_with_records_is_not_skipped() -> None:
    kafka, db = FakeKafka(), FakeDb()
    kafka.end = {(A, 0): 13}
    db.applied = {(A, 0): 12}
    h = horizon(kafka, db, probe_after_s=0.0)
    assert asyncio.run(h.advance()) is None and kafka.probes == 1


class FakeUow:
    def __init__(self) -> None:
        self.expired_before: list[datetime] = []
        self.release_calls = 0

    async def expire_waiting(self, parked_before: datetime) -> Report:
        self.expired_before.append(parked_before)
        return Report(outcomes=Counter(rejected=1), outbox_rows=1)

    async def release_ready(self) -> Report:
        self.release_calls += 1
        return Report()


class FixedHorizon:
    def __init__(self) -> None:
        self.value: datetime | None = None
        self.lag_s: float | None = None

    async def advance(self) -> datetime | None:
        return self.value


def test_the_janitor_expires_what_was_parked_a_park_timeout_before_the_horizon() -> None:
    uow, h, published = FakeUow(), FixedHorizon(), []
    janitor = WaitingJanitor(uow, 30.0, h, lambda: published.append(1))  # type: ignore[arg-type]
    asyncio.run(janitor.run_once())
    assert uow.expired_before == [] and uow.release_calls == 1  # releasing is never held back
    h.value = T0
    asyncio.run(janitor.run_once())
    assert uow.expired_before == [T0 - timedelta(seconds=30)] and published == [1]


def test_the_barrier_waits_until_the_admin_topic_is_applied() -> None:
    kafka, db = FakeKafka(), FakeDb()
    kafka.end = {(A, 0): 5, (A, 1): 0}
    progress = Progress(kafka, db.applied_offsets, (A,), probe_after_s=3600.0)  # type: ignore[arg-type]
    barrier = AdminBarrier(progress, max_wait_s=5.0)
    seen: list[Any] = []

    async def scenario() -> float:
        async def admin_consumer() -> None:
            await asyncio.sleep(0.05)
            seen.append(barrier.health())
            db.applied = {(A, 0): 5}

        task = asyncio.create_task(admin_consumer())
        waited = await barrier.wait()
        await task
        return waited

    assert asyncio.run(scenario()) > 0
    assert seen and seen[0]["waiting"] is True and seen[0]["behind_records"] == 5
    assert barrier.health() == {"waiting": False}
    assert asyncio.run(barrier.wait()) == 0.0  # known to be applied: no database query needed


def test_the_barrier_gives_up_after_its_bound() -> None:
    kafka, db = FakeKafka(), FakeDb()
    kafka.end = {(A, 0): 5}
    progress = Progress(kafka, db.applied_offsets, (A,), probe_after_s=3600.0)  # type: ignore[arg-type]
    barrier = AdminBarrier(progress, max_wait_s=0.05)
    try:
        asyncio.run(barrier.wait())
    except BarrierTimeout as exc:
        assert "5 records behind" in str(exc)
    else:
        raise AssertionError("the barrier did not give up")
    assert barrier.health() == {"waiting": False}
