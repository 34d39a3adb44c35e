"""`session-tally tallies republish` and `session-tally audit` against the real Kafka, PostgreSQL and a
worker process.

- republish: every path's latest tally on the topic gets version + 1 and the same content (also while
  the worker runs: through the outbox); after the compacted tallies topic was lost and created again, a
  republish makes it equal to replay's tallies again;
- audit: a program's path notes, dispute comments and resolution notes with who wrote them and when,
  not those of another program.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from domain.replay import replay
from domain.timefmt import parse_instant
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from session_tally.topics import ensure_topics
from session_tally.traffic import TrafficConfig, generate
from tests.integration.operator_helpers import cli, latest_tallies, ok, query, topic_docs
from tests.integration.pipeline_helpers import (
    comparable,
    pipeline_state,
    publish_lines,
    run_to_end,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)
from tests.integration.test_rejected_commands import envelope, program

pytestmark = pytest.mark.integration

AT = "2026-03-01T00:00:00Z"


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("version", "as_of", "_partition", "_offset", "_headers")}


def _outbox_empty(settings: Settings, worker: Any) -> None:
    wait_until(lambda: pipeline_state(settings)["outbox"] == 0, 60, "the outbox empty", interval_s=0.2, procs=[worker])


async def _drop_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
        for _ in range(300):  # deletion completes asynchronously on the broker
            if name not in await admin.list_topics():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} still exists 30 s after its deletion")
    finally:
        await admin.close()


def test_republish_gives_every_tally_a_new_version_and_rebuilds_a_lost_topic(
    settings: Settings, tmp_path: Path
) -> None:
    lines = [r.value for r in generate(TrafficConfig(seed=11, order_independent=True), 2000)]
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    run_to_end(settings, ends, tmp_path, AT)
    expected = comparable(replay(lines, parse_instant(AT)))["tallies"]
    before = latest_tallies(settings)
    assert len(before) == len(expected) > 10

    worker = start_worker_ex(settings, tmp_path / "relay.log", clock=AT, park_timeout_s=120)
    try:
        out = ok(cli(settings, "tallies", "republish", "--why", "new dashboard", "--operator", "ops-2"))
        assert f"{len(before):,} tallies written" in out, out
        _outbox_empty(settings, worker)
        after = latest_tallies(settings)
        assert set(after) == set(before)
        for path_id, old in before.items():
            new = after[path_id]
            assert new["version"] == old["version"] + 1, (path_id, old["version"], new["version"])
            assert _content(new) == _content(old), path_id
        stored = dict(query(settings, "SELECT path_id, tally_version FROM paths"))
        assert {p: stored[p] for p in after} == {p: d["version"] for p, d in after.items()}

        # one path only; a program that does not exist is refused
        one = sorted(before)[0]
        ok(cli(settings, "tallies", "republish", "--path", one))
        _outbox_empty(settings, worker)
        again = latest_tallies(settings)
        assert again[one]["version"] == before[one]["version"] + 2
        assert {p: d["version"] for p, d in again.items() if p != one} == {
            p: d["version"] for p, d in after.items() if p != one
        }
        ok(cli(settings, "tallies", "republish", "--program", "no-such-program"), status=1)
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "relay.log").read_text(errors="replace")[-3000:]

    # the compacted tallies topic is lost: created again, empty, then rebuilt by a republish
    asyncio.run(_drop_topic(settings.kafka_bootstrap_servers, settings.topics.path_tallies))
    assert asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, settings.topics)) == []
    worker = start_worker_ex(settings, tmp_path / "relay2.log", clock=AT, park_timeout_s=120)
    try:
        assert topic_docs(settings, settings.topics.path_tallies) == []
        ok(cli(settings, "tallies", "republish"))
        _outbox_empty(settings, worker)
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "relay2.log").read_text(errors="replace")[-3000:]
    rebuilt = topic_docs(settings, settings.topics.path_tallies)
    assert len(rebuilt) == len(expected)  # one message per path
    snapshot = asyncio.run(read_snapshot(settings.kafka_bootstrap_servers, settings.topics))
    assert comparable(snapshot)["tallies"] == expected

    audit = query(
        settings, "SELECT operator, detail FROM operator_audit WHERE action = 'tallies republish' ORDER BY id"
    )
    assert [d["paths"] for _who, d in audit] == [len(before), 1, len(before)]
    assert audit[0][0] == "ops-2" and audit[0][1]["why"] == "new dashboard"


# ------------------------------------------------------------------------------------------ audit


def _on_path(
    event_id: str, type_: str, data: dict[str, Any], path_id: str, program_id: str, role: str, at: str
) -> bytes:
    doc = json.loads(envelope(event_id, type_, data, program_id=program_id, path_id=path_id, occurred_at=at))
    doc["actor"] = {"id": f"{role}-7", "role": role}
    return json.dumps(doc).encode()


Y_TIMES = {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"}
AUDIT_LINES = [  # y is cancelled late (pending), a coach disputes it, the program admin upholds the dispute
    envelope("org-on", "organization.session_management_set", {"enabled": True}),
    program("prog-1"),
    program("prog-2"),
    _on_path("n1", "path.authorized_hours_set", {"authorized_hours": 5, "note": "budget for Q2\nsecond line"},
             "path-1", "prog-1", "program_admin", "2026-03-01T10:00:00Z"),
    _on_path("s1", "meeting.scheduled", {"meeting_id": "y", **Y_TIMES},
             "path-1", "prog-1", "participant", "2026-03-01T09:00:00Z"),
    _on_path("c1", "meeting.canceled", {"meeting_id": "y", "reason": "sick"},
             "path-1", "prog-1", "participant", "2026-03-02T06:00:00Z"),
    _on_path("d1", "meeting.disputed", {"meeting_id": "y", "comment": "the train was cancelled"},
             "path-1", "prog-1", "facilitator", "2026-03-03T09:00:00Z"),
    _on_path("r1", "meeting.dispute_resolved", {"meeting_id": "y", "outcome": "upheld", "note": "waived, proof seen"},
             "path-1", "prog-1", "program_admin", "2026-03-04T09:00:00Z"),
    _on_path("n2", "path.authorized_hours_set", {"authorized_hours": 3, "note": "other program"},
             "path-2", "prog-2", "program_admin", "2026-03-01T10:00:00Z"),
]  # fmt: skip


def test_audit_prints_a_programs_admin_only_texts_with_who_and_when(settings: Settings, tmp_path: Path) -> None:
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, AUDIT_LINES))
    worker = start_worker_ex(settings, tmp_path / "worker.log", clock="2026-03-10T00:00:00Z")
    try:
        wait_idle(settings, ends, timeout_s=60, procs=[worker])
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert not topic_docs(settings, settings.topics.rejected), "the audit events must all apply"

    entries = [json.loads(x) for x in ok(cli(settings, "audit", "--program", "prog-1", "--json")).splitlines()]
    got = [(e["kind"], e["text"], e["actor_id"], e["actor_role"], e["occurred_at"], e["meeting_id"]) for e in entries]
    assert got == [  # newest first
        ("dispute_resolution", "waived, proof seen", "program_admin-7", "program_admin", "2026-03-04T09:00:00Z", "y"),
        ("dispute", "the train was cancelled", "facilitator-7", "facilitator", "2026-03-03T09:00:00Z", "y"),
        ("path_note", "budget for Q2\nsecond line", "program_admin-7", "program_admin", "2026-03-01T10:00:00Z", None),
    ]
    assert entries[0]["outcome"] == "upheld" and entries[2]["authorized_hours"] == 5
    assert all(e["recorded_at"] and e["path_id"] == "path-1" for e in entries)

    table = ok(cli(settings, "audit", "--program", "prog-1"))
    assert "resolution (upheld)  path-1 meeting y  by program_admin-7 (program_admin)" in table, table
    assert "path note (hours set: 5)" in table and "\n    second line" in table, table
    assert "other program" not in table

    other = [json.loads(x) for x in ok(cli(settings, "audit", "--path", "path-2", "--json")).splitlines()]
    assert [(e["text"], e["authorized_hours"]) for e in other] == [("other program", 3)]
    assert "no program" in cli(settings, "audit", "--program", "prog-nope").stderr.decode()
    ok(cli(settings, "audit", "--path", "path-nope"), status=1)
    ok(cli(settings, "audit", "--program", "prog-nope"), status=1)
