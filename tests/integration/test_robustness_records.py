"""Records whose bytes once stopped a consumer or came out changed (issue 9, points 1, 5 and 9), through a
real worker, the real Kafka and PostgreSQL:

- a header KEY that is not UTF-8 (kcat, ``-H $'\\xff\\xfe=v'``), on the admin and on the path topic: the
  record is read (consumers/tolerant_records.py), the partition goes on, the result equals replay;
- U+0000 in a path note, in an event_id, and a 0x00 byte in a header value of a rejected record: each is
  rejected (SPEC section 3), nothing behind them waits, an event parked before them does not expire;
- the rejected topic keeps bytes: a header value ``ff fe 6f 6b`` comes back exactly (headers_base64), a
  900 KB message keeps its first 64 KiB as text when it is UTF-8 (base64 when it is not), every field
  matches docs/contract/schemas/outputs/rejected.json (no undocumented field) and docs/topics.md.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from producers.publisher import LINE_HEADER
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from storage.messages import REASON_HEADER
from tests.contract_schemas import assert_valid
from tests.integration.pipeline_helpers import (
    Probe,
    assert_same_document,
    comparable,
    read_raw_topic,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)
from tests.integration.robustness_helpers import (
    AT,
    confirmed,
    event,
    expected_document,
    health,
    input_ends,
    kcat_path,
    kcat_send,
    line_headers,
    routed,
    run_async,
    scheduled,
    send_records,
    setup_lines,
)

pytestmark = pytest.mark.integration
KIB64 = 64 * 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _rejected_docs(settings: Settings) -> list[dict[str, Any]]:
    records = run_async(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.rejected, 30))
    return [json.loads(r["value"]) | {"_kafka": r} for r in records]


def _finish(settings: Settings, worker: Any, log: Path) -> None:
    rc = stop_worker(worker)
    assert rc == 0, log.read_text(errors="replace")[-3000:]


def test_header_keys_that_are_not_utf8_stop_no_partition(settings: Settings, tmp_path: Path) -> None:
    """kcat writes header keys ``ff fe`` (a program.created on the admin topic, a meeting.scheduled on the
    path topic) and ``fe ff`` (a record that is not JSON): all three are read, judged on their value like
    any record, and the pipeline's result equals replay; the rejected one keeps its header bytes."""
    kcat_path()
    path = "path-hk"
    lines = [
        *setup_lines(),  # 1, 2 (2 through kcat)
        scheduled("hk-3", path, "hk-m1", 2),
        scheduled("hk-4", path, "hk-m2", 3),  # through kcat
        confirmed("hk-5", path, "hk-m1", 2),
        b'{"not json',  # 6, through kcat: rejected
        confirmed("hk-7", path, "hk-m2", 3),
    ]
    odd_key = {2: b"\xff\xfe", 4: b"\xff\xfe", 6: b"\xfe\xff"}
    bootstrap = settings.kafka_bootstrap_servers
    for number, (topic, key, value, headers) in enumerate(routed(settings, lines), start=1):
        if number in odd_key:
            assert value is not None
            if number == 6:
                key = path.encode()
            kcat_send(bootstrap, topic, key, value, [(odd_key[number], b"v"), (LINE_HEADER.encode(), b"%d" % number)],
                      tmp_path)  # fmt: skip
        else:
            run_async(send_records(bootstrap, [(topic, key, value, headers)]))
    ends = run_async(input_ends(settings))

    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, http_port=0)
    try:
        http = ready_info(log, worker)["http"]
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
        status, doc = health(http)
        assert status == 200 and doc["status"] == "ok", doc
    finally:
        _finish(settings, worker, log)
    assert "header key that is not UTF-8" in log.read_text(errors="replace")

    snapshot = run_async(read_snapshot(bootstrap, settings.topics))
    assert_same_document(comparable(snapshot), comparable(expected_document(lines, AT, {})))
    (rejected,) = _rejected_docs(settings)
    assert rejected["reason"] == "invalid_json"
    assert rejected["headers_base64"] == [[_b64(b"\xfe\xff"), _b64(b"v")], [_b64(LINE_HEADER.encode()), _b64(b"6")]]
    assert_valid("outputs/rejected.json", {k: v for k, v in rejected.items() if k != "_kafka"}, closed=True)


