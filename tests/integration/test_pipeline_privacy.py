"""Admin-only text never reaches the dashboards (SPEC section 3): path notes (``path.authorized_hours_set``
``note``), dispute comments (``meeting.disputed`` ``comment``) and resolution notes
(``meeting.dispute_resolved`` ``note``) never appear on the path-tallies or meeting-statuses topics, and
they ARE stored, with who wrote them and when, in ``admin_audit``.

A generated stream is rewritten so that every such event carries a unique marker string (derived from
the line's bytes, so a duplicate delivery stays an exact duplicate). After the pipeline has processed it,
every message of the two dashboard topics is scanned as raw bytes (value, key and headers) for every
marker and for the common marker prefix. As a positive control, the same scan finds markers on the
rejected topic (which carries rejected originals as they were sent, by design), so a leak would be seen.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain.engine import APPLIED, process_message
from domain.model import State
from session_tally.config import Settings
from session_tally.traffic import TrafficConfig, generate
from storage import tables as T
from tests.integration.pipeline_helpers import Probe, publish_lines, read_raw_topic, run_to_end

pytestmark = pytest.mark.integration

PREFIX = "PRIVMARK"
AT = "2026-03-01T00:00:00Z"
STREAM = TrafficConfig(
    seed=777, order_independent=True, bad_fraction=0.02, duplicate_fraction=0.02, early_fraction=0.02
)
EVENTS = 4000
TEXT_FIELD = {"path.authorized_hours_set": "note", "meeting.disputed": "comment", "meeting.dispute_resolved": "note"}


def _mark(raw: bytes) -> tuple[bytes, str | None]:
    """The line with its admin-only text replaced by (or given) a unique marker; the marker."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw, None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        return raw, None
    field = TEXT_FIELD.get(doc.get("type"))  # type: ignore[arg-type]
    if field is None:
        return raw, None
    marker = f"{PREFIX}-{hashlib.sha256(raw).hexdigest()[:16]}"
    doc["data"][field] = f"private {marker} text"
    return json.dumps(doc, separators=(",", ":")).encode(), marker


@functools.cache
def stream() -> tuple[list[bytes], dict[str, str]]:
    """(lines, marker by line bytes)."""
    lines: list[bytes] = []
    markers: dict[str, str] = {}
    for record in generate(STREAM, EVENTS):
        line, marker = _mark(record.value)
        lines.append(line)
        if marker:
            markers[line.decode()] = marker
    return lines, markers


def _expected_audit(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    """event_id -> what admin_audit must hold for every applied event that carries admin-only text,
    from the engine's outcomes (applied, including waiting events applied when released)."""
    state = State()
    expected: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(lines, start=1):
        for outcome in process_message(state, raw, number):
            event = outcome.event
            if outcome.kind != APPLIED or event is None or event.type not in TEXT_FIELD:
                continue
            expected[event.event_id] = {
                "text": getattr(event.data, TEXT_FIELD[event.type]),
                "actor_id": event.actor.id,
                "actor_role": event.actor.role,
                "occurred_at": event.occurred_at,
                "path_id": event.path_id,
            }
    return expected


def _scan(records: list[dict[str, Any]], markers: set[str]) -> list[str]:
    """Every marker (or the bare prefix) found in the raw bytes of these records."""
    found = []
    for rec in records:
        blob = b"\0".join(
            [rec["value"] or b"", rec["key"] or b""] + [k.encode() + b"=" + (v or b"") for k, v in rec["headers"]]
        )
        if PREFIX.encode() in blob:
            text = blob.decode("utf-8", "replace")
            found += [m for m in markers if m in text] or [f"{PREFIX} (prefix) at offset {rec['offset']}"]
    return found


def test_admin_only_text_never_published_and_stored_for_admins(settings: Settings, tmp_path: Path) -> None:
    lines, by_line = stream()
    markers = set(by_line.values())
    expected = _expected_audit(lines)
    assert len(markers) >= 100 and len(expected) >= 50, (len(markers), len(expected))
    kinds = {json.loads(line)["type"] for line in by_line}
    assert kinds == set(TEXT_FIELD), kinds

    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    run_to_end(settings, ends, tmp_path, clock=AT)

    bootstrap = settings.kafka_bootstrap_servers
    tallies = asyncio.run(read_raw_topic(bootstrap, settings.topics.path_tallies))
    statuses = asyncio.run(read_raw_topic(bootstrap, settings.topics.meeting_statuses))
    rejected = asyncio.run(read_raw_topic(bootstrap, settings.topics.rejected))
    assert len(tallies) >= 20 and len(statuses) > 1000, (len(tallies), len(statuses))
    # the dashboards saw the paths and meetings the private text was about (disputed ones included)
    status_docs = [json.loads(r["value"]) for r in statuses]
    assert any(d["disputed"] for d in status_docs)
    assert {e["path_id"] for e in expected.values()} <= {json.loads(r["value"])["path_id"] for r in tallies}

    assert _scan(tallies, markers) == [], "admin-only text on the path-tallies topic"
    assert _scan(statuses, markers) == [], "admin-only text on the meeting-statuses topic"
    # positive control: the scan does find markers where originals are carried on purpose
    assert _scan(rejected, markers), "no marker on the rejected topic: the scan would not see a leak"

    with Probe(settings) as probe:
        rows = probe.conn.execute(select(T.admin_audit)).all()
        probe.conn.rollback()
    stored = {r.event_id: r for r in rows}
    assert set(stored) == set(expected), (
        f"audit rows missing for {sorted(set(expected) - set(stored))[:5]}, "
        f"unexpected for {sorted(set(stored) - set(expected))[:5]}"
    )
    for event_id, want in expected.items():
        row = stored[event_id]
        got = {k: getattr(row, k) for k in want}
        assert got == want, (event_id, got, want)
        assert row.recorded_at is not None
        assert any(m in row.text for m in markers)
