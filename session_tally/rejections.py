"""The rejected topic as operators read it (`session-tally rejected list|redrive`): its messages
(docs/topics.md, docs/contract/schemas/outputs/rejected.json), filters over them, and a reader.

Invariants:
- the topic is read without a consumer group, from the beginning to its end offsets at the start of the
  read, so reading changes nothing anywhere;
- one input rejected twice (its rejection re-published by a relay after a crash) is one rejection: the
  first message per source record (topic, partition, offset) is kept;
- a message is parsed unless its bytes prove it cannot match (:meth:`Filter.quick_test`);
- a message that is not a rejection (not JSON, no ``reason`` or ``source``) is counted, never fatal;
- the original key, value and headers come back byte for byte from their text or base64 forms; a form
  that was cut (``*_truncated``) or removed (``original_removed``) is not the original and says so.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from domain.timefmt import parse_instant
from producers.kafka_access import KafkaTarget, kafka_options


@dataclass(frozen=True, slots=True)
class Rejection:
    """One message of the rejected topic (``doc``), with where it is on that topic."""

    partition: int
    offset: int
    doc: dict[str, Any]
    raw: bytes = b""  # the message's bytes as on the topic

    @property
    def reason(self) -> str:
        return str(self.doc.get("reason"))

    @property
    def event_id(self) -> str | None:
        value = self.doc.get("event_id")
        return value if isinstance(value, str) else None

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.doc.get("source") or {})

    @property
    def source_key(self) -> tuple[str, int, int]:
        src = self.source
        return (str(src.get("topic")), int(src.get("partition", -1)), int(src.get("offset", -1)))

    @property
    def where(self) -> str:
        topic, partition, offset = self.source_key
        return f"{topic}:{partition}@{offset}"

    @property
    def rejected_at_us(self) -> int | None:
        try:
            return parse_instant(str(self.doc.get("rejected_at")))
        except ValueError:
            return None

    def original(self) -> bytes | None:
        """The value as received (possibly cut: see :meth:`original_problem`); None for a tombstone."""
        return _bytes(self.doc.get("original"), self.doc.get("original_base64"))

    def key(self) -> bytes | None:
        return _bytes(self.doc.get("key"), self.doc.get("key_base64"))

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        """The original headers byte for byte, or None when they were cut (not exactly known)."""
        if self.doc.get("headers_truncated"):
            return None
        exact = self.doc.get("headers_base64")
        if exact is not None:
            return [
                (base64.b64decode(k).decode("utf-8", "surrogateescape"), None if v is None else base64.b64decode(v))
                for k, v in exact
            ]
        return [(str(k), None if v is None else str(v).encode("utf-8")) for k, v in self.doc.get("headers") or ()]

    def original_problem(self) -> str | None:
        """Why :meth:`original` is not the message as it was sent (None: it is)."""
        if self.doc.get("original_removed"):
            return f"the original was removed ({self.doc['original_removed']})"
        if self.doc.get("original_truncated"):
            return f"the original was cut to 64 KiB (it had {self.doc.get('original_bytes')} bytes)"
        if self.original() is None:
            return "the input had no value (a tombstone)"
        if self.doc.get("key_truncated"):
            return "its key was cut to 64 KiB"
        return None


def _bytes(text: Any, b64: Any) -> bytes | None:
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    if isinstance(b64, str):
        return base64.b64decode(b64)
    return None


@dataclass(frozen=True)
class Filter:
    """Which rejections to take: every condition given must hold (an empty set: any)."""

    reasons: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()  # the input topic the rejected record came from
    event_ids: frozenset[str] = frozenset()
    since_us: int | None = None  # rejected_at >= since
    until_us: int | None = None  # rejected_at < until

    def matches(self, r: Rejection) -> bool:
        if self.reasons and r.reason not in self.reasons:
            return False
        if self.topics and r.source_key[0] not in self.topics:
            return False
        if self.event_ids and r.event_id not in self.event_ids:
            return False
        if self.since_us is not None or self.until_us is not None:
            at = r.rejected_at_us
            if at is None:
                return False
            if self.since_us is not None and at < self.since_us:
                return False
            if self.until_us is not None and at >= self.until_us:
                return False
        return True

    def quick_test(self) -> Callable[[bytes | None], bool]:
        """A test on a message's bytes that is False only when they prove it does not match, so that most
        messages need not be parsed. It relies on the compact JSON session-tally writes (``"reason":"..."``
        at the top level; the original inside is an escaped string, which never holds ``":"``): a
        message without that form is always parsed."""
        marks = [
            (b'"reason":"', [b'"reason":"' + r.encode() + b'"' for r in self.reasons]),
            (b'"event_id":"', [b'"event_id":' + json.dumps(e, ensure_ascii=False).encode() for e in self.event_ids]),
        ]
        marks = [(form, wanted) for form, wanted in marks if wanted]

        def may_match(value: bytes | None) -> bool:
            if value is None:
                return True
            return all(form not in value or any(w in value for w in wanted) for form, wanted in marks)

        return may_match

    def describe(self) -> dict[str, Any]:
        """The filter as JSON (for the audit row of a redrive)."""
        return {
            "reasons": sorted(self.reasons),
            "topics": sorted(self.topics),
            "event_ids": sorted(self.event_ids),
            "since_us": self.since_us,
            "until_us": self.until_us,
        }


@dataclass
class ReadStats:
    read: int = 0  # messages read
    total: int = 0  # messages on the topic when the read started
    unreadable: int = 0  # messages that are not rejections (among those parsed)
    repeated: int = 0  # re-publications of a matching rejection already read
    matched: int = 0
    unreadable_at: list[str] = field(default_factory=list)  # partition@offset of the first few


async def scan(
    kafka: KafkaTarget,
    topic: str,
    wanted: Filter,
    stats: ReadStats,
    progress: Callable[[ReadStats], None] | None = None,
    timeout_s: float = 300.0,
) -> AsyncIterator[Rejection]:
    """The rejections of ``topic`` that ``wanted`` takes, up to the end offsets at the start (every
    partition fetched at once: in offset order per partition, partitions interleaved; callers sort);
    ``progress(stats)`` about once a second."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from consumers.tolerant_records import install
    from session_tally.snapshot import topic_partitions

    install()  # records whose header keys are not UTF-8 are read too
    partitions = await topic_partitions(kafka, topic, 30.0)
    consumer = AIOKafkaConsumer(
        **kafka_options(kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    seen: set[tuple[str, int, int]] = set()  # among matches: a repeat matches when its first did
    may_match = wanted.quick_test()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        start = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        stats.total = sum(end[tp] - start[tp] for tp in tps)
        remaining = {tp for tp in tps if end[tp] > start[tp]}
        for tp in remaining:
            consumer.seek(tp, start[tp])
        last = time.monotonic()
        deadline = last + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s:.0f}s")
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    stats.read += 1
                    if not may_match(record.value):
                        continue
                    rejection = _parse(record)
                    if rejection is None:
                        stats.unreadable += 1
                        if len(stats.unreadable_at) < 5:
                            stats.unreadable_at.append(f"{record.partition}@{record.offset}")
                        continue
                    if rejection.source_key in seen:
                        stats.repeated += 1
                        continue
                    seen.add(rejection.source_key)
                    if wanted.matches(rejection):
                        stats.matched += 1
                        yield rejection
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if progress is not None and time.monotonic() - last >= 1.0:
                last = time.monotonic()
                progress(stats)
    finally:
        await consumer.stop()


def _parse(record: Any) -> Rejection | None:
    try:
        doc = json.loads(record.value)
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("reason"), str) or not isinstance(doc.get("source"), dict):
        return None
    return Rejection(record.partition, record.offset, doc, record.value)
