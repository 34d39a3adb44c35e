"""The input publisher: envelopes onto the input topics, routed and keyed (SPEC section 3), as `session-tally
publish`, the web app and the tests publish them.

Each non-blank line is one message, sent as its exact bytes (without the newline) to the topic and with
the key that :func:`producers.routing.route` gives it: organization and program events to the admin
topic keyed by ``org_id``, everything else to the path topic keyed by ``path_id`` (unparseable lines
too, keyed by the ``path_id`` still readable in them, else unkeyed). Every message carries the header
``session-tally-line`` = its 1-based line number, so that ``session-tally snapshot`` can number
rejections the way ``session-tally replay`` does. Blank lines are skipped but counted.

The producer is idempotent with ``acks=all``: each partition receives its messages in file order, once.
Order across the two topics (SPEC section 3): an admin line is acknowledged before a later path line is
sent, so that the workers, which apply the admin topic up to its end offsets before a path batch, apply
it before the path events that follow it in the file. Otherwise messages are sent without waiting for
each acknowledgement; deliveries are awaited in chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, Protocol

from producers.kafka_access import KafkaTarget, kafka_options
from producers.kafka_client import send_now
from producers.routing import TopicKind, murmur2_partition, route

LINE_HEADER = "session-tally-line"  # the 1-based line number of a published file
CHUNK = 5000  # deliveries awaited together
BLANK = b" \t\r\n"
PublishItem = tuple[TopicKind, bytes | None, bytes, int | None]


class InputTopics(Protocol):
    """The names of the two input topics (``session_tally.config.Topics`` is one)."""

    @property
    def admin_events(self) -> str: ...

    @property
    def path_events(self) -> str: ...


class PublishError(Exception):
    """Kafka cannot be used (unreachable, a topic missing): nothing sensible can be published."""


class Publisher:
    """An idempotent ``acks=all`` producer for the two input topics that counts what it published.

    ``await send(...)`` queues a message and returns without waiting for its acknowledgement;
    acknowledgements are awaited every ``CHUNK`` messages and by :meth:`flush`. Use as
    ``async with Publisher(bootstrap, topics) as publisher: ...``.
    """

    def __init__(self, bootstrap: KafkaTarget, topics: InputTopics, linger_ms: int = 5) -> None:
        self.bootstrap = bootstrap
        self.names: dict[str, str] = {"admin": topics.admin_events, "path": topics.path_events}
        self.linger_ms = linger_ms
        self.counts: dict[str, int] = {name: 0 for name in self.names.values()}
        self.failed: dict[str, int] = {}  # reason -> count
        self.sent = 0
        self.admin_waits = 0  # times a path message waited for the admin messages before it
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []
        self._admin_unacked: list[asyncio.Future[Any]] = []
        self._producer: Any = None
        self._partition_counts: dict[str, int] = {}
        self._partitions: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition

    async def __aenter__(self) -> Publisher:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        from producers.kafka_client import throttle_metadata_updates

        producer = AIOKafkaProducer(
            **kafka_options(self.bootstrap),
            enable_idempotence=True,
            acks="all",
            linger_ms=self.linger_ms,
            request_timeout_ms=30_000,
        )
        throttle_metadata_updates(producer.client)  # no hot loop while the broker restarts
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            from producers.kafka_errors import kafka_problem

            problem = kafka_problem(exc, self.bootstrap) or f"cannot reach Kafka at {self.bootstrap} ({exc})"
            raise PublishError(problem) from exc
        self._producer = producer
        try:
            await self._check_topics()
        except BaseException:
            await producer.stop()
            raise
        return self

    async def _check_topics(self) -> None:
        from aiokafka.errors import KafkaError

        try:
            cluster = await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise PublishError(f"cannot read the topics of Kafka at {self.bootstrap} ({exc})") from exc
        missing = sorted(set(self.names.values()) - set(cluster.topics()))
        if missing:
            raise PublishError(
                f"missing topic(s) {', '.join(missing)} on {self.bootstrap}: create them with "
                "`session-tally topics create` (same SESSION_TALLY_TOPIC_PREFIX)"
            )
        for name in self.names.values():
            self._partition_counts[name] = len(cluster.partitions_for_topic(name) or ())

    def _partition(self, topic: str, key: bytes) -> int | None:
        """The default partitioner's choice for a key (murmur2, as the Java client), computed once per key."""
        count = self._partition_counts.get(topic)
        if not count:
            return None  # let the producer decide
        partition = murmur2_partition(key, count)
        self._partitions[(topic, key)] = partition
        return partition

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            await self._producer.stop()

    async def send(
        self,
        kind: TopicKind,
        key: bytes | None,
        value: bytes,
        line: int | None,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> asyncio.Future[Any] | None:
        """Queue one message (``headers`` before the line header); returns its delivery future (its
        RecordMetadata once acknowledged), or None when the producer refused it at once (counted)."""
        from aiokafka.errors import KafkaError

        topic = self.names[kind]
        if kind == "path" and self._admin_unacked:
            await self._admin_acknowledged()
        all_headers = [*headers, *([(LINE_HEADER, str(line).encode())] if line is not None else [])]
        partition = None
        if key is not None:
            partition = self._partitions.get((topic, key))
            if partition is None:
                partition = self._partition(topic, key)
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                topic, value, key=key, partition=partition, headers=all_headers or None
            )
        except KafkaError as exc:  # e.g. a message larger than the producer's max_request_size
            self._fail(exc)
            return None
        self._pending.append((topic, future))
        if kind == "admin":
            self._admin_unacked.append(future)
        self.sent += 1
        if len(self._pending) >= CHUNK:
            await self.flush()
        return future

    async def _admin_acknowledged(self) -> None:
        """Wait until every admin message sent so far is acknowledged (or failed: counted by flush)."""
        unacked, self._admin_unacked = self._admin_unacked, []
        self.admin_waits += 1
        send_now(self._producer, self.names["admin"])  # no linger before a wait: one round trip
        await asyncio.gather(*unacked, return_exceptions=True)

    def _fail(self, exc: BaseException) -> None:
        reason = type(exc).__name__
        self.failed[reason] = self.failed.get(reason, 0) + 1

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged (or failed)."""
        pending, self._pending = self._pending, []
        self._admin_unacked = []
        if not pending:
            return
        results = await asyncio.gather(*(f for _t, f in pending), return_exceptions=True)
        for (topic, _f), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                self._fail(result)
            else:
                self.counts[topic] += 1


async def publish_records(
    bootstrap: KafkaTarget,
    topics: InputTopics,
    records: Iterable[PublishItem],
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Publish ``(topic kind, key, value, line)`` items in order; returns acknowledged messages per topic
    name. ``progress(sent)`` is called about once a second. Raises :class:`PublishError` when Kafka or a
    topic is not there; messages that fail individually are counted under ``"failed:<error>"``."""
    async with Publisher(bootstrap, topics) as publisher:
        last = time.monotonic()
        for kind, key, value, line in records:
            await publisher.send(kind, key, value, line)
            if progress is not None and not publisher.sent % 1000:
                now = time.monotonic()
                if now - last >= 1:
                    last = now
                    progress(publisher.sent)
    result = dict(publisher.counts)
    result.update({f"failed:{reason}": n for reason, n in publisher.failed.items()})
    return result


def file_items(fh: BinaryIO, blank_lines: list[int] | None = None) -> Iterator[PublishItem]:
    """The messages of an open JSONL file, routed, with their line numbers (blank lines skipped; their
    count is added to ``blank_lines[0]`` when given)."""
    blanks = 0
    for number, raw in enumerate(fh, start=1):
        value = raw.rstrip(b"\n")
        if not value.strip(BLANK):
            blanks += 1
            continue
        kind, key = route(value)
        yield kind, key, value, number
    if blank_lines is not None:
        blank_lines[0] += blanks


# ---------------------------------------------------------------------------------------- the command
