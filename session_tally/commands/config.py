"""`session-tally config show|table`: the settings in force, and the table of every variable."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  session-tally config show                    # every variable: value (secrets masked), default or environment
  SESSION_TALLY_BATCH_SIZE=500 session-tally config show --json
  session-tally config table                   # the Markdown table of README's "Configuration"
  session-tally config table --write README.md # rewrite the table between README's markers
  session-tally config table --check README.md # exit 1 when README's table is not what the code says

show exits 2 with one line naming the variable when a value is bad (as every command does), and warns
on stderr about KAFKA_* / SESSION_TALLY_* variables that are not settings (typos).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="show the settings in force, or print the table of every variable",
        description="Show the settings the environment gives (and where each came from), or print the "
        "Markdown table of every variable generated from the settings class.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["show", "table"])
    p.add_argument("--json", action="store_true", help="show: one JSON document instead of aligned text")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--write", metavar="FILE", help="table: replace the table between FILE's markers")
    where.add_argument("--check", metavar="FILE", help="table: exit 1 when FILE's table differs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return _show(args.json) if args.action == "show" else _table(args.write, args.check)


def _show(as_json: bool) -> int:
    from session_tally.config_report import show

    rows, unknown = show()
    if as_json:
        document = {
            "settings": [
                {"variable": r.variable, "value": r.value, "source": r.source, "secret": r.secret} for r in rows
            ],
            "unknown": unknown,
        }
        print(json.dumps(document, indent=2))
    else:
        width = max(len(r.variable) for r in rows)
        value_width = min(60, max(len(r.value) for r in rows))
        for r in rows:
            print(f"{r.variable:<{width}}  {r.value:<{value_width}}  {r.source}")
    for name in unknown:
        print(f"session-tally config: {name} is set but is not a session-tally setting (a typo?)", file=sys.stderr)
    return 0


def _table(write: str | None, check: str | None) -> int:
    from session_tally.config_report import markdown_table, with_table

    table = markdown_table()
    target = write or check
    if target is None:
        sys.stdout.write(table)
        return 0
    path = Path(target)
    try:
        current = path.read_text(encoding="utf-8")
        wanted = with_table(current, table)
    except (OSError, ValueError) as exc:
        print(f"session-tally config table: {path}: {exc}", file=sys.stderr)
        return 2
    if write:
        if wanted != current:
            path.write_text(wanted, encoding="utf-8")
        print(f"{path}: configuration table {'rewritten' if wanted != current else 'up to date'}")
        return 0
    if wanted != current:
        print(
            f"session-tally config table: {path}'s table differs from the settings class; "
            f"run `session-tally config table --write {path}` and commit the result",
            file=sys.stderr,
        )
        return 1
    print(f"{path}: configuration table up to date")
    return 0
