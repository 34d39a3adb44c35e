"""`session-tally publish EVENTS.jsonl`: put a file of envelopes on the input topics.

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

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Literal

from producers.kafka_access import KafkaTarget, kafka_options
from session_tally.config import Settings, Topics

LINE_HEADER = "session-tally-line"
CHUNK = 5000  # deliveries awaited together
BLANK = b" \t\r\n"
TopicKind = Literal["admin", "path"]
PublishItem = tuple[TopicKind, bytes | None, bytes, int | None]

EXAMPLE = """\
example:
  session-tally topics create
  session-tally publish events.jsonl
  session-tally publish - --topic-prefix test- < events.jsonl

Exit status: 0 when every message was acknowledged, 1 when some could not be published (each reason is
printed), 2 when the file cannot be read or Kafka cannot be reached.
"""


class PublishError(Exception):
    """Kafka cannot be used (unreachable, a topic missing): nothing sensible can be published."""


class Publisher:
    """An idempotent ``acks=all`` producer for the two input topics that counts what it published.

    ``await send(...)`` queues a message and returns without waiting for its acknowledgement;
    acknowledgements are awaited every ``CHUNK`` messages and by :meth:`flush`. Use as
    ``async with Publisher(bootstrap, topics) as publisher: ...``.
    """

    def __init__(self, bootstrap: KafkaTarget, topics: Topics, linger_ms: int = 5) -> None:
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
            from session_tally.kafka_errors import kafka_problem

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
        from aiokafka.partitioner import murmur2

        count = self._partition_counts.get(topic)
        if not count:
            return None  # let the producer decide
        partition: int = (murmur2(key) & 0x7FFFFFFF) % count
        self._partitions[(topic, key)] = partition
        return partition

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            await self._producer.stop()

    async def send(self, kind: TopicKind, key: bytes | None, value: bytes, line: int | None) -> None:
        from aiokafka.errors import KafkaError

        topic = self.names[kind]
        if kind == "path" and self._admin_unacked:
            await self._admin_acknowledged()
        headers = [(LINE_HEADER, str(line).encode())] if line is not None else None
        partition = None
        if key is not None:
            partition = self._partitions.get((topic, key))
            if partition is None:
                partition = self._partition(topic, key)
        try:
            future = await self._producer.send(topic, value, key=key, partition=partition, headers=headers)
        except KafkaError as exc:  # e.g. a message larger than the producer's max_request_size
            self._fail(exc)
            return
        self._pending.append((topic, future))
        if kind == "admin":
            self._admin_unacked.append(future)
        self.sent += 1
        if len(self._pending) >= CHUNK:
            await self.flush()

    async def _admin_acknowledged(self) -> None:
        """Wait until every admin message sent so far is acknowledged (or failed: counted by flush)."""
        unacked, self._admin_unacked = self._admin_unacked, []
        self.admin_waits += 1
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
    topics: Topics,
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
    from producers.routing import route

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


def register(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="publish a file of event envelopes (one per line) to the input topics",
        description=(
            "Publish a file of envelopes, one per line, to the admin and path input topics with the keys of "
            "SPEC section 3 and a session-tally-line header (the line number)."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("events", metavar="EVENTS.jsonl", help="file of envelopes, one per line; '-' reads stdin")
    add_kafka_arguments(p)
    p.set_defaults(func=run)


def add_kafka_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap",
        "--bootstrap-servers",
        dest="bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    p.add_argument(
        "--topic-prefix",
        default=None,
        metavar="PREFIX",
        help="prefix of the topic names (default: $SESSION_TALLY_TOPIC_PREFIX, usually empty)",
    )


def kafka_target(args: argparse.Namespace) -> tuple[KafkaTarget, Topics]:
    from dataclasses import replace

    settings = Settings.from_env()
    topics = settings.topics if args.topic_prefix is None else Topics.from_env(args.topic_prefix)
    kafka = replace(settings.kafka, bootstrap_servers=args.bootstrap) if args.bootstrap else settings.kafka
    return kafka, topics


def _fail(message: str) -> int:
    print(f"session-tally publish: {message}", file=sys.stderr)
    return 2


def _ensure_topics(bootstrap: KafkaTarget, topics: Topics) -> None:
    """Create missing topics (as `session-tally topics create` does); mismatches are only reported."""
    from session_tally.topics import ensure_topics

    try:
        mismatches = asyncio.run(ensure_topics(bootstrap, topics))
    except Exception as exc:  # unreachable broker: publishing reports it with its own message
        if type(exc).__name__ in {"KafkaConnectionError", "KafkaTimeoutError"}:
            return
        print(f"session-tally publish: could not check the topics: {exc}", file=sys.stderr)
        return
    for mismatch in mismatches:
        print(f"session-tally publish: warning: {mismatch}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    bootstrap, topics = kafka_target(args)
    try:
        fh: BinaryIO = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")  # noqa: SIM115
    except OSError as exc:
        return _fail(f"cannot read {args.events}: {exc.strerror or exc}")
    tty = sys.stderr.isatty()
    started = time.monotonic()

    def progress(sent: int) -> None:
        elapsed = time.monotonic() - started
        end = "\r" if tty else "\n"
        print(f"publish: {sent:,} messages sent, {sent / elapsed:,.0f} msg/s", end=end, file=sys.stderr)

    blanks = [0]
    try:
        _ensure_topics(bootstrap, topics)
        with fh:
            counts = asyncio.run(publish_records(bootstrap, topics, file_items(fh, blanks), progress))
    except OSError as exc:
        return _fail(f"cannot read {args.events}: {exc.strerror or exc}")
    except PublishError as exc:
        return _fail(str(exc))
    elapsed = time.monotonic() - started
    if tty:
        print(" " * 60, end="\r", file=sys.stderr)
    published = sum(n for name, n in counts.items() if not name.startswith("failed:"))
    failed = {name[7:]: n for name, n in counts.items() if name.startswith("failed:")}
    per_topic = ", ".join(f"{name}: {counts.get(name, 0):,}" for name in (topics.admin_events, topics.path_events))
    print(
        f"published {published:,} messages ({per_topic}) in {elapsed:.1f} s, "
        f"{published / max(elapsed, 1e-9):,.0f} msg/s; {blanks[0]:,} blank lines skipped",
        file=sys.stderr,
    )
    if failed:
        print(f"session-tally publish: not published: {failed}", file=sys.stderr)
        return 1
    return 0
