"""Records a frozen relay handed to Kafka must never stay the last record of their key (issue 9).

The full freeze-batch campaign found it: a worker frozen for 33.6 s right after its relay handed a
round's records to the producer lost its session, so its lane locks; the other worker's relay published
the same rows and newer versions; then the frozen producer's records reached Kafka, after them, and 13
meeting statuses ended with a last record that is not their highest version (a compacted topic keeps the
last record of a key).

Here the same moment, exactly, with the real Kafka and PostgreSQL: relay A's producer holds the records
it is given (the freeze, as the broker sees it), A's session is ended (what PostgreSQL does to a frozen
session), relay B publishes the rows and newer versions, then A's records are let through, after them.
A's round then fails (its session is gone) and it publishes one more version of every tally and status
it had handed: the last record of every key is its highest version, and the highest versions equal
replay of the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from domain.replay import replay
from domain.timefmt import parse_instant
from producers.publisher import LINE_HEADER
from producers.relay import Relay
from producers.routing import route
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from storage import outbox
from storage.db import async_engine
from storage.messages import SourceRecord
from storage.unit_of_work import UnitOfWork
from tests.integration.pipeline_helpers import assert_same_document, comparable, db_url_with_application_name
from tests.integration.probes import read_raw_topic
from tests.integration.robustness_helpers import AT, confirmed, migrate, run_async, scheduled, setup_lines

pytestmark = pytest.mark.integration
PATHS = ("path-l1", "path-l2", "path-l3", "path-l4", "path-l5")
FROZEN_APP = "relay-frozen"


class HeldProducer:
    """A relay's producer whose record batches reach the broker only when :meth:`release` is called (a
    frozen process, as Kafka sees it: what it handed over arrives later)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.held: list[tuple[Any, str, int, asyncio.Future[Any]]] = []

    def create_batch(self) -> Any:
        return self.real.create_batch()

    async def partitions_for(self, topic: str) -> Any:
        return await self.real.partitions_for(topic)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append((builder, topic, partition, future))
        return future

    async def stop(self) -> None:
        await self.real.stop()

    def records_held(self) -> int:
        return sum(builder.record_count() for builder, *_rest in self.held)

    async def release(self) -> None:
        for builder, topic, partition, future in self.held:
            real_future = await self.real.send_batch(builder, topic, partition=partition)
            try:
                future.set_result(await real_future)
            except Exception as exc:
                future.set_exception(exc)


def source_records(settings: Settings, lines: Sequence[bytes], offsets: dict[str, int]) -> list[SourceRecord]:
    """The lines as input records (one partition per topic), numbered and offset after ``offsets``."""
    out = []
    number = sum(offsets.values())
    for raw in lines:
        number += 1
        kind, key = route(raw)
        topic = settings.topics.admin_events if kind == "admin" else settings.topics.path_events
        out.append(SourceRecord(topic, 0, offsets.get(topic, 0), key, raw, ((LINE_HEADER, str(number).encode()),)))
        offsets[topic] = offsets.get(topic, 0) + 1
    return out


async def until(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def publish_all(relay: Relay, engine: Any) -> None:
    """Rounds of ``relay`` until the outbox is empty."""
    deadline = time.monotonic() + 60
    while await outbox.backlog(engine):
        assert time.monotonic() < deadline, "the outbox did not empty"
        await relay.publish_once()


def version_order(records: list[dict[str, Any]], entity: str) -> tuple[dict[str, int], dict[str, int], int]:
    """Per entity: its last record's version (offset order) and its highest version; and how many
    records came after a higher version of their entity."""
    last: dict[str, int] = {}
    highest: dict[str, int] = {}
    backwards = 0
    for r in records:  # one key per path: an entity's records are on one partition, in offset order
        doc = json.loads(r["value"])
        key, version = doc[entity], doc["version"]
        backwards += version < highest.get(key, 0)
        last[key] = version
        highest[key] = max(highest.get(key, 0), version)
    return last, highest, backwards


async def scenario(settings: Settings) -> None:
    at = parse_instant(AT)
    first = setup_lines() + [scheduled(f"s-{p}-{m}", p, f"{p}-m{m}", 2 + m) for p in PATHS for m in (1, 2)]
    later = [confirmed(f"c-{p}", p, f"{p}-m1", 3) for p in PATHS]
    names = {"tallies": settings.topics.path_tallies, "statuses": settings.topics.meeting_statuses}
    names["rejected"] = settings.topics.rejected
    url = settings.database_url
    engine = async_engine(url, settings.db_schema)
    frozen_engine = async_engine(db_url_with_application_name(url, FROZEN_APP), settings.db_schema)
    uow = UnitOfWork(engine, settings.topics.admin_events, lambda: at, settings.topics.path_events)
    frozen = Relay(frozen_engine, settings.kafka, names, clock=lambda: at)
    other = Relay(engine, settings.kafka, names, clock=lambda: at)
    await frozen.start()
    await other.start()
    held = frozen.producer = HeldProducer(frozen.producer)
    offsets: dict[str, int] = {}
    try:
        await uow.process_batch(source_records(settings, first, offsets))
        rows = await outbox.backlog(engine)
        assert rows > 0
        round_a = asyncio.create_task(frozen.publish_once())

        async def all_handed() -> bool:
            return held.records_held() == rows

        await until(all_handed, "the frozen relay to hand its round's records to its producer")
        async with engine.begin() as conn:  # PostgreSQL ends the frozen session: its lanes are free
            ended = await conn.scalar(
                text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :a"),
                {"a": FROZEN_APP},
            )
        assert ended >= 1
        await publish_all(other, engine)  # the same rows, by the relay that took the lanes
        await uow.process_batch(source_records(settings, later, offsets))  # newer versions of the same keys
        await publish_all(other, engine)
        await held.release()  # the frozen relay's records reach Kafka now, after all of that
        with pytest.raises(Exception):  # noqa: B017 - its session is gone: the delete fails
            await round_a
        await publish_all(other, engine)  # the new versions the frozen relay wrote when its round failed

        tallies = await read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.path_tallies)
        statuses = await read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.meeting_statuses)
        late = 0
        for records, entity, count in ((tallies, "path_id", len(PATHS)), (statuses, "meeting_id", 2 * len(PATHS))):
            last, highest, backwards = version_order(records, entity)
            assert len(highest) == count
            assert last == highest, f"{entity}: a record that is not the highest version is the last of its key"
            late += backwards
        assert late >= len(PATHS), "the frozen relay's records did not land after newer versions: no case made"
        got = comparable(await read_snapshot(settings.kafka, settings.topics))
        assert_same_document(got, comparable(replay(first + later, at)))
    finally:
        await frozen.stop()
        await other.stop()
        await engine.dispose()
        await frozen_engine.dispose()


def test_records_of_a_frozen_relay_never_stay_the_last_of_their_key(settings: Settings) -> None:
    migrate(settings)
    run_async(scenario(settings))
