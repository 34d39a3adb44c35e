"""`session-tally audit (--program P | --path P)`: the admin-only texts of a program's paths or of one
path (path notes with the hours set, dispute comments, resolution notes with their outcome), with who
wrote them and when, from PostgreSQL's ``admin_audit`` (storage/reads.py). They never appear on any
topic; this command is for operators with access to the database."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

EPILOG = """\
examples:
  session-tally audit --program prog-1                 # every note and dispute text of its paths
  session-tally audit --path path-1 --json             # one JSON object per line
  session-tally audit --program prog-1 --limit 20      # the 20 newest

Newest first (by the event's occurred_at, then by recording order). Each entry: when it happened
(occurred_at, the event's time) and when the pipeline recorded it (recorded_at, database time), the
kind (path_note with the authorized hours set, dispute, dispute_resolution with its outcome), the path
and meeting, the actor's id and role, and the text.
Exit status: 0, 1 when the program or path does not exist, 2 when PostgreSQL cannot be reached.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="admin-only notes and dispute texts of a program or path",
        description="The admin-only audit (admin_audit in PostgreSQL): who wrote what, when.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--program", metavar="PROGRAM_ID", help="the texts of every path of this program")
    which.add_argument("--path", metavar="PATH_ID", help="the texts of this path")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N entries, newest (default 1000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from session_tally.config import Settings

    return asyncio.run(_audit(Settings.from_env(), args))


async def _audit(settings: Any, args: argparse.Namespace) -> int:
    from session_tally.commands.common import migrated_engine
    from storage import reads

    engine = await migrated_engine(settings)
    try:
        if args.program is not None:
            if await reads.program(engine, args.program) is None:
                return _refuse(f"no program {args.program}")
            path_ids = await reads.program_paths(engine, args.program)
        else:
            if await reads.path_program(engine, args.path) is None:
                return _refuse(f"no path {args.path}")
            path_ids = [args.path]
        rows = await reads.audit(engine, path_ids, limit=max(args.limit, 0))
    finally:
        await engine.dispose()
    entries = [entry(r) for r in rows]
    if args.json:
        for e in entries:
            sys.stdout.write(json.dumps(e, ensure_ascii=False) + "\n")
    else:
        for e in entries:
            print(_text(e))
        if not entries:
            print(f"no admin-only text for {'program ' + args.program if args.program else 'path ' + args.path}")
    if len(rows) == args.limit:
        print(f"showing the newest {args.limit}; --limit N for more", file=sys.stderr)
    return 0


def entry(r: Any) -> dict[str, Any]:
    """One audit row as JSON (instants in RFC 3339)."""
    from domain.tally import json_number
    from domain.timefmt import format_instant

    return {
        "kind": r.kind,
        "occurred_at": format_instant(r.occurred_at),
        "recorded_at": None if r.recorded_at is None else r.recorded_at.isoformat(),
        "path_id": r.path_id,
        "meeting_id": r.meeting_id,
        "actor_id": r.actor_id,
        "actor_role": r.actor_role,
        "event_id": r.event_id,
        "authorized_hours": json_number(r.authorized_hours),
        "outcome": r.outcome,
        "text": r.text,
    }


_KINDS = {"path_note": "path note", "dispute": "dispute", "dispute_resolution": "resolution"}


def _refuse(message: str) -> int:
    print(f"session-tally audit: {message}", file=sys.stderr)
    return 1


def _text(e: dict[str, Any]) -> str:
    what = _KINDS.get(e["kind"], e["kind"])
    if e["kind"] == "path_note":
        hours = e["authorized_hours"]
        what += f" (hours set: {'program value' if hours is None else hours})"
    elif e["outcome"]:
        what += f" ({e['outcome']})"
    where = e["path_id"] + (f" meeting {e['meeting_id']}" if e["meeting_id"] else "")
    head = f"{e['occurred_at']}  {what}  {where}  by {e['actor_id']} ({e['actor_role']})  recorded {e['recorded_at']}"
    text = e["text"] if e["text"] is not None else "(no text)"
    return head + "\n" + "\n".join("    " + line for line in (text.splitlines() or [""]))
