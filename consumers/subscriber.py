"""The batch subscriber of both input topics.

Acknowledgement (see docs/adr/0001-exactly-once-effects.md):
- ``AckPolicy.MANUAL`` on the subscriber: nothing is committed to Kafka before the batch's PostgreSQL
  transaction (state + outbox + input offsets) committed; then ``ack()`` commits the positions;
- when the transaction fails (database down, say) the batch is handed back (every partition of it
  that this consumer still owns is rewound) after a back-off, never skipped; a record is never
  dropped because another one is bad: the raw bytes are handed over as they are and each record is
  judged on its own by the engine;
- the offsets stored in PostgreSQL are the truth: a record redelivered after a crash or a rebalance
  is recognised there and skipped, so the Kafka commit is only an optimisation.
- a path subscriber waits, before each batch, until the admin topic is applied up to its end offsets
  (:mod:`consumers.barrier`: order across the two input topics, SPEC section 3); the wait happens
  before the batch's transaction and outside ``in_flight``, so it holds no lock and never delays a
  rebalance;
- a custom parser leaves headers undecoded (FastStream's default parser decodes them as UTF-8 and would
  raise before the handler runs on one that is not, and loop on the batch for ever).

Observability: each log line written while a batch is handled carries the batch's topic, partition and
offsets (consumers/log_context.py); ``loop_problem`` and ``joined`` tell the health monitor whether the
loop turns and whether the group join completed (/livez, /readyz).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from consumers.barrier import AdminBarrier, BarrierTimeout
from consumers.isolation import apply_isolating, describe
from consumers.log_context import batch_context
from storage.messages import SourceRecord
from storage.unit_of_work import OffsetGap, Report, UnitOfWork

FAILURE_LOG_EVERY_S = 60.0
#: A member that sends no heartbeat for this long leaves its group, which gives its partitions to the
#: others (a frozen or partitioned worker; a killed one without static membership).
SESSION_TIMEOUT_MS = 15_000
#: how long a batch waits for the fetch that its own poll started (see InputSubscriber._top_up)
TOP_UP_MS = 10

log = logging.getLogger("session_tally.consumer")


class InputSubscriber:
    """Registers one batch subscriber (of one or both input topics) on a FastStream ``KafkaBroker``."""

    def __init__(
        self,
        uow: UnitOfWork,
        on_committed: Callable[[Report], None],
        metrics: Any = None,
        max_records: int = 5000,
        batch_timeout_ms: int = 50,
        barrier: AdminBarrier | None = None,
    ) -> None:
        self.uow = uow
        self.barrier = barrier
        self.on_committed = on_committed
        self.metrics = metrics
        self.max_records = max_records
        self.batch_timeout_ms = batch_timeout_ms
        self.in_flight = asyncio.Lock()
        self.last_batch_at = time.monotonic()
        self.last_handle_at = time.monotonic()  # when the handler was last entered
        self.handling_since: float | None = None  # when the handler in progress was entered
        self.joined = False  # a group join completed (partitions assigned, maybe none) since the last revocation
        self.batches = 0
        self._gap: dict[tuple[str, int], int] | None = None  # the last gap we went back for
        self.subscriber: Any = None  # FastStream's subscriber (its .consumer once started)
        self.failures = FailureLog()
        self._misrouted_logged: set[tuple[str, str, int]] = set()

    @property
    def consumer(self) -> Any:
        """The aiokafka consumer (None before the broker started)."""
        return None if self.subscriber is None else self.subscriber.consumer

    def assigned(self) -> set[tuple[str, int]]:
        """The (topic, partition)s this consumer owns now."""
        consumer = self.consumer
        return set() if consumer is None else {(tp.topic, tp.partition) for tp in consumer.assignment()}

    def loop_problem(self, stall_s: float, records_waiting: bool) -> str | None:
        """Why this consumer loop does not make progress (None: it does): its poll task ended, one call of
        the handler has lasted longer than ``stall_s``, or records wait (``records_waiting``) and no batch
        reached the handler for ``stall_s``. Every wait inside the handler is bounded (the barrier, the
        back-off after a failure), so an outage never makes the handler last that long."""
        now = time.monotonic()
        tasks = getattr(self.subscriber, "tasks", None)
        if self.consumer is not None and isinstance(tasks, list) and tasks and all(t.done() for t in tasks):
            return "the poll loop ended"
        if self.handling_since is not None and now - self.handling_since > stall_s:
            return f"one batch in the handler for {now - self.handling_since:.0f} s"
        if records_waiting and self.handling_since is None and now - self.last_handle_at > stall_s:
            return f"records waiting and no batch handled for {now - self.last_handle_at:.0f} s"
        return None

    async def seek_to_applied(self, assigned: Any) -> None:
        """Start newly assigned partitions at the offsets PostgreSQL applied (the truth), not at Kafka's
        committed offsets: Kafka's own offset tools (``kafka-consumer-groups --reset-offsets``) change
        only the latter, so they neither replay nor skip anything (docs/operations.md)."""
        consumer = self.consumer
        if consumer is None or not assigned:
            return
        # paused while PostgreSQL is asked: the fetcher meanwhile positions the partitions at Kafka's
        # committed offsets and would hand records from there to the next batch; a paused partition's
        # records are never handed out, and a seek discards what was fetched from the old position
        consumer.pause(*assigned)
        try:
            applied = await self.uow.applied_offsets(tuple(sorted({tp.topic for tp in assigned})))
        except Exception as exc:  # the first batch finds the same through OffsetGap
            log.warning("cannot read the applied offsets for the new assignment (%s)", describe(exc))
            applied = None
        owned = consumer.assignment()
        for tp in assigned:
            if tp not in owned:  # revoked while PostgreSQL was asked
                continue
            if applied is not None:
                # a partition never applied starts at its beginning (0: Kafka's log start when older
                # records were deleted), whatever offset Kafka has committed for the group
                consumer.seek(tp, applied.get((tp.topic, tp.partition), 0))
            consumer.resume(tp)

    def register(
        self, broker: Any, topics: tuple[str, ...], group_id: str, group_instance_id: str | None = None
    ) -> Any:
        from aiokafka import ConsumerRebalanceListener
        from faststream import AckPolicy, Context

        subscriber_self = self

        class WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
            """On revocation, wait for the batch in flight to commit (or fail) before rejoining."""

            async def on_partitions_revoked(self, revoked: Any) -> None:
                subscriber_self.joined = False
                async with subscriber_self.in_flight:
                    pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                log.info("assigned %d partitions", len(assigned), extra={"group_id": group_id})
                await subscriber_self.seek_to_applied(assigned)
                subscriber_self.joined = True

        subscriber = broker.subscriber(
            *topics,
            batch=True,
            group_id=group_id,
            group_instance_id=group_instance_id,
            ack_policy=AckPolicy.MANUAL,
            max_records=self.max_records,
            batch_timeout_ms=self.batch_timeout_ms,
            auto_offset_reset="earliest",
            max_poll_interval_ms=300_000,
            rebalance_timeout_ms=60_000,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=2 * 1024 * 1024,
            parser=_tolerant_parser,
            decoder=_raw_decoder,
            listener=WaitForBatch(),
        )

        @subscriber  # type: ignore[untyped-decorator]
        async def handle(body: Any, msg: Any = Context("message")) -> None:  # noqa: B008
            await subscriber_self.handle(msg)

        self.subscriber = subscriber
        return handle

    async def handle(self, msg: Any) -> None:
        raw = msg.raw_message
        records = list(raw) if isinstance(raw, tuple | list) else [raw]
        more = await self._top_up(len(records))
        if more:
            records += more
            msg.raw_message = tuple(records)  # what a hand-back rewinds (_rewind) and the ack commits
        batch = [
            SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
            for r in records
        ]
        self.last_handle_at = self.handling_since = time.monotonic()
        try:
            with batch_context(batch):
                await self._handle(msg, batch)
        finally:
            self.handling_since = None

    async def _top_up(self, have: int) -> list[Any]:
        """The records fetched since FastStream's poll handed this batch over, waiting at most
        :data:`TOP_UP_MS` for them (none when the batch is full).

        aiokafka buffers one fetch per partition: the poll that drains a partition's buffer sends the
        next fetch only then, so under a steady stream a batch held only the records that had reached
        the broker before the previous batch began, and every record waited about two batch durations
        before it was handled. Taking that next fetch into the batch halves the wait. Per partition the
        records follow the batch's (a consumer's position only moves forward), and they are part of the
        batch in every respect: applied in its transaction, acknowledged with it, rewound with it."""
        consumer = self.consumer
        room = self.max_records - have
        if consumer is None or room <= 0 or TOP_UP_MS <= 0:
            return []
        try:
            fetched = await consumer.getmany(timeout_ms=TOP_UP_MS, max_records=room)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as FastStream's own poll does: noted, and the batch goes on without them
            log.warning("could not add the records fetched meanwhile to the batch (%s)", describe(exc))
            return []
        return [r for records in fetched.values() for r in records]

    async def _handle(self, msg: Any, batch: list[SourceRecord]) -> None:
        if self.barrier is not None and not await self._wait_for_admin(msg):
            return
        async with self.in_flight:
            started = time.perf_counter()
            first = {(r.topic, r.partition): r.offset for r in reversed(batch)}
            accept = self._gap is not None and all(first.get(k) is not None for k in self._gap)
            try:
                report = await apply_isolating(self.uow, batch, accept)
            except asyncio.CancelledError:
                raise
            except OffsetGap as gap:
                self._gap = gap.expected
                # Kafka's committed position ran ahead of what PostgreSQL applied: go back to the truth
                from aiokafka import TopicPartition

                log.warning("offset gap %s: seeking back to the offsets applied in PostgreSQL", gap.expected)
                _seek_assigned(msg.consumer, {TopicPartition(t, p): o for (t, p), o in gap.expected.items()})
                return
            except Exception as exc:  # an outage (isolation rejected what fails on its own)
                self.failures.record(exc, len(batch))
                if self.metrics is not None:
                    self.metrics.inc("session_tally_batch_failures_total")
                await asyncio.sleep(1.0)
                _rewind(msg)
                return
            await msg.ack()
            self._gap = None
            self.failures.recovered()
        self.batches += 1
        self.last_batch_at = time.monotonic()
        if report.outbox_rows or report.next_change_at is not None:
            self.on_committed(report)
        if report.misrouted:
            self._report_misrouted(report)
        if self.metrics is not None:
            self._count(report, batch, time.perf_counter() - started)

    def _count(self, report: Report, batch: list[SourceRecord], seconds: float) -> None:
        """The metrics of a committed batch. Event -> commit latency is observed per record (Kafka's
        record timestamp to now, the wall clock even under a frozen clock; records without a timestamp
        are left out)."""
        m = self.metrics
        topic = batch[0].topic
        now_ms = time.time() * 1000
        m.observe("session_tally_batch_duration_seconds", seconds, topic=topic)
        stamps = [r.timestamp_ms for r in batch if r.timestamp_ms is not None and r.timestamp_ms >= 0]
        m.observe_many(
            "session_tally_event_commit_latency_seconds", [max(0.0, now_ms - t) / 1000 for t in stamps], topic=topic
        )
        m.inc("session_tally_batches_total")
        m.inc("session_tally_records_total", report.records)
        m.inc("session_tally_redelivered_records_total", report.redelivered)
        for kind, n in report.outcomes.items():
            m.inc("session_tally_events_total", n, outcome=kind)
        for reason, n in report.reasons.items():
            m.inc("session_tally_rejected_total", n, reason=reason)
        m.inc("session_tally_status_changes_total", report.status_changes)
        m.inc("session_tally_tallies_total", report.tallies)
        m.inc("session_tally_transaction_retries_total", report.attempts - 1)

    def _report_misrouted(self, report: Report) -> None:
        for m in report.misrouted:
            if self.metrics is not None:
                self.metrics.inc("session_tally_misrouted_records_total", topic=m.topic)
            where = (m.topic, m.key, m.partition)
            if where in self._misrouted_logged or len(self._misrouted_logged) > 10_000:
                continue
            self._misrouted_logged.add(where)
            log.error(
                "%s: events of %s arrive on partitions %d and %d; those on %d are rejected "
                "(two partitioners: publishers must use murmur2, see docs/publishers.md)",
                m.topic,
                m.key,
                m.owner,
                m.partition,
                m.partition,
                extra={
                    "event_id": m.event_id,
                    "topic": m.topic,
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": m.key,
                    "owner_partition": m.owner,
                },
            )

    async def _wait_for_admin(self, msg: Any) -> bool:
        """The barrier before a path batch; False when the batch was handed back (seeked back) instead."""
        assert self.barrier is not None
        try:
            await self.barrier.wait()
            return True
        except asyncio.CancelledError:
            raise
        except BarrierTimeout as exc:
            log.warning("%s; the batch is handed back and waited for again", exc)
        except Exception:
            log.exception("cannot check the admin topic's progress; the batch will be redelivered")
            if self.metrics is not None:
                self.metrics.inc("session_tally_batch_failures_total")
            await asyncio.sleep(1.0)
        _rewind(msg)
        return False


class FailureLog:
    """Batch failures in the log without a flood: the first with its traceback, then one line a minute
    while they go on, and one line when a batch succeeds again."""

    def __init__(self, every_s: float = FAILURE_LOG_EVERY_S) -> None:
        self.every_s = every_s
        self.failing_since: float | None = None
        self.count = 0
        self._last_log = 0.0

    def record(self, exc: BaseException, records: int) -> None:
        now = time.monotonic()
        self.count += 1
        if self.failing_since is None:
            self.failing_since = self._last_log = now
            log.error("batch of %d records failed; it will be redelivered", records, exc_info=exc)
        elif now - self._last_log >= self.every_s:
            self._last_log = now
            log.error(
                "batches keep failing: %d failures in %.0f s; last: %s",
                self.count,
                now - self.failing_since,
                describe(exc),
            )

    def recovered(self) -> None:
        if self.failing_since is not None:
            log.warning("batches succeed again after %d failures", self.count)
        self.failing_since = None
        self.count = 0


def _rewind(msg: Any) -> None:
    """Hand a batch back: seek every partition of it that this consumer still owns to the batch's first
    record there, so it is fetched again (FastStream's ``nack()`` raises for a partition that a rebalance
    took away meanwhile; the new owner resumes from PostgreSQL's offsets anyway)."""
    from aiokafka import TopicPartition

    raw = msg.raw_message
    earliest: dict[Any, int] = {}
    for r in raw if isinstance(raw, tuple | list) else (raw,):
        tp = TopicPartition(r.topic, r.partition)
        earliest[tp] = min(earliest.get(tp, r.offset), r.offset)
    _seek_assigned(msg.consumer, earliest)


def _seek_assigned(consumer: Any, offsets: dict[Any, int]) -> None:
    assigned = consumer.assignment()
    for tp, offset in offsets.items():
        if tp in assigned:
            consumer.seek(tp, offset)


async def _tolerant_parser(records: Any, original: Any) -> Any:
    """Build FastStream's message without decoding headers: FastStream's own parser decodes every header
    as UTF-8 (and raises on one that is not, before the handler runs); the handler reads the raw records."""
    parser = original.__self__
    batch = isinstance(records, tuple)
    first = records[0] if batch else records
    return parser.msg_class(
        body=[r.value or b"" for r in records] if batch else (records.value or b""),
        headers={},
        batch_headers=[],
        reply_to="",
        content_type=None,
        message_id=f"{first.offset}-{first.timestamp}",
        correlation_id=None,
        raw_message=records,
        consumer=parser._consumer,
    )


def _raw_decoder(msg: Any) -> Any:
    raw = msg.raw_message
    return [r.value for r in raw] if isinstance(raw, tuple | list) else raw.value
