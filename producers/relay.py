"""The outbox relay: publishes what the transactions wrote to ``outbox``, then deletes it.

Invariants:
- a row is deleted only after Kafka acknowledged it (idempotent producer, acks=all), so a crash
  re-publishes at most the rows in flight, with the same content and version (consumers keep the
  highest version: a repeat is harmless);
- rows of one lane (hash of the key) are published by one relay at a time (a PostgreSQL advisory
  lock per lane, held while publishing) and in ``id`` order, so every message of a path goes out in
  the order its transactions committed, whatever number of workers run relays;
- the relay never opens a transaction of the consumers: it only reads and deletes outbox rows;
- a batch the broker refused for good (too large for the topic, say) leaves aiokafka's idempotent
  producer with sequence numbers the broker no longer expects for that partition: every later batch there
  would fail ``OutOfOrderSequenceNumber``. After such a refusal the producer is replaced (a new producer
  id starts its sequences afresh) and out-of-order rows are sent again, never dead-lettered.

- a relay that was frozen (SIGSTOP, a paused VM) after it read its rows may have lost its lane locks
  (PostgreSQL ends a session idle in a transaction after ``IDLE_IN_TRANSACTION_S``) while another relay
  published the same rows and newer ones: it hands nothing to Kafka more than :data:`FRESH_S` after its
  last statement (the round is abandoned, its rows stay), so that a stale row never lands after a newer
  version of its entity (compaction keeps the last record of a key); rows of a batch that failed for a
  transient reason are left for the next round, never re-sent in this one.
- a round that fails once it handed records to the producer (frozen after handing them: its session
  ended, its lanes went to another relay, which published the same rows and newer versions before the
  frozen producer's records reached Kafka; or the database went away before the delete) waits until every
  record it handed is acknowledged or failed (at most :data:`SETTLE_S`), then publishes one more version
  of every tally and status it handed (:func:`storage.republish.supersede`, through the outbox; retried
  every :data:`SUPERSEDE_RETRY_S` until it commits, later rounds going on meanwhile): whatever order the
  late records landed in, the last record of each of those keys is a version higher than all of them.

Metrics: messages published per output topic, the duration of each round that published something, and
per message the commit -> publish latency (the row's age when read, by PostgreSQL's clock, plus the time
from the read to Kafka's acknowledgement, by this process's monotonic clock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from producers.kafka_access import KafkaTarget, kafka_options
from producers.kafka_client import throttle_metadata_updates
from producers.routing import murmur2_hash
from storage import outbox
from storage.db import IDLE_IN_TRANSACTION_S
from storage.messages import LANES, REJECTED, load_headers, removed_headers, removed_key, without_original
from storage.republish import supersede, superseded_entities

log = logging.getLogger("session_tally.relay")

ROWS_PER_ROUND = 10000
#: the longest time after its last statement that a relay still hands rows to Kafka (half the time after
#: which PostgreSQL would end its session and release its lane locks)
FRESH_S = IDLE_IN_TRANSACTION_S / 2
#: the longest wait, after a failed round, for the records it handed to be acknowledged or failed
#: (twice the producer's request timeout)
SETTLE_S = 60.0
SUPERSEDE_RETRY_S = 2.0


class LanesMaybeLost(Exception):
    """The relay was held up (frozen) after reading its rows: its lane locks may belong to another relay."""


class Relay:
    """Publishes the outbox. ``topics`` maps logical topics (tallies/statuses/rejected) to Kafka topics."""

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap: KafkaTarget,
        topics: Mapping[str, str],
        metrics: Any = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock or (lambda: time.time_ns() // 1000)  # µs since the epoch, as the unit of work's
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.metrics = metrics
        self.producer: Any = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.published = 0
        self._refused = False  # the broker refused a batch: replace the producer before the next round
        self._partitions: dict[str, tuple[int, float]] = {}  # topic -> (partition count, read at)
        self._hashes: dict[bytes, int] = {}  # key -> murmur2 hash (pure Python: worth remembering)
        self.last_published_at = time.monotonic()
        # (rows, delivery future or None) handed to the producer in the current round, until it commits
        self._handed: list[tuple[list[Any], Any]] = []
        self._to_supersede: tuple[set[str], set[str]] = (set(), set())  # (paths, meetings) not yet done
        self._supersede_after = 0.0  # monotonic: no new attempt before

    @classmethod
    def for_settings(
        cls, engine: AsyncEngine, settings: Any, metrics: Any = None, clock: Callable[[], int] | None = None
    ) -> Relay:
        """A relay to the output topics of ``settings`` (a ``session_tally.config.Settings``)."""
        t = settings.topics
        names = {"tallies": t.path_tallies, "statuses": t.meeting_statuses, "rejected": t.rejected}
        return cls(engine, settings.kafka, names, metrics, clock)

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
        """One round: claim every lane that has rows and no other relay, publish up to ROWS_PER_ROUND of
        their rows in id order (one Kafka round trip for all), delete what Kafka acknowledged; returns
        how many rows left the outbox (or were replaced)."""
        started = time.monotonic()
        if self._refused:
            await self._replace_producer()
        await self._supersede()  # left by an earlier round that failed
        self._handed = []
        try:
            return await self._round(started)
        except LanesMaybeLost as exc:
            log.warning("relay round abandoned, nothing deleted: %s", exc)
            return 0
        except Exception as exc:
            if not isinstance(exc.__context__, LanesMaybeLost):
                raise
            # abandoned as above, and its session had been ended meanwhile (the rollback failed)
            log.warning("relay round abandoned, nothing deleted: %s (%s)", exc.__context__, type(exc).__name__)
            return 0
        finally:
            if self._handed:  # the round failed after handing records: see the module's invariants
                await self._settle_handed()
                await self._supersede()

    async def _settle_handed(self) -> None:
        """Wait (at most SETTLE_S) until every record of the failed round is acknowledged or failed, and
        note the entities they are about for :meth:`_supersede`."""
        handed, self._handed = self._handed, []
        futures = [f for _rows, f in handed if f is not None]
        pending: set[Any] = set()
        if futures:
            done, pending = await asyncio.wait(futures, timeout=SETTLE_S)
            for f in done:
                if not f.cancelled():
                    f.exception()  # retrieved: the outcome does not matter here
        rows = [r for batch, _f in handed for r in batch]
        paths, meetings = superseded_entities((r.topic, r.key, r.value) for r in rows)
        self._to_supersede[0].update(paths)
        self._to_supersede[1].update(meetings)
        if not paths and not meetings:
            return  # rejections only: they carry no version, a late one is a repeat
        log.warning(
            "relay round failed after handing %d record(s) to Kafka%s: publishing a new version of %d "
            "tally(ies) and %d status(es) they are about, so that no late record stays the last of its key",
            len(rows),
            f" ({len(pending)} batch(es) still unanswered after {SETTLE_S:.0f} s)" if pending else "",
            len(paths),
            len(meetings),
        )

    async def _supersede(self) -> None:
        """Publish the new versions noted by :meth:`_settle_handed`; on failure (the database away) they
        stay noted and are tried again at most every SUPERSEDE_RETRY_S, while rounds go on (the late
        records are all in Kafka by now: the new versions only have to follow them)."""
        paths, meetings = self._to_supersede
        if (not paths and not meetings) or time.monotonic() < self._supersede_after:
            return
        try:
            written = await supersede(self.engine, paths, meetings, self.clock())
        except Exception:
            self._supersede_after = time.monotonic() + SUPERSEDE_RETRY_S
            log.exception("publishing new versions after a failed relay round failed; retrying")
            if self.metrics is not None:
                self.metrics.inc("session_tally_relay_failures_total")
            return
        self._to_supersede = (set(), set())
        if self.metrics is not None:
            self.metrics.inc("session_tally_relay_superseded_total", written)
        self.wake()

    async def _round(self, started: float) -> int:
        async with self.engine.begin() as conn:
            lanes = await outbox.claim_lanes(conn)
            if not lanes:
                return 0  # nothing to publish, or other relays are publishing it
            rows = await outbox.read_rows(conn, lanes, ROWS_PER_ROUND)
            if not rows:
                return 0
            read_at = time.monotonic()
            done, dead, replaced = sort_outcomes(rows, await self._send_all(rows, read_at + FRESH_S))
            acked_s = time.monotonic() - read_at
            await outbox.delete_rows(conn, done + [r.id for r, _ in dead])
            for row, error in dead:
                log.error("outbox row %d (%s) cannot be published (%s): moved to outbox_dead", row.id, row.topic, error)
                await outbox.keep_dead(conn, row, error)
            for row, value in replaced:
                await outbox.replace_value(conn, row.id, value, removed_key(row.key), removed_headers(value))
        self._handed = []  # committed: the lanes were held from the read to the delete
        published = len(done)
        self.published += published
        if self.metrics is not None:
            self._count(rows, set(done), len(dead), acked_s, time.monotonic() - started)
        if published:
            self.last_published_at = time.monotonic()
        return published + len(dead) + len(replaced)

    def _count(self, rows: list[Any], done: set[int], dead: int, acked_s: float, round_s: float) -> None:
        m = self.metrics
        published = [r for r in rows if r.id in done]
        for topic, n in Counter(self.topics[r.topic] for r in published).items():
            m.inc("session_tally_published_messages_total", n, topic=topic)
        m.observe_many(
            "session_tally_commit_publish_latency_seconds",
            [float(r.age_s or 0.0) + acked_s for r in published if getattr(r, "age_s", None) is not None],
        )
        if dead:
            m.inc("session_tally_relay_dead_rows_total", dead)
        m.observe("session_tally_relay_round_seconds", round_s)

    async def drain(self, timeout_s: float) -> None:
        """Publish what is in the outbox until it is empty or ``timeout_s`` passed (at shutdown)."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and await self.publish_once():
                pass
        except Exception:
            log.exception("final outbox drain failed; the rows stay for the next relay")

    async def _send_all(self, rows: list[Any], fresh_until: float) -> list[BaseException | None]:
        """Send every row (one Kafka round trip for all); per row None (acknowledged) or its error.

        Rows go out in record batches built here, one per partition in the rows' order (the partition
        the producer's default partitioner would choose: murmur2 of the key), each with one future: far
        fewer futures and coroutine steps than a ``send()`` per row. A batch the broker refused (a message
        too large for the topic, say) is sent again row by row, so that each row gets its own answer
        (sort_outcomes decides per row); a batch that failed otherwise (the broker away) keeps its error
        for every row: they stay in the outbox. Nothing is handed to the producer after ``fresh_until``
        (monotonic): :class:`LanesMaybeLost`."""
        outcomes: list[BaseException | None] = [None] * len(rows)
        batches, unbatched = await self._batches(rows)
        futures = []
        for topic, partition, builder, members in batches:
            _still_fresh(fresh_until)
            handed: tuple[list[Any], Any] = ([rows[i] for i in members], None)
            self._handed.append(handed)
            builder.close()  # complete: sent at the sender's next turn, not after linger_ms
            future = await self.producer.send_batch(builder, topic, partition=partition)
            self._handed[-1] = (handed[0], future)
            futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        again = list(unbatched)
        for (_t, _p, _b, members), result in zip(batches, results, strict=True):
            if isinstance(result, BaseException):
                if _refused_by_broker(result):
                    again.extend(members)
                else:
                    for i in members:
                        outcomes[i] = result
        if again:
            if any(_refused_by_broker(r) for r in results):
                await self._replace_producer()
            again.sort()
            _still_fresh(fresh_until)
            for i, error in zip(again, await self._send_each([rows[i] for i in again]), strict=True):
                outcomes[i] = error
        return outcomes

    async def _batches(self, rows: list[Any]) -> tuple[list[tuple[str, int, Any, list[int]]], list[int]]:
        """(topic, partition, BatchBuilder, row indexes) in the order the batches must be sent, and the
        rows no batch takes (larger than a batch on their own: sent one by one)."""
        open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        out: list[tuple[str, int, Any, list[int]]] = []
        alone: list[int] = []
        counts: dict[str, int] = {}  # read once per topic per round, not once per row
        for i, r in enumerate(rows):
            topic = self.topics[r.topic]
            count = counts.get(topic)
            if count is None:
                count = counts[topic] = await self._partition_count(topic)
            partition = self._partition_of(r.key, count) if r.key is not None else r.lane % count
            where = (topic, partition)
            current = open_batches.get(where)
            headers = load_headers(r.headers)
            if current is not None and current[0].append(key=r.key, value=r.value, timestamp=None, headers=headers):
                current[1].append(i)
                continue
            builder = self.producer.create_batch()
            if builder.append(key=r.key, value=r.value, timestamp=None, headers=headers) is None:
                alone.append(i)
                continue
            open_batches[where] = (builder, [i])
            out.append((topic, partition, builder, open_batches[where][1]))
        return out, alone

    def _partition_of(self, key: bytes, count: int) -> int:
        """``murmur2_partition(key, count)``, the hash remembered per key (paths and meetings recur; the
        memory is emptied at 20,000 keys: a few MB at most)."""
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= 20_000:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2_hash(key)
        return hashed % count

    async def _partition_count(self, topic: str) -> int:
        """The topic's partition count (read again every minute: partitions can be added)."""
        now = time.monotonic()
        cached = self._partitions.get(topic)
        if cached is None or now - cached[1] > 60.0:
            cached = self._partitions[topic] = (len(await self.producer.partitions_for(topic)), now)
        return cached[0]

    async def _send_each(self, rows: list[Any]) -> list[BaseException | None]:
        """Send rows one by one (a future each); per row None or its error."""
        send = self.producer.send
        futures: list[Any] = []
        for r in rows:
            self._handed.append(([r], None))
            try:
                future = await send(self.topics[r.topic], r.value, key=r.key, headers=load_headers(r.headers) or None)
            except Exception as exc:  # refused before sending (too large for the producer, say)
                futures.append(exc)
                continue
            self._handed[-1] = ([r], future)
            futures.append(future)
        pending = [f for f in futures if not isinstance(f, BaseException)]
        results = list(await asyncio.gather(*pending, return_exceptions=True))
        if any(_refused_by_broker(r) for r in results):
            self._refused = True
        answers = iter(results)
        return [f if isinstance(f, BaseException) else _error_or_none(next(answers)) for f in futures]

    async def _replace_producer(self) -> None:
        """A fresh producer (new producer id, sequences from 0): see the module's invariants."""
        log.warning("the broker refused a batch for good; replacing the producer (its sequence numbers)")
        self._refused = False
        old, self.producer = self.producer, None
        try:
            await old.stop()
        finally:
            await self.start()


