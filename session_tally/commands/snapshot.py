"""`session-tally snapshot`: what the pipeline published, in the same shape as `replay`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

EPILOG = """\
Reads the path-tallies, meeting-statuses and rejected topics from the beginning to their current end
and prints {"tallies": [...], "meetings": [...], "rejected": [...]}: the latest tally per path and the
latest status per meeting (highest version), and the rejected events (with the line numbers that
`session-tally publish` attached). Compare it with `replay` for the same file and time:

  session-tally publish events.jsonl
  session-tally worker --clock 2026-03-10T12:00:00Z   # until it is idle
  diff <(session-tally snapshot --pretty) <(session-tally replay events.jsonl --at 2026-03-10T12:00:00Z --pretty)
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="print the latest published tallies, statuses and rejections (same JSON as replay)",
        description="Read the output topics and print the replay-shaped document.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--topic-prefix", help="prefix of the topic names (default SESSION_TALLY_TOPIC_PREFIX)")
    p.add_argument("--pretty", action="store_true", help="indent the JSON output")
    p.add_argument("--timeout", type=float, default=120.0, help="give up reading after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from producers.kafka_errors import kafka_problem
    from session_tally.config import Settings, Topics
    from session_tally.snapshot import read_snapshot

    settings = Settings.from_env()
    topics = Topics.from_env(prefix=args.topic_prefix) if args.topic_prefix is not None else settings.topics
    kafka = replace(settings.kafka, bootstrap_servers=args.bootstrap) if args.bootstrap else settings.kafka
    try:
        doc = asyncio.run(read_snapshot(kafka, topics, args.timeout))
    except Exception as exc:
        print(f"session-tally snapshot: {kafka_problem(exc, kafka) or exc}", file=sys.stderr)
        return 2
    json.dump(doc, sys.stdout, indent=2 if args.pretty else None)
    sys.stdout.write("\n")
    return 0
