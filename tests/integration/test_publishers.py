"""docs/publishers.md holds: clients in other languages publish with the documented settings and the
pipeline sees what `session-tally publish` would have sent.

- kcat (librdkafka, Debian's package) and confluent-kafka (librdkafka, PyPI) with
  ``partitioner=murmur2_random`` put every key on the partition `session-tally publish` (murmur2, like
  the Java client) puts it; with librdkafka's default partitioner (consistent_random, CRC32) some keys
  land elsewhere, which is why the page insists;
- a worked example published line by line, alternately by kcat and by confluent-kafka (each line
  acknowledged before the next is sent, as the page says), ends, through a real worker, equal to replay;
- the page's own kcat (with jq) and confluent-kafka examples, run as written (topic names and the
  broker address substituted), publish a file that a real worker applies as replay does.

kcat and jq are installed by .ci/run (apt-get); without them these tests fail under CI=true and skip elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from domain.events import ADMIN_TYPES
from domain.replay import replay
from domain.timefmt import parse_instant
from producers.publisher import LINE_HEADER, publish_records
from session_tally.config import Settings, Topics
from session_tally.snapshot import read_records, read_snapshot
from tests.integration.pipeline_helpers import comparable, start_worker, stop_worker, wait_idle
from tests.needs import tool

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent.parent / "scenarios"
#: the settings docs/publishers.md gives for librdkafka clients
MURMUR2 = {"partitioner": "murmur2_random", "enable.idempotence": "true", "acks": "all"}


@pytest.fixture
def kcat() -> str:
    return tool("kcat")


def _kcat_produce(
    kcat: str,
    bootstrap: str,
    topic: str,
    key: bytes | None,
    value_file: Path,
    headers: dict[str, str],
    config: dict[str, str],
) -> None:
    """One message (the file's exact bytes) with kcat, as docs/publishers.md shows; returns once acked."""
    args = [kcat, "-P", "-b", bootstrap, "-t", topic, "-X", "message.timeout.ms=30000"]
    for name, value in config.items():
        args += ["-X", f"{name}={value}"]
    if key is not None:
        args += ["-k", key.decode()]
    for name, value in headers.items():
        args += ["-H", f"{name}={value}"]
    done = subprocess.run([*args, str(value_file)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "failed" not in done.stderr.lower(), done.stderr


def _kcat_produce_keys(kcat: str, bootstrap: str, topic: str, lines: list[str], config: dict[str, str]) -> None:
    """Many keyed messages in one kcat run: stdin lines ``key<TAB>value`` (``-K '\\t'``, as documented)."""
    args = [kcat, "-P", "-b", bootstrap, "-t", topic, "-K", "\\t", "-X", "message.timeout.ms=30000"]
    for name, value in config.items():
        args += ["-X", f"{name}={value}"]
    done = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "failed" not in done.stderr.lower(), done.stderr


class Confluent:
    """A confluent-kafka producer configured as docs/publishers.md says (or with librdkafka's defaults)."""

    def __init__(self, bootstrap: str, config: dict[str, str]) -> None:
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 30000, **config})
        self.errors: list[str] = []

    def _report(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str] | None = None) -> None:
        self.producer.produce(
            topic, value=value, key=key, headers=list((headers or {}).items()), on_delivery=self._report
        )

    def flush(self) -> None:
        assert self.producer.flush(60) == 0, "confluent-kafka: messages still in flight after 60 s"
        assert self.errors == []


def _placement(records: list[Any], tag: bytes) -> dict[bytes, int]:
    """key -> partition of the records whose value is ``tag``."""
    out: dict[bytes, int] = {}
    for r in records:
        if r.value == tag:
            assert out.setdefault(r.key, r.partition) == r.partition, f"{tag!r}: {r.key!r} on two partitions"
    return out


def test_documented_settings_put_keys_where_session_tally_publish_does(
    kafka_bootstrap: str, topics: Topics, kcat: str
) -> None:
    topic = topics.path_events
    keys = [f"path-{i}".encode() for i in range(1, 41)] + [b"org-1", b"path-team-blue", b"7d1c3c1e-3c55-4c59"]
    clients = ["session-tally", "kcat murmur2", "kcat default", "confluent murmur2", "confluent default"]

    asyncio.run(publish_records(kafka_bootstrap, topics, [("path", k, b"session-tally", None) for k in keys]))
    _kcat_produce_keys(kcat, kafka_bootstrap, topic, [f"{k.decode()}\tkcat murmur2" for k in keys], MURMUR2)
    _kcat_produce_keys(kcat, kafka_bootstrap, topic, [f"{k.decode()}\tkcat default" for k in keys], {})
    for name, config in (("confluent murmur2", MURMUR2), ("confluent default", {})):
        client = Confluent(kafka_bootstrap, config)
        for k in keys:
            client.produce(topic, name.encode(), k)
        client.flush()

    records = asyncio.run(read_records(kafka_bootstrap, topic))
    placed = {name: _placement(records, name.encode()) for name in clients}
    assert all(len(p) == len(keys) for p in placed.values()), {n: len(p) for n, p in placed.items()}
    reference = placed["session-tally"]
    assert placed["kcat murmur2"] == reference
    assert placed["confluent murmur2"] == reference
    # librdkafka's default (consistent_random = CRC32) disagrees for some keys: the warning is real
    for name in ("kcat default", "confluent default"):
        moved = sorted(k.decode() for k in keys if placed[name][k] != reference[k])
        assert moved, f"{name} put every key where murmur2 does"
    assert (reference[b"path-1"], placed["kcat default"][b"path-1"]) == (3, 5)  # the example of docs/publishers.md


