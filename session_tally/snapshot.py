"""Build the `replay`-shaped document from what the pipeline published (pure; no I/O).

- tallies: the highest ``version`` per path (a re-publication after a crash repeats a version with the
  same content), sorted by path_id, without the message's ``schema_version`` (replay has none);
- meetings: the highest ``version`` per meeting, with replay's fields, sorted by meeting_id;
- rejected: ``{"line", "event_id", "reason"}``; ``line`` comes from the ``session-tally-line`` header
  that `session-tally publish` sets (null otherwise); sorted like replay: rejections of events that
  waited for an unknown program/meeting after all the others, each group by line (then by source).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from producers.kafka_access import KafkaTarget, kafka_options
from producers.publisher import LINE_HEADER

MEETING_FIELDS = ("meeting_id", "path_id", "status", "start", "end", "minutes", "disputed")
_WAITING_REASONS = ("unknown_program", "unknown_meeting")


def line_of(headers: Iterable[Iterable[Any]] | None) -> int | None:
    for key, value in headers or ():
        if key == LINE_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


def build_document(
    tallies: Iterable[dict[str, Any]], statuses: Iterable[dict[str, Any]], rejected: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    latest_tally: dict[str, dict[str, Any]] = {}
    for doc in tallies:
        current = latest_tally.get(doc["path_id"])
        if current is None or doc["version"] >= current["version"]:
            latest_tally[doc["path_id"]] = doc
    latest_status: dict[str, dict[str, Any]] = {}
    for doc in statuses:
        current = latest_status.get(doc["meeting_id"])
        if current is None or doc["version"] >= current["version"]:
            latest_status[doc["meeting_id"]] = doc
    seen: set[tuple[str, int, int]] = set()
    entries = []
    for doc in rejected:
        src = doc.get("source") or {}
        where = (src.get("topic", ""), src.get("partition", -1), src.get("offset", -1))
        if where in seen:  # the same input rejected twice can only be a re-publication
            continue
        seen.add(where)
        line = line_of(doc.get("headers"))
        waiting = doc["reason"] in _WAITING_REASONS
        order = (waiting, line is None, line or 0, where)
        entries.append((order, {"line": line, "event_id": doc.get("event_id"), "reason": doc["reason"]}))
    entries.sort(key=lambda e: e[0])
    return {
        "tallies": [{f: v for f, v in latest_tally[k].items() if f != "schema_version"} for k in sorted(latest_tally)],
        "meetings": [{f: latest_status[k][f] for f in MEETING_FIELDS} for k in sorted(latest_status)],
        "rejected": [e[1] for e in entries],
    }


async def read_records(bootstrap: KafkaTarget, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record (aiokafka ``ConsumerRecord``) of ``topic`` from the beginning up to its end offsets
    at call time, partition by partition."""
    import time

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from consumers.tolerant_records import install

    install()  # records whose header keys are not UTF-8 are read too
    partitions = await topic_partitions(bootstrap, topic, timeout_s)
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                out.extend(r for r in records if r.offset < end[tp])
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def read_topic(
    bootstrap: KafkaTarget, topic: str, timeout_s: float = 60.0
) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """Every message of ``topic`` up to its end offsets now: (value, headers)."""
    return [(r.value, list(r.headers or ())) for r in await read_records(bootstrap, topic, timeout_s)]


async def topic_partitions(bootstrap: KafkaTarget, topic: str, timeout_s: float = 60.0) -> list[int]:
    """The partition numbers of ``topic`` (waits up to ``timeout_s`` for it to exist)."""
    import asyncio
    import time

    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics([topic])
            info = described[0] if described else {}
            if info.get("error_code", 0) == 0 and info.get("partitions"):
                return sorted(p["partition"] for p in info["partitions"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} not found")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def read_snapshot(bootstrap: KafkaTarget, topics: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    """The replay-shaped document from the three output topics (``topics`` is a config.Topics)."""
    import json

    tallies = [json.loads(v) for v, _h in await read_topic(bootstrap, topics.path_tallies, timeout_s)]
    statuses = [json.loads(v) for v, _h in await read_topic(bootstrap, topics.meeting_statuses, timeout_s)]
    rejected = [json.loads(v) for v, _h in await read_topic(bootstrap, topics.rejected, timeout_s)]
    return build_document(tallies, statuses, rejected)
