"""`session-tally topics create|check` (session_tally/topics.py holds what they do)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: building the command line must not load the settings class
    from session_tally.topics import TopicsReport


def _print_report(report: TopicsReport) -> None:
    def state(name: str) -> str:
        found = report.states.get(name)
        return f"  ({found.describe()})" if found is not None else ""

    for name in report.created:
        print(f"created  {name}{state(name)}")
    for name in report.existing:
        print(f"exists   {name}{state(name)}")
    for name in report.missing:
        print(f"MISSING  {name}")
    for message in report.mismatches:
        print(f"MISMATCH {message}")


def run(args: argparse.Namespace) -> int:
    from producers.kafka_errors import kafka_problem
    from session_tally.config import Settings
    from session_tally.topics import reconcile_topics, wanted_topics

    settings = Settings.from_command_line(args)  # --partitions and the others override their variables
    kafka = settings.kafka
    specs = wanted_topics(
        settings.topics,
        settings.input_partitions,
        args.output_partitions,
        settings.replication_factor,
        settings.min_insync_replicas,
    )
    try:
        report = asyncio.run(reconcile_topics(kafka, specs, create=args.action == "create"))
    except Exception as exc:  # connection refused, refused credentials, timeouts: say what to do
        problem = kafka_problem(exc, kafka)
        if problem is None:
            raise
        print(f"session-tally topics {args.action}: {problem}", file=sys.stderr)
        return 2
    _print_report(report)
    if report.missing or report.mismatches:
        print(
            f"session-tally topics {args.action}: {len(report.missing)} missing, "
            f"{len(report.mismatches)} mismatched (existing topics are never altered)",
            file=sys.stderr,
        )
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "topics",
        help="create or check the input and output topics",
        description=(
            "create: create the 2 input and 3 output topics that are missing (the path-tallies topic "
            "compacted) and report existing ones whose partition count, cleanup.policy, replication factor "
            "or min.insync.replicas differ. check: only report. Exit status 1 on any mismatch or missing "
            "topic, 2 when Kafka cannot be reached. Names come from SESSION_TALLY_TOPIC_PREFIX and the "
            "SESSION_TALLY_*_TOPIC variables; the connection from KAFKA_BOOTSTRAP_SERVERS and the "
            "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables."
        ),
        epilog=TOPICS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["create", "check"])
    parser.add_argument("--output-partitions", type=int, default=6, help="partitions of each output topic")
    parser.set_defaults(func=run, setting_flags="topics")  # --partitions, --replication-factor, ...: cli.py


TOPICS_EXAMPLES = """\
examples:
  session-tally topics create
  session-tally topics create --replication-factor 3 --min-insync-replicas 2
  SESSION_TALLY_TOPIC_PREFIX=test- session-tally topics check
  KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_MECHANISM=SCRAM-SHA-512 KAFKA_SASL_USERNAME=svc \\
    KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka KAFKA_SSL_CAFILE=ca.pem session-tally topics check
"""
