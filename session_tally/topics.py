"""The two input and three output topics of SPEC section 3 (`session-tally topics create|check`, and a
worker at start-up).

Topic names come from ``config.Topics`` (``SESSION_TALLY_TOPIC_PREFIX`` and the per-topic variables).
The replication factor is ``--replication-factor`` / ``SESSION_TALLY_REPLICATION_FACTOR``, by default
3, or the number of brokers when the cluster has fewer; ``min.insync.replicas`` is set on the topics
only when asked (``--min-insync-replicas`` / ``SESSION_TALLY_MIN_INSYNC_REPLICAS``), else the cluster's
default applies. The path-tallies topic is log-compacted (``cleanup.policy=compact``: the latest tally
per ``path_id`` is kept), the others use Kafka's default ``delete`` policy.

Creation is idempotent; an existing topic is never altered: a partition count, cleanup policy or
replication factor that differs from the wanted one (or a ``min.insync.replicas`` that differs from
one asked for) is reported as a mismatch (exit status 1), because changing them silently would break
key ordering, lose tallies or weaken durability. A worker creates missing topics at start-up the same
way unless told not to (``--no-create-topics`` / ``SESSION_TALLY_CREATE_TOPICS=false``): then it stops
with one line naming the missing ones (:func:`prepare_topics`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from producers.kafka_access import KafkaTarget, kafka_options
from session_tally.config import Settings, Topics

DEFAULT_REPLICATION_FACTOR = 3  # or the number of brokers, when fewer
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
METADATA_DEADLINE_S = 15.0


class TopicsError(RuntimeError):
    """Topics cannot be created or are missing where they must exist; the message says which and why."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str
    replication_factor: int | None = None  # None: DEFAULT_REPLICATION_FACTOR, or fewer brokers
    min_insync_replicas: int | None = None  # None: not set on the topic (the cluster's default)


@dataclass(frozen=True)
class TopicState:
    """What the cluster says about one topic."""

    partitions: int
    replication_factor: int
    cleanup_policy: str | None
    min_insync_replicas: str | None

    def describe(self) -> str:
        return (
            f"{self.partitions} partitions, replication factor {self.replication_factor}, "
            f"min.insync.replicas {self.min_insync_replicas}, cleanup.policy {self.cleanup_policy}"
        )


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    states: dict[str, TopicState] = field(default_factory=dict)


