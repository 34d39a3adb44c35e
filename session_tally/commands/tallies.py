"""`session-tally tallies republish`: every current tally (or those of chosen paths or a program) on the
path-tallies topic again, each with a new version and the same content (storage/republish.py)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import Any

from session_tally.commands.common import add_kafka_arguments

EPILOG = """\
examples:
  session-tally tallies republish                        # every path's tally (a new dashboard consumer)
  session-tally tallies republish --program prog-1       # the paths of one program
  session-tally tallies republish --path path-1 --path path-2 --why "dashboard cache lost"

The tallies are rebuilt in PostgreSQL from each path's counters, exactly as the workers build them, and
written to the outbox with version + 1 (written back: versions only grow) and as_of = now; the workers'
relays publish them, so a worker must be running. Safe with the workers running: each chunk of paths is
one transaction that locks its path rows. After the tallies topic was lost, create it again first
(`session-tally topics create`). Only paths of programs with session verification on have a tally.
Progress goes to stderr; one line in operator_audit says what was done (`session-tally offsets history`).
Exit status: 0, 1 when nothing matched the paths or program given, 2 when PostgreSQL cannot be reached.
"""

CHUNK = 500  # paths per transaction


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tallies",
        help="publish every current tally again (new versions, same content)",
        description="Tallies in PostgreSQL, published again.",
        epilog="Run 'session-tally tallies republish --help' for examples.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    q = actions.add_parser(
        "republish",
        help="every current tally again, with version + 1",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--path", action="append", default=[], metavar="PATH_ID", help="only this path (repeatable)")
    q.add_argument("--program", default=None, metavar="PROGRAM_ID", help="only the paths of this program")
    q.add_argument("--why", default="", help="why (kept in operator_audit)")
    q.add_argument("--operator", default=None, help="who (default: the login name)")
    add_kafka_arguments(q)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from session_tally.commands.common import settings_from_args

    return asyncio.run(_republish(settings_from_args(args), args))


async def _republish(settings: Any, args: argparse.Namespace) -> int:
    from session_tally.commands.common import Progress, migrated_engine
    from storage import operator
    from storage.republish import paths_with_tallies, republish_tallies

    engine = await migrated_engine(settings)
    try:
        path_ids = await paths_with_tallies(engine, args.path, args.program)
        if not path_ids:
            chosen = [*(f"--path {p}" for p in args.path), *([f"--program {args.program}"] if args.program else [])]
            which = " ".join(["for", *chosen]) if chosen else "(no path has one)"
            print(f"session-tally tallies: no path with a tally {which}", file=sys.stderr)
            return 1
        progress = Progress("republishing tallies")
        done = 0
        for first in range(0, len(path_ids), CHUNK):
            versions = await republish_tallies(engine, path_ids[first : first + CHUNK], time.time_ns() // 1000)
            done += len(versions)
            progress(f"{done:,} of {len(path_ids):,} paths", force=first + CHUNK >= len(path_ids))
        progress.done()
        detail = {"why": args.why, "paths": done, "program": args.program, "only_paths": sorted(args.path)}
        await operator.audit(engine, "tallies republish", args.operator or getpass.getuser(), detail)
    finally:
        await engine.dispose()
    print(f"{done:,} tallies written to the outbox with new versions; the workers' relays publish them")
    return 0
