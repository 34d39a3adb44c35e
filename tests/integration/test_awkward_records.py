"""Records that are legal Kafka but awkward: a header without a value (Kafka allows null header values),
no key, no value (a tombstone). Each must end on the rejected topic with its reason and its headers
as they came; none may hold up its partition (a batch that fails on one is retried for ever)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from session_tally.config import Settings
from tests.integration.pipeline_helpers import read_raw_topic, start_worker_ex, stop_worker, wait_until

pytestmark = pytest.mark.integration

EARLY = {  # names a program that never comes: waits, then expires as unknown_program
    "event_id": "early-1",
    "type": "meeting.scheduled",
    "schema_version": 1,
    "occurred_at": "2026-03-01T09:00:00Z",
    "org_id": "org-x",
    "program_id": "prog-never",
    "path_id": "path-x",
    "actor": {"id": "u", "role": "participant"},
    "data": {"meeting_id": "m-x", "start": "2026-03-10T10:00:00Z", "end": "2026-03-10T11:00:00Z"},
}


async def publish_awkward(settings: Settings) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        topic = settings.topics.path_events
        await producer.send_and_wait(topic, b"{not json", key=b"k1", headers=[("trace", None), ("ok", b"1")])
        await producer.send_and_wait(topic, json.dumps(EARLY).encode(), key=None, headers=[("trace", None)])
        await producer.send_and_wait(topic, None, key=b"k3", headers=[("trace", None)])
    finally:
        await producer.stop()


def test_null_header_values_missing_keys_and_tombstones_are_rejected_not_stuck(
    settings: Settings, tmp_path: Path
) -> None:
    asyncio.run(publish_awkward(settings))
    worker = start_worker_ex(settings, tmp_path / "worker.log", park_timeout_s=1.0)
    try:

        def rejected() -> list[dict[str, Any]] | None:
            records = asyncio.run(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.rejected, 10))
            return [json.loads(r["value"]) for r in records] if len(records) >= 3 else None

        docs = wait_until(rejected, 60, "three rejected records", interval_s=0.5, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    not_json = next(d for d in docs if d["original"] == "{not json")
    early = next(d for d in docs if d["event_id"] == "early-1")
    tombstone = next(d for d in docs if d["original_bytes"] is None)
    assert not_json["reason"] == "invalid_json" and not_json["headers"] == [["trace", None], ["ok", "1"]]
    assert early["reason"] == "unknown_program" and early["key"] is None
    assert early["headers"] == [["trace", None]]  # kept through the waiting table
    assert tombstone["reason"] == "invalid_json" and tombstone["key"] == "k3"
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "failed; it will be redelivered" not in log, log[-3000:]