def wanted_topics(
    topics: Topics,
    input_partitions: int = 6,
    output_partitions: int = 6,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[TopicSpec]:
    if replication_factor is not None and min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise TopicsError(
            f"min.insync.replicas {min_insync_replicas} > replication factor {replication_factor}: "
            "every acks=all write would fail"
        )
    durability = {"replication_factor": replication_factor, "min_insync_replicas": min_insync_replicas}
    specs = [TopicSpec(name, input_partitions, "delete", **durability) for name in topics.inputs]
    for name in topics.outputs:
        policy = "compact" if name == topics.path_tallies else "delete"
        specs.append(TopicSpec(name, output_partitions, policy, **durability))
    return specs


async def ensure_topics(
    kafka: KafkaTarget,
    topics: Topics,
    input_partitions: int = 6,
    output_partitions: int = 6,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[str]:
    """Create whichever of the five topics is missing; return one message per mismatch of an existing one."""
    specs = wanted_topics(topics, input_partitions, output_partitions, replication_factor, min_insync_replicas)
    report = await reconcile_topics(kafka, specs)
    return report.mismatches


async def prepare_topics(settings: Settings) -> list[str]:
    """A worker's topics at start-up: create the missing ones as `topics create` does (unless
    ``settings.create_topics`` is off: then missing topics raise :class:`TopicsError` naming them);
    returns the mismatches of existing ones (reported, never altered)."""
    specs = wanted_topics(
        settings.topics,
        settings.input_partitions,
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
    )
    report = await reconcile_topics(settings.kafka, specs, create=settings.create_topics)
    if report.missing:
        raise TopicsError(
            f"missing topic(s) {', '.join(report.missing)} on {settings.kafka} and told not to create topics "
            "(SESSION_TALLY_CREATE_TOPICS=false or --no-create-topics): create them with `session-tally topics create`"
        )
    return report.mismatches


async def reconcile_topics(kafka: KafkaTarget, specs: list[TopicSpec], create: bool = True) -> TopicsReport:
    """Compare the cluster's topics with ``specs``; with ``create``, create the missing ones first."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    report = TopicsReport()
    admin = AIOKafkaAdminClient(**kafka_options(kafka), request_timeout_ms=30000)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        default_factor = max(1, min(DEFAULT_REPLICATION_FACTOR, brokers))
        present = set(await admin.list_topics())
        absent = [spec for spec in specs if spec.name not in present]
        if absent and create:
            response = await admin.create_topics([_new_topic(NewTopic, spec, default_factor) for spec in absent])
            for name, code, message in response.topic_errors:
                if code == 0:
                    report.created.append(name)
                elif code != TOPIC_ALREADY_EXISTS:  # lost a race with another creator: compare below
                    raise TopicsError(f"creating topic {name!r} failed: error {code}: {message}")
        elif absent:
            report.missing = [spec.name for spec in absent]
        to_compare = [spec for spec in specs if spec.name not in report.missing]
        report.existing = [s.name for s in to_compare if s.name not in report.created]
        if to_compare:
            report.states = await _topic_states(admin, [s.name for s in to_compare])
            for spec in to_compare:
                report.mismatches += _mismatches(spec, report.states.get(spec.name), default_factor)
    finally:
        await admin.close()
    return report


def _new_topic(new_topic: Any, spec: TopicSpec, default_factor: int) -> Any:
    configs = {"cleanup.policy": spec.cleanup_policy}
    if spec.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(spec.min_insync_replicas)
    return new_topic(spec.name, spec.partitions, spec.replication_factor or default_factor, topic_configs=configs)


def _mismatches(spec: TopicSpec, state: TopicState | None, default_factor: int) -> list[str]:
    if state is None:
        return [f"topic {spec.name!r} could not be described"]
    out = []
    if state.partitions != spec.partitions:
        out.append(f"topic {spec.name!r} has {state.partitions} partitions, expected {spec.partitions}")
    if state.cleanup_policy != spec.cleanup_policy:
        out.append(f"topic {spec.name!r} has cleanup.policy={state.cleanup_policy}, expected {spec.cleanup_policy}")
    factor = spec.replication_factor or default_factor
    if state.replication_factor != factor:
        out.append(f"topic {spec.name!r} has replication factor {state.replication_factor}, expected {factor}")
    if spec.min_insync_replicas is not None and state.min_insync_replicas != str(spec.min_insync_replicas):
        out.append(
            f"topic {spec.name!r} has min.insync.replicas={state.min_insync_replicas}, "
            f"expected {spec.min_insync_replicas}"
        )
    return out


async def _topic_states(admin: Any, names: list[str]) -> dict[str, TopicState]:
    """Partitions, replication factor and configs per topic, waiting (with a deadline) for just-created
    topics to show up."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    loop = asyncio.get_running_loop()
    deadline = loop.time() + METADATA_DEADLINE_S
    while True:
        described = await admin.describe_topics(names)
        layout = {
            t["topic"]: (len(t["partitions"]), max((len(p["replicas"]) for p in t["partitions"]), default=0))
            for t in described
            if t["error_code"] == 0
        }
        if all(layout.get(n, (0, 0))[0] > 0 for n in names) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    wanted = {"cleanup.policy": None, "min.insync.replicas": None}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(wanted)) for name in names]
    )
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code == 0:
                configs[name] = {entry[0]: entry[1] for entry in entries}
    states = {}
    for name, (partitions, factor) in layout.items():
        found = configs.get(name, {})
        states[name] = TopicState(partitions, factor, found.get("cleanup.policy"), found.get("min.insync.replicas"))
    return states


# --- command ----------------------------------------------------------------------------------------
