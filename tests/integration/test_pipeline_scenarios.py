"""The real pipeline (Kafka -> worker process -> PostgreSQL -> Kafka) publishes what `replay` computes,
for worked examples, with a frozen clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from domain.replay import replay
from domain.timefmt import parse_instant
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from tests.integration.pipeline_helpers import publish_lines, start_worker, stop_worker, wait_idle

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent.parent / "scenarios"


def comparable(doc: dict) -> dict:
    for t in doc["tallies"]:
        t.pop("version", None)
        t.pop("as_of", None)
    return doc


@pytest.mark.parametrize("name", ["06-disputes", "10-duplicates-and-waiting", "11-bad-input"])
def test_pipeline_matches_replay(settings: Settings, tmp_path: Path, name: str) -> None:
    folder = SCENARIOS / name
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")
    at_text = (folder / "at.txt").read_text().strip()
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    worker = start_worker(settings, at_text, tmp_path / "worker.log")
    try:
        wait_idle(settings, ends, timeout_s=90, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    snapshot = asyncio.run(read_snapshot(settings.kafka_bootstrap_servers, settings.topics))
    expected = replay(lines, parse_instant(at_text))
    assert comparable(snapshot) == comparable(expected)
