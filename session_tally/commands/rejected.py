"""`session-tally rejected list|redrive`: read the rejected topic, and re-drive chosen rejections after
the cause was fixed upstream (what a message holds: session_tally/rejections.py; what re-driving sends:
session_tally/redrive.py; docs/operations.md "Operator commands")."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from typing import Any

from session_tally.commands.common import add_kafka_arguments

EPILOG_LIST = """\
examples:
  session-tally rejected list                                   # every rejection, oldest first
  session-tally rejected list --reason unknown_program --since 2h
  session-tally rejected list --topic path --since 2026-03-10T00:00:00Z --until 2026-03-11T00:00:00Z
  session-tally rejected list --event-id ev-4 --original > ev-4.json     # the message as it was sent
  session-tally rejected list --reason schema_violation --json | jq .detail

Times are RFC 3339 instants or durations back from now (90s, 30m, 2h, 7d, or ISO 8601 such as P1D);
they select on rejected_at (the worker's clock when it rejected the input). The topic is read from the
beginning without a consumer group (nothing is committed); progress goes to stderr.
Exit status: 0 (also when nothing matches), 2 when Kafka cannot be reached.
"""

EPILOG_REDRIVE = """\
examples:
  session-tally rejected redrive --reason unknown_program --since 1d      # dry run: what would be sent
  session-tally rejected redrive --reason unknown_program --since 1d --yes --why "prog-9 created, OPS-31"
  session-tally rejected redrive --event-id ev-4 --event-id ev-5 --yes

Re-publishes each chosen rejection's original to the input topic and key it came from, unchanged but
for its event_id: <old>.r1 (a UUIDv5 of the old id when that would not be a valid id). The old id is
remembered by the duplicate check, the new one is not; re-driving the same rejection again gives the
same new id, which then counts as a duplicate. Without --yes nothing is sent (a dry run). Rejections
re-driven before (operator_audit) are left out unless --again. Originals that were cut to 64 KiB, that
are not JSON or have no string event_id cannot be re-driven: each is listed with the reason (fix the
message and publish it with `session-tally publish`). Each run writes what it sent to operator_audit
(`session-tally offsets history`). Choose with at least one filter.
Exit status: 0 when every chosen rejection was (or, dry run, would be) re-driven or was re-driven
before; 1 when some cannot be or Kafka refused some; 2 when Kafka or PostgreSQL cannot be reached.
"""

_AGO = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def instant_arg(text: str) -> int:
    """An RFC 3339 instant, or a duration back from now: µs since the epoch."""
    import time

    from domain.timefmt import parse_duration, parse_instant

    try:
        return parse_instant(text)
    except ValueError:
        pass
    now = time.time_ns() // 1000
    m = _AGO.fullmatch(text.strip())
    if m:
        return now - int(m.group(1)) * _UNIT_S[m.group(2)] * 1_000_000
    try:
        return now - parse_duration(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an RFC 3339 instant nor a duration (2h, P1D)") from None


def _filter_arguments(p: argparse.ArgumentParser) -> None:
    from domain.reasons import ALL

    reason_help = "e.g. unknown_program (repeatable)"
    p.add_argument("--reason", action="append", default=[], choices=ALL, metavar="REASON", help=reason_help)
    p.add_argument("--since", type=instant_arg, metavar="T", help="rejected at or after T")
    p.add_argument("--until", type=instant_arg, metavar="T", help="rejected before T")
    p.add_argument("--topic", action="append", default=[], help="the input topic: full name, 'admin' or 'path'")
    p.add_argument("--event-id", action="append", default=[], metavar="ID", help="the rejected event's id (repeatable)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up reading after this many seconds")
    add_kafka_arguments(p)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "rejected",
        help="list rejected inputs, re-drive them after a fix",
        description="The rejected topic: list what was rejected and why; re-drive chosen originals.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'session-tally rejected list --help' or '... redrive --help' for examples.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    raw = argparse.RawDescriptionHelpFormatter
    listing = actions.add_parser("list", help="rejections, filtered", epilog=EPILOG_LIST, formatter_class=raw)
    _filter_arguments(listing)
    listing.add_argument("--limit", type=int, default=None, metavar="N", help="only the N most recent matches")
    shape = listing.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one rejected message (JSON) per line")
    shape.add_argument("--original", action="store_true", help="the original bytes of each, one per line")
    redrive = actions.add_parser(
        "redrive", help="re-publish chosen originals with new event ids", epilog=EPILOG_REDRIVE, formatter_class=raw
    )
    _filter_arguments(redrive)
    redrive.add_argument("--yes", action="store_true", help="publish (without it: a dry run)")
    redrive.add_argument("--again", action="store_true", help="also rejections re-driven before (duplicates)")
    redrive.add_argument("--why", default="", help="why (kept in operator_audit)")
    redrive.add_argument("--operator", default=None, help="who (default: the login name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from session_tally.commands.common import settings_from_args
    from session_tally.rejections import Filter

    settings = settings_from_args(args)
    names = {"admin": settings.topics.admin_events, "path": settings.topics.path_events}
    wanted = Filter(
        reasons=frozenset(args.reason),
        topics=frozenset(names.get(t, t) for t in args.topic),
        event_ids=frozenset(args.event_id),
        since_us=args.since,
        until_us=args.until,
    )
    if args.action == "redrive" and wanted == Filter():
        return _say("choose the rejections to re-drive: --reason, --event-id, --topic, --since or --until", 1)
    try:
        return asyncio.run(_list(settings, wanted, args) if args.action == "list" else _redrive(settings, wanted, args))
    except TimeoutError as exc:
        return _say(str(exc), 2)


def _say(message: str, status: int) -> int:
    print(f"session-tally rejected: {message}", file=sys.stderr)
    return status


async def _read(settings: Any, wanted: Any, timeout_s: float) -> list[Any]:
    """The matching rejections (progress on stderr), oldest first; a summary line on stderr."""
    from session_tally.commands.common import Progress
    from session_tally.rejections import ReadStats, scan

    stats = ReadStats()
    progress = Progress("reading " + settings.topics.rejected)

    def show(s: ReadStats) -> None:
        progress(f"{s.read:,} of {s.total:,} messages, {s.matched:,} matching")

    found = [r async for r in scan(settings.kafka, settings.topics.rejected, wanted, stats, show, timeout_s)]
    progress.done()
    notes = [f"{stats.repeated:,} repeated"] if stats.repeated else []
    if stats.unreadable:
        notes.append(f"{stats.unreadable:,} not rejections (at {', '.join(stats.unreadable_at)})")
    extra = f"; {', '.join(notes)}" if notes else ""
    print(f"{stats.matched:,} rejection(s) match, of {stats.read:,} messages read{extra}", file=sys.stderr)
    found.sort(key=lambda r: (r.rejected_at_us or 0, r.source_key))
    return found


async def _list(settings: Any, wanted: Any, args: argparse.Namespace) -> int:
    found = await _read(settings, wanted, args.timeout)
    if args.limit is not None:
        found = found[-args.limit :] if args.limit > 0 else []
    out = sys.stdout
    if args.json:  # the messages as they are on the topic
        out.flush()
        for r in found:  # one per line: a message written on several lines is written again on one
            one = r.raw if b"\n" not in r.raw else json.dumps(r.doc, ensure_ascii=False).encode()
            sys.stdout.buffer.write(one + b"\n")
        sys.stdout.buffer.flush()
        return 0
    if args.original:
        out.flush()
        for r in found:
            value = r.original()
            problem = r.original_problem()
            if problem is not None:
                print(f"{r.where} ({r.event_id}): {problem}", file=sys.stderr)
            if value is not None:
                sys.stdout.buffer.write(value + b"\n")
        sys.stdout.buffer.flush()
        return 0
    rows = [
        (str(r.doc.get("rejected_at")), r.reason, r.event_id or "-", r.where, _one_line(str(r.doc.get("detail"))))
        for r in found
    ]
    heads = ("rejected at", "reason", "event id", "source", "detail")
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(heads[:-1])]
    widths = [min(w, 60) for w in widths]
    for row in [heads, *rows]:
        cells = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(row[:-1], widths, strict=True)]
        out.write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + row[-1] + "\n")
    return 0


def _one_line(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


async def _redrive(settings: Any, wanted: Any, args: argparse.Namespace) -> int:
    from producers.publisher import PublishError
    from session_tally.commands.common import migrated_engine
    from session_tally.redrive import plan
    from storage import operator

    found = await _read(settings, wanted, args.timeout)
    topics = settings.topics
    plans = [plan(r, topics.admin_events, topics.path_events) for r in found]
    plans.sort(key=lambda p: (p.kind != "admin", p.rejection.source_key))  # admin first, then input order
    engine = await migrated_engine(settings)
    try:
        before = await operator.redriven(engine)
        to_send, refused = [], 0
        for p in plans:
            done = before.get(p.rejection.source_key)
            if p.problem is not None:
                refused += 1
                print(f"cannot  {p.rejection.where}  {p.rejection.event_id or '-'}: {p.problem}")
            elif done is not None and not args.again:
                when = done["recorded_at"].isoformat(timespec="seconds")
                print(f"before  {p.rejection.where}  {p.old_id} -> {p.new_id} (re-driven {when}; --again to resend)")
            else:
                to_send.append(p)
                verb = "send  " if args.yes else "would "
                print(f"{verb}  {p.rejection.where}  {p.old_id} -> {p.new_id}  ({p.rejection.reason})")
        if not args.yes:
            print(f"dry run: {len(to_send)} would be re-driven, {refused} cannot be; add --yes to publish them")
            return 1 if refused else 0
        try:
            sent, failed = await _publish(settings, engine, to_send, args)
        except PublishError as exc:
            return _say(str(exc), 2)
    finally:
        await engine.dispose()
    print(f"re-driven {sent}, failed {failed}, cannot be re-driven {refused}; recorded in operator_audit")
    return 1 if refused or failed else 0


async def _publish(settings: Any, engine: Any, plans: list[Any], args: argparse.Namespace) -> tuple[int, int]:
    """Send the plans; record the acknowledged ones in operator_audit (one row per 1000), also when
    Kafka fails midway. Returns (acknowledged, failed); raises PublishError when Kafka or a topic is
    not there."""
    from producers.publisher import Publisher
    from session_tally.commands.common import Progress
    from storage import operator

    progress = Progress("re-driving")
    futures: list[tuple[Any, Any]] = []
    records: list[dict[str, Any]] = []
    failed = 0
    try:
        async with Publisher(settings.kafka, settings.topics) as publisher:
            for i, p in enumerate(plans, start=1):
                futures.append((p, await publisher.send(p.kind, p.key, p.value, None, p.headers)))
                progress(f"{i:,} of {len(plans):,} sent")
    finally:
        progress.done()
        for p, future in futures:
            if future is None or not future.done() or future.cancelled() or future.exception() is not None:
                failed += 1
                continue
            meta = future.result()
            r = p.rejection
            topic, partition, offset = r.source_key
            records.append(
                {
                    "source": {"topic": topic, "partition": partition, "offset": offset},
                    "rejected": {"partition": r.partition, "offset": r.offset, "reason": r.reason},
                    "from": p.old_id,
                    "to": p.new_id,
                    "sent": {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset},
                }
            )
        who = args.operator or getpass.getuser()
        for first in range(0, len(records), 1000):
            chunk = records[first : first + 1000]
            await operator.audit(engine, operator.REDRIVE, who, {"why": args.why, "records": chunk})
    return len(records), failed + len(plans) - len(futures)
