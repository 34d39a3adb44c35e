"""What a real worker publishes matches the published contract: every message on the three output topics,
after the worker processed a worked example, validates against its JSON Schema (2020-12, formats
checked, no undocumented field), carries ``schema_version: 1`` and the key and headers the AsyncAPI
document gives it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from producers.publisher import LINE_HEADER
from session_tally.config import Settings
from storage.messages import REASON_HEADER
from tests.contract_schemas import CONTRACT, assert_valid, load_json
from tests.integration.pipeline_helpers import publish_lines, read_raw_topic, start_worker, stop_worker, wait_idle

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent.parent / "scenarios"


def _asyncapi_key(message_id: str) -> dict[str, object]:
    doc = json.loads((CONTRACT / "asyncapi.json").read_bytes())
    return doc["components"]["messages"][message_id]["bindings"]["kafka"]["key"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["07-authorized-hours", "11-bad-input", "14-late-reschedules-and-disputes"])
def test_worker_outputs_match_the_published_schemas(settings: Settings, tmp_path: Path, name: str) -> None:
    folder = SCENARIOS / name
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")
    at_text = (folder / "at.txt").read_text().strip()
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    worker = start_worker(settings, at_text, tmp_path / "worker.log")
    try:
        wait_idle(settings, ends, timeout_s=90, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    bootstrap, topics = settings.kafka_bootstrap_servers, settings.topics
    tallies = asyncio.run(read_raw_topic(bootstrap, topics.path_tallies))
    statuses = asyncio.run(read_raw_topic(bootstrap, topics.meeting_statuses))
    rejected = asyncio.run(read_raw_topic(bootstrap, topics.rejected))
    assert tallies and statuses, "the scenario publishes tallies and statuses"
    assert _asyncapi_key("pathTally")["pattern"] == _asyncapi_key("meetingStatus")["pattern"]

    for target, records in (("outputs/path-tally.json", tallies), ("outputs/meeting-status.json", statuses)):
        for rec in records:
            assert_valid(target, rec["value"], closed=True)
            doc = load_json(rec["value"])
            assert doc["schema_version"] == 1
            assert rec["key"] == doc["path_id"].encode()
            assert rec["headers"] == []

    if name == "11-bad-input":
        assert len(rejected) >= 10
    for rec in rejected:
        assert_valid("outputs/rejected.json", rec["value"], closed=True)
        doc = load_json(rec["value"])
        assert doc["schema_version"] == 1
        headers = [(k, v) for k, v in rec["headers"]]
        assert headers[-1] == (REASON_HEADER, doc["reason"].encode())
        assert [[k, v.decode()] for k, v in headers[:-1]] == doc["headers"]  # the input's own headers
        assert any(k == LINE_HEADER for k, _v in headers[:-1])
        assert rec["key"] == (None if doc["key"] is None else doc["key"].encode())
