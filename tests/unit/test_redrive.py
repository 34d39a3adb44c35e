"""What `session-tally rejected redrive` sends for a rejection (pure: session_tally/redrive.py,
session_tally/rejections.py)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from domain.events import dedup_event_id
from session_tally.redrive import NAMESPACE, REDRIVE_HEADER, event_id_spans, plan, redrive_id, with_event_id
from session_tally.rejections import Filter, Rejection

ADMIN, PATH = "x.admin-events", "x.path-events"


def rejection(original: bytes | None = None, **fields: object) -> Rejection:
    doc: dict[str, object] = {
        "reason": "unknown_program",
        "detail": "d",
        "event_id": "ev-9",
        "rejected_at": "2026-03-10T12:00:00Z",
        "source": {"topic": PATH, "partition": 3, "offset": 12, "timestamp_ms": None},
        "key": "path-9",
        "key_base64": None,
        "key_truncated": False,
        "headers": [["session-tally-line", "9"]],
        "headers_base64": None,
        "headers_truncated": False,
        "original": None if original is None else original.decode(),
        "original_base64": None,
        "original_bytes": None if original is None else len(original),
        "original_truncated": False,
    }
    doc.update(fields)
    return Rejection(0, 5, doc)


def test_new_ids_are_deterministic_well_formed_and_not_the_old_one() -> None:
    assert redrive_id("ev-9") == "ev-9.r1" == redrive_id("ev-9")
    assert redrive_id("ev-9.r1") == "ev-9.r1.r1"  # a re-driven event rejected again, re-driven again
    long = "a" * 126
    assert redrive_id(long) == str(uuid.uuid5(NAMESPACE, long))  # 129 characters would not be an id
    assert redrive_id("bad id!") == str(uuid.uuid5(NAMESPACE, "bad id!"))
    for old in ("ev-9", long, "bad id!", "é"):
        assert dedup_event_id(redrive_id(old)) == redrive_id(old) != old


def test_only_the_top_level_event_id_changes_byte_for_byte() -> None:
    original = b'{ "type":"x",  "data": {"event_id": "inner", "hours": 1.10},\n "event_id" : "ev-9", "n": 1e2 }'
    out = with_event_id(original, "ev-9.r1")
    assert out == original.replace(b'"ev-9"', b'"ev-9.r1"')
    assert json.loads(out)["data"]["event_id"] == "inner"


def test_escaped_and_duplicate_event_ids_are_all_replaced() -> None:
    original = '{"event_id": "e\\u0076-1", "event_id": "ev-1", "z": "é"}'.encode()
    out = with_event_id(original, "ev-1.r1")
    assert out.decode() == '{"event_id": "ev-1.r1", "event_id": "ev-1.r1", "z": "é"}'


@pytest.mark.parametrize("text", ["[1]", '{"a": 1', '{"a": 1} x', "{1: 2}", ""])
def test_not_one_object_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        event_id_spans(text)


def test_a_plan_keeps_topic_key_and_headers_and_adds_the_provenance_header() -> None:
    original = b'{"event_id": "ev-9", "type": "meeting.scheduled", "path_id": "path-9"}'
    p = plan(rejection(original), ADMIN, PATH)
    assert p.problem is None
    assert (p.kind, p.key, p.old_id, p.new_id) == ("path", b"path-9", "ev-9", "ev-9.r1")
    assert p.value == original.replace(b'"ev-9"', b'"ev-9.r1"')
    assert p.headers == (("session-tally-line", b"9"), (REDRIVE_HEADER, f"{PATH}:3@12".encode()))


def test_headers_come_back_exactly_from_base64() -> None:
    raw = [[base64.b64encode(b"k\xff").decode(), base64.b64encode(b"\x00\xfe").decode()], ["YQ==", None]]
    r = rejection(b'{"event_id": "e"}', headers=[["k\\xff", "\\x00\\xfe"], ["a", None]], headers_base64=raw)
    assert r.headers() == [("k\udcff", b"\x00\xfe"), ("a", None)]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"original_truncated": True, "original_bytes": 70000}, "cut to 64 KiB"),
        ({"original_removed": "refused"}, "removed"),
        ({"key_truncated": True}, "key was cut"),
        ({"source": {"topic": "elsewhere", "partition": 0, "offset": 1}}, "not an input topic"),
    ],
)
def test_what_is_not_the_original_is_not_redriven(fields: dict[str, object], why: str) -> None:
    p = plan(rejection(b'{"event_id": "ev-9"}', **fields), ADMIN, PATH)
    assert p.problem is not None and why in p.problem and p.value is None


@pytest.mark.parametrize(
    ("original", "why"),
    [(b'{"event_id": "ev', "not JSON"), (b'{"event_id": 7}', "no string event_id"), (b"[1]", "no string event_id")],
)
def test_what_has_no_string_event_id_is_not_redriven(original: bytes, why: str) -> None:
    p = plan(rejection(original), ADMIN, PATH)
    assert p.problem is not None and why in p.problem


def test_a_tombstone_is_not_redriven() -> None:
    p = plan(rejection(None), ADMIN, PATH)
    assert p.problem is not None and "no value" in p.problem


def test_filters() -> None:
    r = rejection(b"{}")
    assert Filter().matches(r)
    assert Filter(reasons=frozenset({"unknown_program"}), topics=frozenset({PATH})).matches(r)
    assert not Filter(reasons=frozenset({"invalid_json"})).matches(r)
    assert not Filter(event_ids=frozenset({"other"})).matches(r)
    at = r.rejected_at_us
    assert at is not None
    assert Filter(since_us=at, until_us=at + 1).matches(r)
    assert not Filter(until_us=at).matches(r)  # until is exclusive
    assert not Filter(since_us=at + 1).matches(r)


def test_the_quick_test_never_drops_a_match_and_skips_the_clear_misses() -> None:
    """The bytes test of the reader agrees with the full filter on messages session-tally writes, also
    when the original, the key or the detail hold what the test looks for."""
    from storage.messages import SourceRecord, rejected_row

    tricky = b'{"reason":"forbidden","event_id":"ev-1","x":"\\"reason\\":\\"forbidden\\""}'
    rows = []
    for i, (reason, event_id, value) in enumerate(
        [
            ("unknown_program", "ev-1", tricky),
            ("forbidden", "ev-10", b'{"event_id": "ev-10"}'),
            ("invalid_json", None, b'"reason":"unknown_program" not json'),
            ("schema_violation", "ev-1", b"\xff\xfe"),
        ]
    ):
        src = SourceRecord(PATH, 0, i, b'"reason":"forbidden"', value, (("h", b'"event_id":"ev-10"'),))
        rows.append(rejected_row(src, event_id, reason, f'detail "reason":"forbidden" {i}', 0).value)
    filters = [
        Filter(reasons=frozenset({"forbidden"})),
        Filter(reasons=frozenset({"unknown_program", "invalid_json"})),
        Filter(event_ids=frozenset({"ev-1"})),
        Filter(event_ids=frozenset({"ev-10"}), reasons=frozenset({"forbidden"})),
    ]
    for wanted in filters:
        quick = wanted.quick_test()
        full = [wanted.matches(Rejection(0, i, json.loads(v))) for i, v in enumerate(rows)]
        fast = [quick(v) for v in rows]
        assert all(q for q, f in zip(fast, full, strict=True) if f), (wanted, fast, full)  # no match dropped
        assert fast.count(False) >= 1, (wanted, fast)  # and clear misses are not parsed
    assert Filter().quick_test()(rows[0]) and Filter(reasons=frozenset({"x"})).quick_test()(b'{"reason": "x"}')
