"""`session-tally publish` against the real broker: topics, keys, line headers, order, counts."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from producers.publisher import LINE_HEADER, file_items, publish_records
from producers.routing import route
from session_tally.config import Topics
from session_tally.traffic import TrafficConfig, generate, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`session-tally ARGS` in a child process (topic names from the arguments, not the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "SESSION_TALLY_TOPIC_PREFIX": ""},
        timeout=timeout_s,
        check=False,
    )


def _events_file(events: int, seed: int) -> bytes:
    """A generated stream with two blank lines in it (skipped, but they count for line numbers)."""
    buffer = io.BytesIO()
    write_jsonl(generate(TrafficConfig(seed=seed), events), buffer)
    lines = buffer.getvalue().split(b"\n")
    lines.insert(40, b"")
    lines.insert(41, b"  \r")
    return b"\n".join(lines)


async def _read_back(bootstrap: str, topics: Topics, expected: int, deadline_s: float = 60.0) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    # no consumer group: every partition of both topics is assigned to this consumer
    consumer = AIOKafkaConsumer(
        *topics.inputs, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + deadline_s
        messages: list[Any] = []
        while len(messages) < expected:
            assert time.monotonic() < deadline, f"read {len(messages)} of {expected} messages before the deadline"
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(records)
        return messages
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_publish_records_routes_keys_and_numbers_every_line(kafka_bootstrap: str, topics: Topics) -> None:
    content = _events_file(3000, seed=11)
    lines = content.split(b"\n")
    items = list(file_items(io.BytesIO(content)))
    assert len(items) == 3000  # the two blank lines are skipped

    counts = await publish_records(kafka_bootstrap, topics, items)

    wanted = Counter(topics.admin_events if kind == "admin" else topics.path_events for kind, *_ in items)
    assert counts == dict(wanted)
    from aiokafka.partitioner import murmur2

    messages = await _read_back(kafka_bootstrap, topics, len(items))
    assert len(messages) == len(items)
    assert Counter(m.topic for m in messages) == wanted
    last_line: dict[tuple[str, int], int] = {}
    for message in messages:
        headers = dict(message.headers)
        line = int(headers[LINE_HEADER].decode())
        assert lines[line - 1].rstrip(b"\n") == message.value  # the header names the line it came from
        kind, key = route(message.value)
        assert message.topic == (topics.admin_events if kind == "admin" else topics.path_events)
        assert message.key == key
        try:
            event = json.loads(message.value)
        except ValueError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("org_id"), str) and kind == "admin":
            assert message.key == event["org_id"].encode()
        if isinstance(event, dict) and isinstance(event.get("path_id"), str) and kind == "path":
            assert message.key == event["path_id"].encode()
        if message.key is not None:  # the Java client's default partitioner (the fixture makes 6 partitions)
            assert message.partition == (murmur2(message.key) & 0x7FFFFFFF) % 6
        where = (message.topic, message.partition)
        assert line > last_line.get(where, 0)  # each partition holds its messages in file order
        last_line[where] = line
    assert 41 not in {int(dict(m.headers)[LINE_HEADER]) for m in messages}


@pytest.mark.integration
def test_publish_command_prints_a_summary(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(_events_file(500, seed=12))
    prefix = topics.admin_events.removesuffix(Topics().admin_events)
    done = _cli("publish", str(events), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix)
    assert done.returncode == 0, done.stderr
    assert "published 500 messages" in done.stderr
    assert f"{topics.admin_events}: " in done.stderr and "2 blank lines skipped" in done.stderr


@pytest.mark.integration
def test_publish_creates_missing_topics_with_their_settings(kafka_bootstrap: str, tmp_path: Path) -> None:
    from session_tally.config import Topics
    from session_tally.topics import ensure_topics
    from tests.conftest import delete_topics

    prefix = f"absent-{os.getpid()}-{uuid.uuid4().hex[:6]}."
    events = tmp_path / "events.jsonl"
    events.write_bytes(_events_file(10, seed=13))
    done = _cli("publish", str(events), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix)
    named = Topics.from_env(prefix=prefix)
    try:
        assert done.returncode == 0, done.stderr
        assert "published 10 messages" in done.stderr
        # created as `topics create` would: checking them again reports no mismatch
        assert asyncio.run(ensure_topics(kafka_bootstrap, named)) == []
    finally:
        asyncio.run(delete_topics(kafka_bootstrap, [*named.inputs, *named.outputs]))


def test_publish_of_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    done = _cli("publish", str(tmp_path / "missing.jsonl"), timeout_s=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot read" in done.stderr


@pytest.mark.integration
async def test_simulate_publishes_live_events_it_also_saves(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    saved = tmp_path / "sim.jsonl"
    prefix = topics.admin_events.removesuffix(Topics().admin_events)
    started = time.time()
    done = _cli(
        "simulate",
        "--rate",
        "400",
        "--events",
        "1200",
        "--save",
        str(saved),
        "--bootstrap",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
    )
    assert done.returncode == 0, done.stderr
    assert "1,200 messages acknowledged" in done.stderr
    lines = saved.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 1200
    messages = await _read_back(kafka_bootstrap, topics, 1200)
    for message in messages:
        line = int(dict(message.headers)[LINE_HEADER])
        assert lines[line - 1] == message.value
        assert (message.topic == topics.admin_events) == (route(message.value)[0] == "admin")
    first_event = json.loads(lines[0])  # the stream starts with the support desk's setup, now
    first = datetime.fromisoformat(first_event["occurred_at"]).timestamp()
    assert started - 5 <= first <= time.time()  # event time is the wall clock
