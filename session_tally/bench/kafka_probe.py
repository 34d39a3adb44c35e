"""What the pipeline benchmark asks Kafka directly: topic edges, the consumer ceiling, groups settling, leaders,
clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.kafka_access import KafkaTarget, kafka_options
from session_tally.bench.common import BenchError, Progress

# ---------------------------------------------------------------------------------------- Kafka


@dataclass
class TopicEdges:
    """Records, end offsets and the Kafka timestamps of the first and last record of a set of topics."""

    count: int = 0
    ends: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> end offset
    first_ts: int | None = None  # ms
    last_ts: int | None = None  # ms


async def _topic_partitions(bootstrap: KafkaTarget, topic: str) -> list[int]:
    from session_tally.snapshot import topic_partitions

    return await topic_partitions(bootstrap, topic, 30.0)


async def topic_edges(bootstrap: KafkaTarget, topics: Sequence[str], timeout_s: float = 60.0) -> TopicEdges:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in await _topic_partitions(bootstrap, t)]
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    edges = TopicEdges()
    try:
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        edges.ends = {f"{tp.topic}:{tp.partition}": end[tp] for tp in tps}
        edges.count = sum(end[tp] - begin[tp] for tp in tps)
        filled = [tp for tp in tps if end[tp] > begin[tp]]
        if not filled:
            return edges
        consumer.assign(filled)
        deadline = time.monotonic() + timeout_s
        for where in ("first", "last"):
            for tp in filled:
                consumer.seek(tp, begin[tp] if where == "first" else end[tp] - 1)
            consumer.resume(*filled)
            wanted = set(filled)
            while wanted:
                if time.monotonic() > deadline:
                    raise BenchError(f"reading the {where} records of {', '.join(topics)} took over {timeout_s} s")
                batch = await consumer.getmany(*wanted, timeout_ms=500)
                for tp, records in batch.items():
                    if tp not in wanted or not records:
                        continue
                    ts = records[0].timestamp if where == "first" else records[-1].timestamp
                    if where == "first":
                        edges.first_ts = ts if edges.first_ts is None else min(edges.first_ts, ts)
                    else:
                        edges.last_ts = ts if edges.last_ts is None else max(edges.last_ts, ts)
                    wanted.discard(tp)
                    consumer.pause(tp)
        return edges
    finally:
        await consumer.stop()


async def consume_all(bootstrap: KafkaTarget, topics: Sequence[str], progress: Progress) -> tuple[int, int, float]:
    """Read every record of ``topics`` from the beginning with a plain consumer that does nothing else;
    returns (records, bytes, seconds), timed from the first fetch to the last record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in await _topic_partitions(bootstrap, t)]
    consumer = AIOKafkaConsumer(
        **kafka_options(bootstrap),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=2 * 1024 * 1024,  # as the worker's subscriber
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        total = sum(end.values())
        count = size = 0
        started = time.perf_counter()
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                count += len(records)
                for r in records:
                    size += len(r.value or b"")
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
            if not batch and time.perf_counter() - started > 120:
                raise BenchError("the plain consumer got nothing for 120 s")
            progress.show(f"  consume: {count:,}/{total:,} records")
        elapsed = time.perf_counter() - started
        progress.done()
        return count, size, elapsed
    finally:
        await consumer.stop()


async def read_records(bootstrap: KafkaTarget, topic: str) -> list[tuple[bytes | None, int, bytes]]:
    """Every record of ``topic`` up to its end offsets now: (key, timestamp ms, value)."""
    from session_tally.snapshot import read_records as read_all

    try:
        records = await read_all(bootstrap, topic, 120.0)
    except TimeoutError as exc:
        raise BenchError(str(exc)) from exc
    return [(r.key, r.timestamp, r.value or b"") for r in records]


def _family(group_ids: Sequence[str], group: str) -> list[str]:
    """``group`` and the groups a worker derives from it (e.g. ``<group>.admin``)."""
    return sorted(g for g in group_ids if g == group or g.startswith(group + "."))


async def wait_group_settled(
    bootstrap: KafkaTarget, group: str, topics: Sequence[str], timeout_s: float = 90.0
) -> None:
    """Wait until the workers' consumer groups (``group`` and the ones derived from it) are Stable, every
    partition of ``topics`` is assigned and the members have not changed for a second."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    wanted = {(t, p) for t in topics for p in await _topic_partitions(bootstrap, t)}
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        seen: Any = None
        since = time.monotonic()
        state: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                groups = _family([g[0] for g in await admin.list_consumer_groups()], group)
                described = [(await admin.describe_consumer_groups([g]))[0].groups[0] for g in groups]
                assigned = {
                    (topic, partition)
                    for d in described
                    for member in d[5]
                    for topic, partitions in ConsumerProtocolMemberAssignment.decode(member[4]).assignment
                    for partition in partitions
                }
                current = tuple((d[1], d[2], tuple(sorted(m[0] for m in d[5]))) for d in described)
                state = [(d[1], d[2], len(d[5])) for d in described] + [f"{len(assigned & wanted)}/{len(wanted)}"]
                stable = bool(described) and all(d[2] == "Stable" for d in described) and wanted <= assigned
                if current != seen:
                    seen, since = current, time.monotonic()
                elif stable and time.monotonic() - since >= 1.0:
                    return
            await asyncio.sleep(0.2)
        raise BenchError(f"consumer groups of {group} not settled after {timeout_s} s: {state}")
    finally:
        await admin.close()


async def wait_leaders(bootstrap: KafkaTarget, topics: Sequence[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of just-created ``topics`` has a leader (else the first sends are retried
    with NotLeaderForPartition, which would be timed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics(list(topics))
            if all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"topics without a leader after {timeout_s} s: {', '.join(topics)}")
            await asyncio.sleep(0.1)
        partitions = [(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    finally:
        await admin.close()
    # a leader in the metadata may not serve yet: ListOffsets answers only once it does
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.end_offsets([TopicPartition(t, p) for t, p in partitions]), timeout_s)
    finally:
        await consumer.stop()


async def delete_kafka(bootstrap: KafkaTarget, topics: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Delete the run's topics and consumer groups (with the groups derived from them, e.g.
    ``<group>.admin``); returns what could not be deleted."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import DeleteGroupsRequest

    problems: list[str] = []
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        if topics:
            existing = set(await admin.list_topics())
            present = [t for t in topics if t in existing]
            if present:
                try:
                    await admin.delete_topics(present)
                except Exception as exc:
                    problems.append(f"topics: {exc}")
        with contextlib.suppress(Exception):
            known = [g[0] for g in await admin.list_consumer_groups()]
            groups = sorted({*groups, *(g for group in groups for g in _family(known, group))})
        for group in groups:
            try:  # aiokafka has no public call for it: DeleteGroups to the group's coordinator
                node = await admin.find_coordinator(group)
                response = await admin._send_request(DeleteGroupsRequest([group]), node)
                for _group, code in response.results:
                    if code not in (0, 69):  # 69: GROUP_ID_NOT_FOUND (never committed)
                        problems.append(f"group {group}: error {code}")
            except Exception as exc:
                problems.append(f"group {group}: {exc}")
    finally:
        await admin.close()
    return problems
