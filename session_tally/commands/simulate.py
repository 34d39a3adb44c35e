"""`session-tally simulate`: publish a realistic live mix of events, paced by the wall clock.

The events come from :func:`session_tally.traffic.generate_tagged` in its *live* profile: event times start
now and move at ``--rate`` events per second; meetings start minutes to hours after they are scheduled
and last 5-60 minutes; programs use short windows (auto-confirm PT1H..P1D, late-cancel PT1H..PT3H), so a
running worker's clock visibly moves statuses (upcoming -> unconfirmed -> confirmed / auto-confirmed).
Each record is sent when the wall clock reaches its stream time, so ``occurred_at`` is "now" when it is
published. Bad input, duplicates and early events are mixed in as in every generated stream.

``--save FILE`` also writes what was sent, one message per line; each message's ``session-tally-line``
header is its line number in that file, so ``session-tally replay FILE`` can be compared with a
snapshot of the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, BinaryIO

from producers.publisher import Publisher, PublishError
from session_tally.commands.common import add_kafka_arguments, kafka_target

SHORT = {
    "meeting.scheduled": "scheduled",
    "meeting.rescheduled": "rescheduled",
    "meeting.canceled": "canceled",
    "meeting.confirmation_submitted": "answers",
    "meeting.disputed": "disputes",
    "meeting.dispute_resolved": "resolutions",
    "path.authorized_hours_set": "path-hours",
    "program.settings_updated": "settings",
    "program.created": "programs",
    "organization.session_management_set": "org-switches",
    "duplicate": "duplicates",
}

EXAMPLE = """\
example:
  session-tally simulate                          # 200 events/s until Ctrl-C
  session-tally simulate --rate 50 --duration 600 --save sim.jsonl
  session-tally simulate --events 10000 --bad-fraction 0.05 --topic-prefix demo-
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="publish a realistic live mix of events at a given rate (until Ctrl-C)",
        description=(
            "Publish generated traffic live: event times follow the wall clock, meetings start minutes to "
            "hours from now, short auto-confirm windows; shows a progress line on stderr."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    stop.add_argument("--events", type=int, default=None, metavar="N", help="stop after N events")
    p.add_argument("--seed", type=int, default=1, help="seed of the generator (default 1)")
    p.add_argument("--bad-fraction", type=float, default=0.02, help="share of malformed or invalid messages")
    p.add_argument("--paths", type=int, default=500, help="paths that schedule meetings (default 500)")
    p.add_argument("--programs", type=int, default=20, help="programs (default 20)")
    p.add_argument("--orgs", type=int, default=5, help="organizations (default 5)")
    p.add_argument(
        "--run-tag",
        default=None,
        metavar="TAG",
        help="prefix of the program, path and meeting ids of this run, also salting its event ids "
        "(default: the start second in base 36, e.g. 'tjyb2o-': every run adds new programs, paths and "
        "meetings; give '' to reuse ids)",
    )
    p.add_argument("--save", default=None, metavar="FILE", help="also write the published messages to FILE")
    add_kafka_arguments(p)
    p.set_defaults(func=run)


class Display:
    """The one-line progress display: events sent, rate, counts per kind."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.started = time.monotonic()
        self.last = self.started
        self.every = 1.0 if tty else 10.0
        self.kinds: Counter[str] = Counter()
        self.sent = 0

    def count(self, kind: str) -> None:
        self.sent += 1
        self.kinds["bad" if kind.startswith("bad:") else SHORT.get(kind, kind)] += 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = " ".join(f"{k} {n:,}" for k, n in self.kinds.most_common())
        return f"simulate: {self.sent:,} sent, {self.sent / elapsed:,.0f}/s over {elapsed:,.0f} s | {parts}"

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.show()

    def show(self) -> None:
        if self.tty:
            print("\r\033[K" + self.line(), end="", file=sys.stderr, flush=True)
        else:
            print(self.line(), file=sys.stderr, flush=True)


def run_tag_of(start: datetime) -> str:
    """The default id prefix of a run: its start second in base 36 (6 characters until 2038)."""
    n, digits = int(start.timestamp()), ""
    while n:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return f"{digits or '0'}-"


async def simulate(args: argparse.Namespace, display: Display, save: BinaryIO | None) -> Publisher:
    from session_tally.traffic import TrafficConfig, generate_tagged

    bootstrap, topics = kafka_target(args)
    epoch = datetime.now(UTC).replace(microsecond=0)
    config = TrafficConfig(
        seed=args.seed,
        orgs=args.orgs,
        programs=args.programs,
        paths=args.paths,
        bad_fraction=args.bad_fraction,
        rate=args.rate,
        epoch=epoch,
        # ids of this run: new programs, paths and meetings every run (the organizations stay)
        run_tag=args.run_tag if args.run_tag is not None else run_tag_of(epoch),
    )
    total = args.events if args.events is not None else sys.maxsize
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    base = epoch.timestamp()
    # the wall clock that matches stream time `at`: monotonic, so a clock step does not disturb the pace
    offset = time.monotonic() - (time.time() - base)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    async with Publisher(bootstrap, topics) as publisher:
        for number, tagged in enumerate(generate_tagged(config, total), start=1):
            due = offset + (tagged.at - base)
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stop.set()
                    break
                if now >= due:
                    break
                display.tick()
                wait = min(due - now, 0.5) if deadline is None else min(due - now, 0.5, deadline - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                break
            record = tagged.record
            await publisher.send(record.topic, record.key, record.value, number)
            if save is not None:
                save.write(record.value + b"\n")
            display.count(tagged.kind)
            display.tick()
        display.tick()
    return publisher


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        print("session-tally simulate: --rate must be positive", file=sys.stderr)
        return 2
    display = Display(sys.stderr.isatty())
    save: BinaryIO | None = None
    try:
        if args.save:
            save = open(args.save, "wb")  # noqa: SIM115
    except OSError as exc:
        print(f"session-tally simulate: cannot write {args.save}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        publisher = asyncio.run(simulate(args, display, save))
    except PublishError as exc:
        print(f"\nsession-tally simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        if save is not None:
            save.close()
    display.show()
    if display.tty:
        print(file=sys.stderr)
    per_topic = ", ".join(f"{name}: {n:,}" for name, n in publisher.counts.items())
    print(f"simulate: {sum(publisher.counts.values()):,} messages acknowledged ({per_topic})", file=sys.stderr)
    if publisher.failed:
        print(f"session-tally simulate: not published: {publisher.failed}", file=sys.stderr)
        return 1
    return 0
