"""One oversized rejection once blocked the relay for every lane (issue 9, point 6): a 660 KB input record
(300 KB key, 300 KB header) became a 3.66 MB rejected message, and every relay round failed on it with
MessageSizeTooLargeError, so no tally or status of any path went out. Through a real worker, the real
Kafka and PostgreSQL:

- with the default topic settings the rejection is cut (key, value and headers to 64 KiB each, with
  their full sizes), fits the topic, and everything else is published;
- with output topics that refuse what the relay sends (a rejected topic with a small
  ``max.message.bytes``, a tallies topic that refuses every tally): the rejected message the topic still
  refuses is published without its original (``original_removed``), a row Kafka refuses for good is
  kept in ``outbox_dead`` with its error, and no other row waits for them (statuses, small rejections).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from producers.publisher import LINE_HEADER
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from storage import tables as T
from storage.messages import REASON_HEADER
from tests.contract_schemas import assert_valid
from tests.integration.pipeline_helpers import (
    Probe,
    assert_same_document,
    comparable,
    read_raw_topic,
    start_worker_ex,
    stop_worker,
    wait_idle,
)
from tests.integration.robustness_helpers import (
    AT,
    confirmed,
    event,
    expected_document,
    line_headers,
    routed,
    run_async,
    scheduled,
    send_records,
    setup_lines,
)

pytestmark = pytest.mark.integration
KIB64 = 64 * 1024
BIG_KEY = b"k" * 300_000
BIG_HEADER = bytes(range(1, 256)) * 1177  # 300 KB that are not UTF-8 (no 0x00: that is a case of its own)
PATHS = ("path-r1", "path-r2", "path-r3", "path-r4")


def _lines() -> list[bytes]:
    """Setup, then per path two meetings and a confirmation, a record that is not JSON, and the big
    record's value: a note of 60,000 characters (the limit is 2,000: schema_violation)."""
    lines = setup_lines()
    for i, path in enumerate(PATHS, start=1):
        lines += [
            scheduled(f"{path}-a", path, f"{path}-ma", 2),
            scheduled(f"{path}-b", path, f"{path}-mb", 3),
            confirmed(f"{path}-c", path, f"{path}-ma", 2),
            b'{"not json %d' % i,
        ]
    lines.append(
        event("big-note", "path.authorized_hours_set", "2026-03-01T08:00:00Z", path=PATHS[0], role="program_admin",
              data={"authorized_hours": 5, "note": "n" * 60_000})
    )  # fmt: skip
    return lines


def _publish(settings: Settings, lines: list[bytes]) -> dict[str, int]:
    records = routed(settings, lines)
    for i, (topic, _key, value, headers) in enumerate(records):
        if value is not None and value.startswith(b'{"not json'):
            records[i] = (topic, PATHS[int(value.split()[-1]) - 1].encode(), value, headers)
    topic, _key, value, headers = records[-1]
    records[-1] = (topic, BIG_KEY, value, line_headers(len(lines), ("blob", BIG_HEADER)))
    return run_async(send_records(settings.kafka_bootstrap_servers, records))  # type: ignore[no-any-return]


def _run(settings: Settings, tmp_path: Path, ends: dict[str, int]) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT)
    try:
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, log.read_text(errors="replace")[-3000:]


def _rejected(settings: Settings) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    records = run_async(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.rejected, 30))
    return [(json.loads(r["value"]), r) for r in records]


async def _alter(settings: Settings, configs: dict[str, dict[str, str]]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs=c) for t, c in configs.items()])
    finally:
        await admin.close()


def _either(doc: dict[str, Any], name: str) -> bytes | None:
    """The bytes a rejected message keeps of ``name`` (key / original): from its text or its base64."""
    text, b64 = doc[name], doc[f"{name}_base64"]
    return text.encode() if text is not None else (None if b64 is None else base64.b64decode(b64))


