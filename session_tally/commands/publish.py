"""`session-tally publish EVENTS.jsonl`: put a file of envelopes on the input topics (what it does and
guarantees: producers/publisher.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, BinaryIO

from producers.kafka_access import KafkaTarget
from producers.publisher import LINE_HEADER, PublishError, file_items, publish_records
from session_tally.commands.common import add_kafka_arguments, kafka_target
from session_tally.config import Topics

__all__ = ["LINE_HEADER", "file_items", "publish_records", "register"]

EXAMPLE = """\
example:
  session-tally topics create
  session-tally publish events.jsonl
  session-tally publish - --topic-prefix test- < events.jsonl

Exit status: 0 when every message was acknowledged, 1 when some could not be published (each reason is
printed), 2 when the file cannot be read or Kafka cannot be reached.
"""


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