def test_nul_anywhere_is_rejected_and_blocks_nothing(settings: Settings, tmp_path: Path) -> None:
    """A confirmation waits for its meeting; behind it on the same partition come a note holding U+0000,
    an event_id holding U+0000 and a record that is not JSON with a 0x00 byte in a header value, then the
    meeting. The three are rejected, the meeting is scheduled and releases the confirmation (nothing
    expires although the park timeout is short), and the result equals replay."""
    path = "path-nul"
    lines = [
        *setup_lines(),
        confirmed("nul-3", path, "nul-m1", 2),  # waits for nul-m1
        event("nul-4", "path.authorized_hours_set", "2026-03-01T08:00:00Z", path=path, role="program_admin",
              data={"authorized_hours": 5, "note": "a\x00b"}),
        scheduled("nul\x00id", path, "nul-m9", 4),
        b'{"not json',
        scheduled("nul-7", path, "nul-m1", 2),
    ]  # fmt: skip
    records = routed(settings, lines)
    topic, _key, value, headers = records[5]
    records[5] = (topic, path.encode(), value, [*headers, ("trace", b"a\x00b")])
    bootstrap = settings.kafka_bootstrap_servers
    ends = run_async(send_records(bootstrap, records[:3]))

    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, park_timeout_s=5.0)
    try:
        with Probe(settings) as probe:
            wait_until(lambda: probe.state()["parked"] == 1, 45, "the confirmation to wait", procs=[worker])
        more = run_async(send_records(bootstrap, records[3:]))
        ends = {k: max(ends.get(k, 0), more.get(k, 0)) for k in ends.keys() | more.keys()}
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
    finally:
        _finish(settings, worker, log)

    snapshot = comparable(run_async(read_snapshot(bootstrap, settings.topics)))
    by_line = {r["line"]: r["reason"] for r in snapshot["rejected"]}
    assert by_line == {4: "schema_violation", 5: "schema_violation", 6: "invalid_json"}, snapshot["rejected"]
    assert [m["status"] for m in snapshot["meetings"]] == ["confirmed"]
    assert_same_document(snapshot, comparable(expected_document(lines, AT, {})))
    docs = {d["source"]["offset"]: d for d in _rejected_docs(settings)}
    not_json = next(d for d in docs.values() if d["reason"] == "invalid_json")
    # the header's bytes come back as they were sent (they are UTF-8, so as text too)
    assert not_json["headers"][-1] == ["trace", "a\x00b"] and not_json["headers_base64"] is None
    assert not_json["_kafka"]["headers"][-2:] == [("trace", b"a\x00b"), (REASON_HEADER, b"invalid_json")]


def test_rejected_messages_keep_exact_bytes_and_match_the_contract(settings: Settings, tmp_path: Path) -> None:
    """Rejected inputs with awkward bytes, each read back from the rejected topic and checked field by
    field against what docs/topics.md and the JSON Schema say."""
    path = "path-bytes"
    t = settings.topics.path_events
    pad = "é" * 450_000  # 2 bytes each: the 64 KiB cut falls inside a character
    big_text = ('{"event_id":"big-1","pad":"' + pad + '"}').encode()
    big_binary = b"\xff" * 900_000
    records = [
        (t, path.encode(), b'{"not json', line_headers(1, ("trace", b"\xff\xfeok"))),
        (t, path.encode(), big_text, line_headers(2)),
        (t, path.encode(), big_binary, line_headers(3)),
        (t, b"\xfe\xffk", event("bytes-4", "meeting.teleported", "2026-03-01T09:00:00Z", path=path),
         line_headers(4, ("ok", b"fine"))),
    ]  # fmt: skip
    ends = run_async(send_records(settings.kafka_bootstrap_servers, records))
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT)
    try:
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
    finally:
        _finish(settings, worker, log)

    docs = {line: d for d in _rejected_docs(settings) for line in [int(d["headers"][0][1])]}
    assert sorted(docs) == [1, 2, 3, 4]
    odd = docs[1]  # header value ff fe 6f 6b: exact in headers_base64, escaped text in headers
    assert odd.get("headers_base64") == [
        [_b64(LINE_HEADER.encode()), _b64(b"1")],
        [_b64(b"trace"), _b64(b"\xff\xfeok")],
    ]
    assert odd["headers"] == [[LINE_HEADER, "1"], ["trace", "\\xff\\xfeok"]]
    assert odd["_kafka"]["headers"] == [(REASON_HEADER, b"invalid_json")]  # not exact: only the reason header

    text = docs[2]  # 900 KB of UTF-8: its first 64 KiB as text, cut on a character boundary
    assert text["reason"] == "too_large"
    assert text["original"] is not None and text["original_base64"] is None
    kept = text["original"].encode()
    assert big_text.startswith(kept) and KIB64 - 3 <= len(kept) <= KIB64
    assert (text["original_bytes"], text["original_truncated"]) == (len(big_text), True)

    binary = docs[3]  # 900 KB that is not UTF-8: its first 64 KiB in base64
    assert binary["original"] is None and base64.b64decode(binary["original_base64"]) == big_binary[:KIB64]
    assert (binary["original_bytes"], binary["original_truncated"]) == (len(big_binary), True)

    keyed = docs[4]  # a key that is not UTF-8; UTF-8 headers: the Kafka record keeps them as they were
    assert keyed["reason"] == "unknown_type"
    assert (keyed["key"], keyed["key_base64"], keyed["key_bytes"]) == (None, _b64(b"\xfe\xffk"), 3)
    assert keyed["_kafka"]["key"] == b"\xfe\xffk"
    assert keyed["_kafka"]["headers"] == [(LINE_HEADER, b"4"), ("ok", b"fine"), (REASON_HEADER, b"unknown_type")]
    assert keyed["headers_base64"] is None

    for line, doc in docs.items():
        record = doc.pop("_kafka")
        assert_valid("outputs/rejected.json", doc, closed=True)
        assert len(record["value"]) < 300 * 1024, (line, len(record["value"]))
        assert doc["source"]["topic"] == t and doc["headers_bytes"] >= len(LINE_HEADER) + 1
        assert doc["key_truncated"] is False and doc["headers_truncated"] is False