def test_an_oversized_record_is_rejected_within_bounds_and_blocks_nothing(settings: Settings, tmp_path: Path) -> None:
    lines = _lines()
    _run(settings, tmp_path, _publish(settings, lines))

    snapshot = comparable(run_async(read_snapshot(settings.kafka_bootstrap_servers, settings.topics)))
    assert_same_document(snapshot, comparable(expected_document(lines, AT, {})))
    big = [(d, r) for d, r in _rejected(settings) if d["event_id"] == "big-note"]
    assert len(big) == 1
    doc, record = big[0]
    assert doc["reason"] == "schema_violation" and "note" in doc["detail"]
    assert len(record["value"]) < 1024 * 1024  # fits the topic's default max.message.bytes
    assert (doc["key_bytes"], doc["key_truncated"], _either(doc, "key")) == (300_000, True, BIG_KEY[:KIB64])
    assert record["key"] == BIG_KEY[:KIB64]
    line = (LINE_HEADER.encode(), str(len(lines)).encode())
    assert (doc["headers_bytes"], doc["headers_truncated"]) == (len(b"".join(line)) + 4 + len(BIG_HEADER), True)
    kept = [(base64.b64decode(k), None if v is None else base64.b64decode(v)) for k, v in doc["headers_base64"]]
    assert kept[0] == line  # whole headers in order, the last one cut: 64 KiB in all
    assert kept[1][0] == b"blob" and kept[1][1] == BIG_HEADER[: KIB64 - len(b"".join(line)) - 4]
    assert record["headers"] == [(REASON_HEADER, b"schema_violation")]  # not exact: only the reason header
    assert _either(doc, "original") == lines[-1] and doc["original_truncated"] is False
    assert_valid("outputs/rejected.json", doc, closed=True)


def test_topics_that_refuse_rows_block_no_other_row(settings: Settings, tmp_path: Path) -> None:
    """The rejected topic takes at most 32 KiB a message and the tallies topic 200 bytes (less than any
    tally): every status and every small rejection is published as usual; the big rejection is published
    without its original; every tally is kept in outbox_dead with Kafka's error."""
    topics = settings.topics
    tiny = {"max.message.bytes": "200", "cleanup.policy": "compact"}  # AlterConfigs replaces the whole config
    run_async(_alter(settings, {topics.rejected: {"max.message.bytes": "32768"}, topics.path_tallies: tiny}))
    lines = _lines()
    _run(settings, tmp_path, _publish(settings, lines))

    snapshot = comparable(run_async(read_snapshot(settings.kafka_bootstrap_servers, topics)))
    want = comparable(expected_document(lines, AT, {}))
    assert want["rejected"][-1]["event_id"] == "big-note"
    want["rejected"][-1]["line"] = None  # its headers went with its original (the line header among them)
    assert snapshot["tallies"] == [] and len(want["tallies"]) == len(PATHS)
    assert_same_document({**snapshot, "tallies": []}, {**want, "tallies": []})
    with Probe(settings) as probe:
        dead = probe.conn.execute(select(T.outbox_dead.c.topic, T.outbox_dead.c.value, T.outbox_dead.c.error)).all()
        probe.conn.rollback()
    assert {row.topic for row in dead} == {"tallies"}, [(r.topic, r.error) for r in dead]
    assert {json.loads(row.value)["path_id"] for row in dead} == set(PATHS)
    assert all("MessageSizeTooLarge" in row.error for row in dead), {row.error for row in dead}

    by_id = {doc["event_id"]: (doc, record) for doc, record in _rejected(settings)}
    doc, record = by_id.pop("big-note")
    assert doc["original_removed"] and "refused by Kafka" in doc["original_removed"]
    assert (doc["key"], doc["key_base64"], doc["original"], doc["original_base64"]) == (None, None, None, None)
    assert (doc["headers"], doc["headers_base64"]) == ([], None)
    assert (doc["key_bytes"], doc["original_bytes"]) == (len(BIG_KEY), len(lines[-1]))  # the sizes stay
    assert record["key"] == BIG_KEY[:1024] and len(record["value"]) < 32768
    assert record["headers"] == [(REASON_HEADER, b"schema_violation")]
    assert_valid("outputs/rejected.json", doc, closed=True)
    for doc, record in by_id.values():  # the small rejections: whole, with their headers
        assert doc["reason"] == "invalid_json" and "original_removed" not in doc
        assert record["headers"][-1] == (REASON_HEADER, b"invalid_json")
        assert_valid("outputs/rejected.json", doc, closed=True)
