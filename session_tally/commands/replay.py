"""`session-tally replay EVENTS.jsonl --at T`: the policy engine without Kafka (SPEC section 6)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, BinaryIO

EXAMPLE = """\
example:
  session-tally replay events.jsonl --at 2026-03-10T12:00:00Z
  cat events.jsonl | session-tally replay - --at 2026-03-10T12:00:00Z --pretty

Reads one JSON envelope per line, in file order, as if every event were on its topic in that order,
applies the whole policy engine exactly as the workers do, evaluates the clock at T and prints
{"tallies": [...], "meetings": [...], "rejected": [...]} to stdout. Blank lines are ignored but counted
for line numbers. Events still waiting for an unknown program or meeting at the end of the input are
rejected (unknown_program / unknown_meeting) and listed after the other rejections.
Exit status: 0 when the input was read (rejections are results), 2 when it cannot be read.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="apply the policy engine to a file of events and print tallies, statuses and rejections",
        description="Apply the policy engine to a file of events, without Kafka or a database.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("events", metavar="EVENTS.jsonl", help="file of envelopes, one per line; '-' reads stdin")
    p.add_argument(
        "--at", required=True, metavar="T", help="the time T to evaluate the clock at (RFC 3339 with offset)"
    )
    p.add_argument("--pretty", action="store_true", help="indent the JSON output")
    p.add_argument(
        "--progress", action="store_true", help="report progress on stderr (default: when stderr is a terminal)"
    )
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"session-tally replay: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from domain.replay import Replay
    from domain.timefmt import parse_instant

    try:
        at = parse_instant(args.at.strip())
    except ValueError as exc:
        return _fail(f"--at {args.at!r}: {exc}")
    progress = args.progress or sys.stderr.isatty()
    from session_tally.gc_tuning import tune_gc

    tune_gc()  # the state grows to millions of objects without cycles: scanning them again and again is waste
    replay = Replay()
    try:
        if args.events == "-":
            _feed(replay, sys.stdin.buffer, progress)
        else:
            with open(args.events, "rb") as fh:
                _feed(replay, fh, progress)
    except OSError as exc:
        return _fail(f"cannot read {args.events}: {exc.strerror or exc}")
    if args.pretty:
        sys.stdout.write(json.dumps(replay.document(at), indent=2) + "\n")
        sys.stdout.flush()
    else:
        write_document(replay, at, sys.stdout.buffer)
    return 0


def write_document(replay: Any, at: int, out: BinaryIO) -> None:
    """The compact document, streamed section by section, each item encoded by orjson: the output of a
    million events is written without ever holding it (or all its dicts) in memory at once."""
    import orjson

    tallies, meetings, rejected = replay.sections(at)
    dumps = orjson.dumps
    out.write(b'{"tallies":' + dumps(tallies) + b',"meetings":[')
    _write_items(out, meetings, dumps)
    out.write(b'],"rejected":[')
    _write_items(out, rejected, dumps)
    out.write(b"]}\n")
    out.flush()


def _write_items(out: BinaryIO, items: Any, dumps: Any, chunk: int = 2048) -> None:
    buffer: list[bytes] = []
    first = True
    for item in items:
        buffer.append(dumps(item))
        if len(buffer) >= chunk:
            out.write((b"" if first else b",") + b",".join(buffer))
            first, buffer = False, []
    if buffer:
        out.write((b"" if first else b",") + b",".join(buffer))


def _feed(replay: Any, fh: BinaryIO, progress: bool) -> None:
    feed = replay.feed
    started = last = time.monotonic()
    number = 0
    for number, raw in enumerate(fh, start=1):
        feed(raw.rstrip(b"\n"), number)
        if progress and not number % 50_000:
            now = time.monotonic()
            if now - last >= 1:
                last = now
                print(f"\rreplay: {number:,} lines, {number / (now - started):,.0f}/s", end="", file=sys.stderr)
    if progress:
        print(f"\rreplay: {number:,} lines read, {replay.counts}", file=sys.stderr)
