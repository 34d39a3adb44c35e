"""Kafka's end offsets of whole topics, read by a consumer that belongs to no group.

The end offset of a partition is the offset the next record appended to it will get (the high
watermark: with ``acks=all`` every acknowledged record is below it). Reading it changes nothing in
Kafka and needs no assignment, so any worker can ask for the partitions another worker consumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("session_tally.offsets")

PARTITIONS_TTL_S = 30.0  # how long a topic's partition list is trusted (partitions can be added)
REQUEST_TIMEOUT_S = 10.0  # aiokafka's end_offsets can block for ever on a partition that does not exist


class EndOffsets:
    """``await ends(topic)`` -> ``{partition: end offset}`` of every partition of the topic."""

    def __init__(self, client_options: dict[str, Any]) -> None:
        """``client_options``: aiokafka's connection arguments (``bootstrap_servers``, TLS, SASL)."""
        self.client_options = dict(client_options)
        self._consumer: Any = None
        self._partitions: dict[str, tuple[float, list[Any]]] = {}  # topic -> (read at, TopicPartitions)
        self._probe: Any = None  # a second consumer, for has_records()
        self._probe_lock = asyncio.Lock()

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(enable_auto_commit=False, **self.client_options)
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        for name in ("_consumer", "_probe"):
            consumer = getattr(self, name, None)
            if consumer is not None:
                setattr(self, name, None)
                await consumer.stop()

    async def _topic_partitions(self, topic: str) -> list[Any]:
        from aiokafka import TopicPartition

        cached = self._partitions.get(topic)
        now = time.monotonic()
        if cached is not None and now - cached[0] < PARTITIONS_TTL_S:
            return cached[1]
        await self._consumer._client.force_metadata_update()
        numbers = self._consumer.partitions_for_topic(topic)
        if not numbers:
            raise LookupError(f"topic {topic} has no partitions (does it exist?)")
        tps = [TopicPartition(topic, p) for p in sorted(numbers)]
        self._partitions[topic] = (now, tps)
        return tps

    async def ends(self, topic: str) -> dict[int, int]:
        if self._consumer is None:
            raise RuntimeError("EndOffsets.start() was not awaited")
        tps = await self._topic_partitions(topic)
        offsets = await asyncio.wait_for(self._consumer.end_offsets(tps), REQUEST_TIMEOUT_S)
        return {tp.partition: int(offset) for tp, offset in offsets.items()}

    async def has_records(self, topic: str, partition: int, start: int, end: int) -> bool | None:
        """Does the partition hold a record with an offset in ``[start, end)``? None: could not tell.

        Offsets without a record exist: transaction markers of transactional producers, records removed
        by compaction or retention. A consumer never receives them, so what it applied can stay below
        the end offset for ever; this tells such a gap from records still to be applied."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async with self._probe_lock:
            if self._probe is None:
                from consumers.tolerant_records import install

                install()
                self._probe = AIOKafkaConsumer(
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    **self.client_options,
                )
                await self._probe.start()
            tp = TopicPartition(topic, partition)
            self._probe.assign([tp])
            self._probe.seek(tp, start)
            deadline = time.monotonic() + REQUEST_TIMEOUT_S
            while time.monotonic() < deadline:
                got = await self._probe.getmany(tp, timeout_ms=200, max_records=1)
                records = got.get(tp, [])
                if records:
                    return bool(records[0].offset < end)
                if await self._probe.position(tp) >= end:
                    return False
            return None  # could not tell within the time: the caller keeps waiting and asks again later

    async def ends_of(self, topics: tuple[str, ...]) -> Offsets:
        out: dict[tuple[str, int], int] = {}
        for topic in topics:
            out.update({(topic, p): o for p, o in (await self.ends(topic)).items()})
        return out


Offsets = dict[tuple[str, int], int]


class Progress:
    """How far PostgreSQL has applied some input topics, as offsets comparable with Kafka's end offsets.

    ``applied(topics)`` reads ``consumer_offsets`` (the next offset to apply per partition). Offsets
    that hold no record (transaction markers, compacted or deleted records) are never applied by
    anyone: :meth:`probe_gaps` looks into partitions that have not moved for ``probe_after_s`` and
    counts a gap without records as applied."""

    def __init__(
        self,
        offsets: EndOffsets,
        applied: Callable[[tuple[str, ...]], Awaitable[Offsets]],
        topics: tuple[str, ...],
        probe_after_s: float = 1.0,
    ) -> None:
        self.offsets = offsets
        self.applied = applied
        self.topics = topics
        self.probe_after_s = probe_after_s
        self._known: Offsets = {}  # applied offsets last read (they only grow)
        self._moved_at: dict[tuple[str, int], float] = {}
        self._empty: dict[tuple[str, int], tuple[int, int]] = {}  # partition -> [start, end) without records
        self._record_at: dict[tuple[str, int], int] = {}  # partition -> an applied offset known to hold a record

    def effective(self) -> Offsets:
        out = dict(self._known)
        for key, (start, end) in self._empty.items():
            if out.get(key, 0) >= start:
                out[key] = max(out.get(key, 0), end)
        return out

    async def ends(self) -> Offsets:
        return await self.offsets.ends_of(self.topics)

    async def refresh(self) -> Offsets:
        now = time.monotonic()
        for key, offset in (await self.applied(self.topics)).items():
            if offset != self._known.get(key):
                self._known[key] = offset
                self._moved_at[key] = now
        return self.effective()

    async def probe_gaps(self, wanted: Offsets) -> None:
        now = time.monotonic()
        current = self.effective()
        for key, end in wanted.items():
            start = current.get(key, 0)
            if start >= end or now - self._moved_at.get(key, 0.0) < self.probe_after_s:
                continue  # applied, or still moving
            if self._record_at.get(key) == start:
                continue  # a record is known to wait there: probing again would say the same
            found = await self.offsets.has_records(key[0], key[1], start, end)
            if found:
                self._record_at[key] = start
            elif found is not None:
                log.info("partition %s:%d has no records in [%d, %d): counted as applied", *key, start, end)
                self._empty[key] = (start, end)


def covered(ends: Offsets, applied: Offsets) -> bool:
    """Has every partition been applied up to its end offset? (A partition never applied counts 0.)"""
    return all(applied.get(key, 0) >= end for key, end in ends.items())


def behind(ends: Offsets, applied: Offsets) -> int:
    """How many records lie between what was applied and the end offsets."""
    return sum(max(0, end - applied.get(key, 0)) for key, end in ends.items())
