"""Beyond one broker: a worker keeps its promises while the leader of a busy partition dies.

A private three-node KRaft cluster on loopback (localsvc/kafka_cluster.py: replication factor 3,
``min.insync.replicas=2`` for the project's topics, made by `session-tally topics create`, and for the
internal topics). The stream of the equivalence tests is published live by an idempotent ``acks=all``
producer while one worker consumes it; midway the node leading the busiest path-events partition is
SIGKILLed (no controlled shutdown: leadership moves only once the controller fences it). Afterwards:

- every input line is in the input topics exactly once (the producer's retries across the leader change
  neither lost nor doubled a line);
- the end state equals `replay` of the same stream;
- on the output topics, read raw, no (entity, version) carries two contents and no version goes back;
- the killed node, started again, catches up: every partition has three in-sync replicas again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.publisher import LINE_HEADER
from session_tally.config import Settings, Topics
from session_tally.localsvc.kafka_cluster import LocalKafkaCluster, partition_leaders, wait_leader_elsewhere
from tests.integration.pipeline_helpers import (
    ROOT,
    BackgroundPublish,
    Probe,
    check_rejected,
    check_versions,
    read_raw_topic,
    wait_until,
)
from tests.integration.test_pipeline_equivalence import CHUNK_INTERVAL_S, CHUNKS, Group, _midway, stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalKafkaCluster]:
    kafka = LocalKafkaCluster(tmp_path / "cluster", size=3)
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | settings.as_env()
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def ask() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(6)]
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(ask())


def led_by(bootstrap: str, topic: str, node: int) -> list[int]:
    """The partitions of ``topic`` that ``node`` leads."""
    return sorted(p for p, (leader, _isr) in asyncio.run(partition_leaders(bootstrap, topic)).items() if leader == node)


def test_leader_of_a_busy_partition_killed_midstream_equal_replay(
    cluster: LocalKafkaCluster, database_url: str, db_schema: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=cluster.bootstrap,
        database_url=database_url,
        db_schema=db_schema,
        group_id=f"{topic_prefix}session-tally",
        topics=Topics.from_env(prefix=topic_prefix),
    )
    created = cli(settings, "topics", "create", "--replication-factor", "3", "--min-insync-replicas", "2")
    assert created.returncode == 0, created.stderr
    checked = cli(settings, "topics", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 5 and all("replication factor 3, min.insync.replicas 2" in line for line in lines), lines
    # the workers must not be able to weaken this: they create nothing (the topics exist) and check only
    worker_settings = settings.replace(create_topics=False)

    group = Group(settings, tmp_path, worker_settings=worker_settings)
    try:
        group.start("w1")
        publish = BackgroundPublish(settings, stream()[0], chunks=CHUNKS, interval_s=CHUNK_INTERVAL_S)
        _midway(settings, publish, group, low=0.3)

        path_topic = settings.topics.path_events
        ends = end_offsets(cluster.bootstrap, path_topic)
        busiest = max(ends, key=lambda p: ends[p])
        leaders = asyncio.run(partition_leaders(cluster.bootstrap, path_topic))
        victim = leaders[busiest][0]
        led = {
            topic: led_by(cluster.bootstrap, topic, victim)
            for topic in (*settings.topics.inputs, *settings.topics.outputs)
        }
        with Probe(settings) as probe:
            applied_before = probe.offsets().get(f"{path_topic}:{busiest}", 0)
        killed_at = time.monotonic()
        cluster.kill(victim)
        alive = [b for n, b in cluster.nodes.items() if n != victim]
        survivors = ",".join(node.bootstrap for node in alive)
        failover_s = wait_leader_elsewhere(survivors, path_topic, busiest, victim)
        with Probe(settings) as probe:
            wait_until(
                lambda: probe.offsets().get(f"{path_topic}:{busiest}", 0) > applied_before,
                90,
                f"the worker to apply {path_topic}[{busiest}] again after the leader died",
                procs=group.running(),
            )
        resumed_s = time.monotonic() - killed_at
        published = publish.join(timeout_s=120)
        group.finish_and_compare(published)

        # the input: every line exactly once, whatever the producer retried across the leader change
        seen: Counter[int] = Counter()
        for topic in settings.topics.inputs:
            for record in asyncio.run(read_raw_topic(survivors, topic)):
                numbers = [int(v) for k, v in record["headers"] if k == LINE_HEADER]
                seen.update(numbers)
        want = {n for n, raw in enumerate(stream()[0], start=1) if raw.strip()}
        doubled = sorted(n for n, c in seen.items() if c > 1)
        assert set(seen) == want and not doubled, (sorted(want - set(seen))[:10], doubled[:10])

        # the outputs: no version with two contents, none going back
        reports = {
            "tallies": check_versions(asyncio.run(read_raw_topic(survivors, settings.topics.path_tallies)), "path_id"),
            "statuses": check_versions(
                asyncio.run(read_raw_topic(survivors, settings.topics.meeting_statuses)), "meeting_id"
            ),
            "rejected": check_rejected(asyncio.run(read_raw_topic(survivors, settings.topics.rejected))),
        }

        # the dead node comes back and catches up: three in-sync replicas everywhere again
        restart_s = cluster.start_node(victim)

        def all_in_sync() -> bool:
            for topic in [*settings.topics.inputs, *settings.topics.outputs]:
                if any(len(isr) < 3 for _l, isr in asyncio.run(partition_leaders(cluster.bootstrap, topic)).values()):
                    return False
            return True

        wait_until(all_in_sync, 120, "the restarted node back in every in-sync replica set", interval_s=0.5)
        print(
            f"\nkilled node {victim} (led {led}) at {applied_before} applied records of {path_topic}[{busiest}]; "
            f"new leader after {failover_s:.1f} s, worker applying that partition again after {resumed_s:.1f} s; "
            f"node restarted in {restart_s:.1f} s; {sum(seen.values())} input records; outputs {reports}"
        )
    finally:
        group.kill_all()
