"""`session-tally contract generate|check`: the published JSON Schemas and AsyncAPI document.

``generate`` writes the contract folder (default ``docs/contract``) from the code; ``check`` exits 1 with
a summary of the differences when the folder is not what the code generates (the test suite runs it, so
a model change without regenerated files fails CI).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  session-tally contract generate                # rewrite docs/contract/ from the code
  session-tally contract check                   # exit 1 (and say what differs) when it is out of date
  session-tally contract generate --out /tmp/c   # somewhere else

The folder holds asyncapi.json (AsyncAPI 3.0), schemas/ (JSON Schema 2020-12: the envelope, one file per
input event type, the three output messages and replay's document) and examples/events.jsonl.
Exit status: 0 done / up to date, 1 out of date (check), 2 the folder cannot be written or read.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "contract",
        help="generate or check the JSON Schemas and AsyncAPI document (docs/contract/)",
        description="Generate the published contract files from the code, or check that they are up to date.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["generate", "check"])
    p.add_argument(
        "--out",
        "--dir",
        dest="folder",
        default=None,
        metavar="DIR",
        help="the contract folder (default: docs/contract under the current directory)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from session_tally.contract import DEFAULT_DIR, differences, write

    folder = Path(args.folder) if args.folder else DEFAULT_DIR
    try:
        if args.action == "generate":
            written, deleted = write(folder)
            print(f"{folder}: {len(written)} file(s) written, {len(deleted)} stale file(s) deleted")
            for name in written:
                print(f"  wrote   {name}")
            for name in deleted:
                print(f"  deleted {name}")
            return 0
        problems = differences(folder)
    except OSError as exc:
        print(f"session-tally contract {args.action}: {exc}", file=sys.stderr)
        return 2
    if not problems:
        print(f"{folder}: up to date")
        return 0
    for problem in problems:
        print(problem)
    print(
        f"session-tally contract check: {folder} differs from the code in {len(problems)} file(s); "
        "run `session-tally contract generate` and commit the result",
        file=sys.stderr,
    )
    return 1
