"""`session-tally topics create|check`: the two input and three output topics of SPEC section 3.

Topic names come from ``config.Topics`` (``SESSION_TALLY_TOPIC_PREFIX`` and the per-topic variables).
Every topic has replication factor 1 (one broker); the path-tallies topic is log-compacted
(``cleanup.policy=compact``: the latest tally per ``path_id`` is kept), the others use Kafka's default
``delete`` policy. Creation is idempotent; an existing topic is never altered: a partition count or a
cleanup policy that differs from the wanted one is reported as a mismatch (exit status 1), because
changing either silently would break key ordering or lose tallies.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

from session_tally.config import Settings, Topics

REPLICATION_FACTOR = 1
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
METADATA_DEADLINE_S = 15.0


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def wanted_topics(topics: Topics, input_partitions: int = 6, output_partitions: int = 6) -> list[TopicSpec]:
    specs = [TopicSpec(name, input_partitions, "delete") for name in topics.inputs]
    for name in topics.outputs:
        policy = "compact" if name == topics.path_tallies else "delete"
        specs.append(TopicSpec(name, output_partitions, policy))
    return specs


async def ensure_topics(
    bootstrap: str, topics: Topics, input_partitions: int = 6, output_partitions: int = 6
) -> list[str]:
    """Create whichever of the five topics is missing; return one message per mismatch of an existing one."""
    report = await reconcile_topics(bootstrap, wanted_topics(topics, input_partitions, output_partitions))
    return report.mismatches


async def reconcile_topics(bootstrap: str, specs: list[TopicSpec], create: bool = True) -> TopicsReport:
    """Compare the broker's topics with ``specs``; with ``create``, create the missing ones first."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    report = TopicsReport()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        present = set(await admin.list_topics())
        absent = [spec for spec in specs if spec.name not in present]
        if absent and create:
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        REPLICATION_FACTOR,
                        topic_configs={"cleanup.policy": spec.cleanup_policy},
                    )
                    for spec in absent
                ]
            )
            for name, code, message in response.topic_errors:
                if code == 0:
                    report.created.append(name)
                elif code != TOPIC_ALREADY_EXISTS:  # lost a race with another creator: compare below
                    raise RuntimeError(f"creating topic {name!r} failed: error {code}: {message}")
        elif absent:
            report.missing = [spec.name for spec in absent]
        to_compare = [spec for spec in specs if spec.name not in report.missing]
        report.existing = [s.name for s in to_compare if s.name not in report.created]
        if to_compare:
            partitions = await _partition_counts(admin, [s.name for s in to_compare])
            policies = await _cleanup_policies(admin, [s.name for s in to_compare])
            for spec in to_compare:
                if partitions.get(spec.name) != spec.partitions:
                    report.mismatches.append(
                        f"topic {spec.name!r} has {partitions.get(spec.name)} partitions, expected {spec.partitions}"
                    )
                if policies.get(spec.name) != spec.cleanup_policy:
                    report.mismatches.append(
                        f"topic {spec.name!r} has cleanup.policy={policies.get(spec.name)}, "
                        f"expected {spec.cleanup_policy}"
                    )
    finally:
        await admin.close()
    return report


async def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    """Partition count per topic, waiting (with a deadline) for just-created topics to show up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + METADATA_DEADLINE_S
    while True:
        described = await admin.describe_topics(names)
        counts = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        if all(counts.get(n, 0) > 0 for n in names) or loop.time() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def _cleanup_policies(admin: Any, names: list[str]) -> dict[str, str]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs={"cleanup.policy": None}) for name in names]
    )
    policies: dict[str, str] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code != 0:
                continue
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    policies[name] = entry[1]
    return policies


# --- command ----------------------------------------------------------------------------------------


def _print_report(report: TopicsReport) -> None:
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    for name in report.missing:
        print(f"MISSING  {name}")
    for message in report.mismatches:
        print(f"MISMATCH {message}")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    bootstrap = args.bootstrap_servers or settings.kafka_bootstrap_servers
    input_partitions = args.partitions if args.partitions is not None else settings.input_partitions
    specs = wanted_topics(settings.topics, input_partitions, args.output_partitions)
    try:
        report = asyncio.run(reconcile_topics(bootstrap, specs, create=args.action == "create"))
    except Exception as exc:  # connection refused, timeouts: say what to do
        if type(exc).__name__ in {"KafkaConnectionError", "KafkaTimeoutError"}:
            print(
                f"session-tally topics {args.action}: cannot reach Kafka at {bootstrap} ({exc}); "
                "start it with `session-tally services up` and `. .services/env`",
                file=sys.stderr,
            )
            return 2
        raise
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
            "create: create the 2 input and 3 output topics that are missing (replication factor 1; "
            "the path-tallies topic compacted) and report existing ones whose partition count or "
            "cleanup.policy differ. check: only report. Exit status 1 on any mismatch or missing topic. "
            "Names come from SESSION_TALLY_TOPIC_PREFIX and the SESSION_TALLY_*_TOPIC variables."
        ),
    )
    parser.add_argument("action", choices=["create", "check"])
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of each input topic (default: $SESSION_TALLY_INPUT_PARTITIONS or 6)",
    )
    parser.add_argument("--output-partitions", type=int, default=6, help="partitions of each output topic")
    parser.add_argument("--bootstrap-servers", default=None, help="default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092")
    parser.set_defaults(func=run)