def _refused_by_broker(result: Any) -> bool:
    """The broker's answer to a batch, for good (not the producer's own size check before sending, which
    raises from ``send``; not an error aiokafka retries itself with the same sequence numbers)."""
    from aiokafka.errors import BrokerResponseError

    return isinstance(result, BrokerResponseError) and not result.retriable


def _error_or_none(result: Any) -> BaseException | None:
    return result if isinstance(result, BaseException) else None


def is_permanent(error: BaseException) -> bool:
    """A Kafka error that retrying will not cure (aiokafka marks the others ``retriable``)."""
    from aiokafka.errors import KafkaError

    if isinstance(error, KafkaError):
        return not error.retriable and not isinstance(error, _transient_kafka_errors())
    return not isinstance(error, OSError | asyncio.TimeoutError)


def _transient_kafka_errors() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        NodeNotReadyError,
        OutOfOrderSequenceNumber,
        RequestTimedOutError,
    )

    # OutOfOrderSequenceNumber: our producer's state after a refused batch, not the row's fault
    return (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError, OutOfOrderSequenceNumber)


def _still_fresh(fresh_until: float) -> None:
    late = time.monotonic() - fresh_until
    if late > 0:
        raise LanesMaybeLost(f"{late + FRESH_S:.1f} s since the rows were read (limit {FRESH_S:.0f} s)")


def sort_outcomes(
    rows: list[Any], outcomes: list[BaseException | None]
) -> tuple[list[int], list[tuple[Any, BaseException]], list[tuple[Any, bytes]]]:
    """Which rows to delete (acknowledged), to keep as dead (a permanent error) and to replace (a rejected
    message too large for the topic: published again without its original, which it names).

    Per lane, rows stay in order: after a row that failed for a transient reason, nothing more of its lane
    is deleted this round (it is all sent again, in order; consumers keep the highest version)."""
    done: list[int] = []
    dead: list[tuple[Any, BaseException]] = []
    replaced: list[tuple[Any, bytes]] = []
    blocked: set[int] = set()
    for row, error in zip(rows, outcomes, strict=True):
        if row.lane in blocked:
            continue
        if error is None:
            done.append(row.id)
        elif not is_permanent(error):
            blocked.add(row.lane)
        elif row.topic == REJECTED and b'"original_removed"' not in row.value:
            replaced.append((row, without_original(row.value, error)))
            blocked.add(row.lane)
        else:
            dead.append((row, error))
    return done, dead, replaced


assert LANES <= 64