def _documented_route(raw: bytes, topics: Topics) -> tuple[str, bytes | None]:
    """Topic and key as docs/publishers.md states them (not session-tally's own code)."""
    doc = json.loads(raw)
    if doc["type"] in ADMIN_TYPES:
        return topics.admin_events, doc["org_id"].encode()
    return topics.path_events, doc["path_id"].encode()


async def _end_offsets(bootstrap: str, names: tuple[str, ...]) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from session_tally.snapshot import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in names for p in await topic_partitions(bootstrap, t)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {f"{tp.topic}:{tp.partition}": off for tp, off in ends.items() if off > 0}


def _alternate(lines: list[bytes]) -> Iterator[tuple[str, int, bytes]]:
    """(client, 1-based line, bytes) for every non-blank line: kcat on odd lines, confluent-kafka on even."""
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            yield ("kcat" if number % 2 else "confluent"), number, raw


@pytest.mark.parametrize("name", ["14-late-reschedules-and-disputes", "17-authorized-hours-ties"])
def test_scenario_published_half_by_kcat_half_by_confluent_kafka_equals_replay(
    settings: Settings, tmp_path: Path, kcat: str, name: str
) -> None:
    folder = SCENARIOS / name
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")
    at_text = (folder / "at.txt").read_text().strip()
    bootstrap, topics = settings.kafka_bootstrap_servers, settings.topics
    confluent = Confluent(bootstrap, MURMUR2)
    sent = {"kcat": 0, "confluent": 0}
    paths_by_client: dict[bytes, set[str]] = {}
    for client, number, raw in _alternate(lines):
        topic, key = _documented_route(raw, topics)
        headers = {LINE_HEADER: str(number)}
        if client == "kcat":
            value = tmp_path / f"line-{number}.json"
            value.write_bytes(raw)
            _kcat_produce(kcat, bootstrap, topic, key, value, headers, MURMUR2)
        else:
            confluent.produce(topic, raw, key, headers)
            confluent.flush()  # acknowledged before the next line is sent
        sent[client] += 1
        if topic == topics.path_events and key is not None:
            paths_by_client.setdefault(key, set()).add(client)
    assert sent["kcat"] > 3 and sent["confluent"] > 3
    assert any(len(c) == 2 for c in paths_by_client.values()), "some path is published by both clients"

    ends = asyncio.run(_end_offsets(bootstrap, topics.inputs))
    assert sum(ends.values()) == sum(sent.values())
    worker = start_worker(settings, at_text, tmp_path / "worker.log")
    try:
        wait_idle(settings, ends, timeout_s=90, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    snapshot = asyncio.run(read_snapshot(bootstrap, topics))
    expected = replay(lines, parse_instant(at_text))
    assert expected["tallies"], "the scenario has tallies to compare"
    assert comparable(snapshot) == comparable(expected)


# --------------------------------------------------------------------- the examples of docs/publishers.md

PUBLISHERS_MD = Path(__file__).resolve().parents[2] / "docs" / "publishers.md"


def _doc_block(heading: str, language: str, nth: int = 0) -> str:
    """The ``nth`` fenced ``language`` block under the ``### heading`` of docs/publishers.md."""
    text = PUBLISHERS_MD.read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)
    return blocks[nth]


@pytest.fixture
def jq() -> str:
    return tool("jq")


@pytest.mark.parametrize(
    ("example", "name"), [("kcat", "02-late-cancel-window"), ("python", "17-authorized-hours-ties")]
)
def test_the_documented_examples_publish_a_file_the_worker_applies_as_replay_does(
    settings: Settings, tmp_path: Path, kcat: str, jq: str, example: str, name: str
) -> None:
    folder = SCENARIOS / name
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")
    at_text = (folder / "at.txt").read_text().strip()
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines))
    bootstrap, topics = settings.kafka_bootstrap_servers, settings.topics
    prefix = topics.admin_events.removesuffix(Topics().admin_events)
    if example == "kcat":
        code = _doc_block("kcat", "bash", nth=1).replace("session-mgmt.", prefix + "session-mgmt.")
        args = ["bash", "-euo", "pipefail", "-c", code]
    else:
        code = _doc_block("confluent-kafka (Python)", "python")
        code = code.replace('"session-mgmt.', f'"{prefix}session-mgmt.').replace("127.0.0.1:9092", bootstrap)
        args = [sys.executable, "-c", code]
    assert prefix + "session-mgmt." in code
    done = subprocess.run(
        args, cwd=tmp_path, env={**os.environ, "KAFKA": bootstrap}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

    ends = asyncio.run(_end_offsets(bootstrap, topics.inputs))
    assert sum(ends.values()) == sum(1 for raw in lines if raw.strip())
    for record in asyncio.run(read_records(bootstrap, topics.path_events)):
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 6, record.key  # as the Java client
    worker = start_worker(settings, at_text, tmp_path / "worker.log")
    try:
        wait_idle(settings, ends, timeout_s=90, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    snapshot = asyncio.run(read_snapshot(bootstrap, topics))
    expected = replay(lines, parse_instant(at_text))
    assert expected["tallies"] and not expected["rejected"]
    assert comparable(snapshot) == comparable(expected)
