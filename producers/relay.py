"""The outbox relay: publishes what the transactions wrote to ``outbox``, then deletes it.

Invariants:
- a row is deleted only after Kafka acknowledged it (idempotent producer, acks=all), so a crash
  re-publishes at most the rows in flight, with the same content and version (consumers keep the
  highest version: a repeat is harmless);
- rows of one lane (hash of the key) are published by one relay at a time (a PostgreSQL advisory
  lock per lane, held while publishing) and in ``id`` order, so every message of a path goes out in
  the order its transactions committed, whatever number of workers run relays;
- the relay never opens a transaction of the consumers: it only reads and deletes outbox rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Integer, any_, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from producers.kafka_access import KafkaTarget, kafka_options
from producers.kafka_client import throttle_metadata_updates
from storage import tables as T
from storage.messages import LANES, decode_headers

log = logging.getLogger("session_tally.relay")

LANE_LOCK_BASE = 7_270_100  # pg advisory lock keys LANE_LOCK_BASE + lane
ROWS_PER_ROUND = 10000


class Relay:
    """Publishes the outbox. ``topics`` maps logical topics (tallies/statuses/rejected) to Kafka topics."""

    def __init__(
        self, engine: AsyncEngine, bootstrap: KafkaTarget, topics: Mapping[str, str], metrics: Any = None
    ) -> None:
        self.engine = engine
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.metrics = metrics
        self.producer: Any = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.published = 0

    @classmethod
    def for_settings(cls, engine: AsyncEngine, settings: Any, metrics: Any = None) -> Relay:
        """A relay to the output topics of ``settings`` (a ``session_tally.config.Settings``)."""
        t = settings.topics
        names = {"tallies": t.path_tallies, "statuses": t.meeting_statuses, "rejected": t.rejected}
        return cls(engine, settings.kafka, names, metrics)

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(
            **kafka_options(self.bootstrap),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            request_timeout_ms=30000,
        )
        throttle_metadata_updates(self.producer.client)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self, idle_poll_s: float = 0.2) -> None:
        """Publish until :meth:`request_stop`; wakes on :meth:`wake` or every ``idle_poll_s``."""
        while not self._stopping:
            try:
                moved = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay round failed; retrying")
                if self.metrics is not None:
                    self.metrics.inc("session_tally_relay_failures_total")
                moved = 0
                await asyncio.sleep(1.0)
            if moved:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), idle_poll_s)
            except TimeoutError:
                pass

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def publish_once(self) -> int:
        """One round: lock every lane that has rows and no other relay, publish up to ROWS_PER_ROUND of
        their rows in id order (one Kafka round trip for all), delete them; returns how many."""
        o = T.outbox
        async with self.engine.begin() as conn:
            lanes = [r[0] for r in await conn.execute(select(o.c.lane).distinct())]
            if not lanes:
                return 0
            got = [
                r[0]
                for r in await conn.execute(
                    text(
                        "SELECT lane FROM unnest(CAST(:lanes AS int[])) AS lane "
                        "WHERE pg_try_advisory_xact_lock(:base + lane) ORDER BY lane"
                    ),
                    {"lanes": sorted(lanes), "base": LANE_LOCK_BASE},
                )
            ]
            if not got:
                return 0  # other relays are publishing these lanes
            rows = (
                await conn.execute(
                    select(o.c.id, o.c.topic, o.c.key, o.c.value, o.c.headers)
                    .where(o.c.lane == any_(bindparam("lanes", got, type_=ARRAY(Integer))))
                    .order_by(o.c.id)
                    .limit(ROWS_PER_ROUND)
                )
            ).all()
            if not rows:
                return 0
            send = self.producer.send
            futures = []
            for r in rows:
                headers = decode_headers(r.headers) if r.headers else None
                futures.append(await send(self.topics[r.topic], r.value, key=r.key, headers=headers))
            await asyncio.gather(*futures)
            await conn.execute(
                delete(o).where(o.c.id == any_(bindparam("ids", [r.id for r in rows], type_=ARRAY(BigInteger))))
            )
        self.published += len(rows)
        if self.metrics is not None:
            self.metrics.inc("session_tally_published_messages_total", len(rows))
        return len(rows)


assert LANES <= 64
