"""Running operator commands (`session-tally rejected|tallies|audit|offsets`) as processes against a
test's topics and schema, and reading what they changed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from sqlalchemy import create_engine, text

from session_tally.config import Settings
from tests.integration.pipeline_helpers import ROOT, read_raw_topic, worker_env


def cli(settings: Settings, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    """``session-tally ARGS`` in a child process with the test's settings (stdout and stderr captured)."""
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        cwd=ROOT,
        env=worker_env(settings),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes], status: int = 0) -> str:
    """The stdout of a command that must have exited with ``status`` (else the failure, with stderr)."""
    assert result.returncode == status, (
        f"exit {result.returncode} (want {status}) for {result.args[3:]}\n"
        f"stdout: {result.stdout.decode(errors='replace')[-3000:]}\n"
        f"stderr: {result.stderr.decode(errors='replace')[-3000:]}"
    )
    return result.stdout.decode("utf-8", "replace")


async def _ends(bootstrap: str, topics: tuple[str, ...]) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from session_tally.snapshot import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await topic_partitions(bootstrap, t, 30)]
        return {f"{tp.topic}:{tp.partition}": n for tp, n in (await consumer.end_offsets(tps)).items() if n}
    finally:
        await consumer.stop()


def end_offsets(settings: Settings, topics: tuple[str, ...] | None = None) -> dict[str, int]:
    """'topic:partition' -> end offset of the partitions that hold records (the input topics by default):
    what ``wait_idle`` waits for."""
    return asyncio.run(_ends(settings.kafka_bootstrap_servers, topics or settings.topics.inputs))


def query(settings: Settings, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(settings.database_url, connect_args={"options": f"-csearch_path={settings.db_schema}"})
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def topic_docs(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every message of ``topic`` as JSON, in offset order per partition, with its ``_partition``,
    ``_offset`` and ``_headers``."""
    out = []
    for r in asyncio.run(read_raw_topic(settings.kafka_bootstrap_servers, topic)):
        doc = json.loads(r["value"])
        doc.update(_partition=r["partition"], _offset=r["offset"], _headers=r["headers"])
        out.append(doc)
    return out


def latest_tallies(settings: Settings) -> dict[str, dict[str, Any]]:
    """path_id -> the tally with the highest version on the tallies topic."""
    latest: dict[str, dict[str, Any]] = {}
    for doc in topic_docs(settings, settings.topics.path_tallies):
        if doc["path_id"] not in latest or doc["version"] >= latest[doc["path_id"]]["version"]:
            latest[doc["path_id"]] = doc
    return latest
