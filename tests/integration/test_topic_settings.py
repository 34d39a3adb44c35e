"""Replication settings of `topics create` and a worker told not to create topics, against the shared
single-node broker (a three-node cluster with replication factor 3 is in test_kafka_cluster_failover.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from session_tally.config import Settings, Topics
from tests.conftest import delete_topics
from tests.integration.pipeline_helpers import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(kafka_bootstrap: str, database_url: str, db_schema: str, topic_prefix: str) -> Iterator[Settings]:
    """Settings for topics that do not exist yet (deleted afterwards if a test created them)."""
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        db_schema=db_schema,
        group_id=f"{topic_prefix}session-tally",
        topics=Topics.from_env(prefix=topic_prefix),
    )
    yield settings
    asyncio.run(delete_topics(kafka_bootstrap, [*settings.topics.inputs, *settings.topics.outputs]))


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | settings.as_env()
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def existing(settings: Settings) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def ask() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(ask()) & {*settings.topics.inputs, *settings.topics.outputs}


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_a_worker_told_not_to_create_topics_names_the_missing_ones(fresh: Settings, how: str) -> None:
    quiet = ("--http-port", "-1", "--log-level", "WARNING")
    if how == "flag":
        result = cli(fresh, "worker", "--no-create-topics", *quiet)
    else:
        result = cli(fresh.replace(create_topics=False), "worker", *quiet)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("session-tally worker: missing topic(s) "), lines[0]
    for name in (*fresh.topics.inputs, *fresh.topics.outputs):
        assert name in lines[0]
    assert "session-tally topics create" in lines[0]
    assert existing(fresh) == set()  # nothing was created behind the operator's back


def test_min_insync_replicas_is_set_and_checked(fresh: Settings) -> None:
    created = cli(fresh, "topics", "create", "--replication-factor", "1", "--min-insync-replicas", "1")
    assert created.returncode == 0, created.stderr
    assert all("replication factor 1, min.insync.replicas 1" in line for line in created.stdout.splitlines())
    assert cli(fresh, "topics", "check", "--min-insync-replicas", "1").returncode == 0
    stricter = cli(fresh.replace(min_insync_replicas=2), "topics", "check", "--replication-factor", "2")
    assert stricter.returncode == 1
    mismatches = [line for line in stricter.stdout.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatches) == 10, stricter.stdout  # replication factor and min.insync.replicas, 5 topics each
    assert any("replication factor 1, expected 2" in line for line in mismatches)
    assert any("min.insync.replicas=1, expected 2" in line for line in mismatches)


def test_impossible_replication_is_one_line(fresh: Settings) -> None:
    result = cli(fresh, "topics", "create", "--replication-factor", "3")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "replication factor" in lines[0].lower() and "brokers" in lines[0], lines[0]
    assert existing(fresh) == set()
    result = cli(fresh, "topics", "create", "--replication-factor", "1", "--min-insync-replicas", "2")
    assert result.returncode == 2 and "every acks=all write would fail" in result.stderr, result.stderr
