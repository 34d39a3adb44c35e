"""`session-tally rejected list|redrive` against the real Kafka, PostgreSQL and a worker process: events
that waited in vain for a program and a meeting are rejected; once those exist, re-driving the
rejections applies them (with new event ids), a second redrive sends nothing, a forced one is counted as
a duplicate, and originals that are not the message as sent are refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from session_tally.config import Settings
from tests.integration.operator_helpers import cli, end_offsets, ok, query, topic_docs
from tests.integration.pipeline_helpers import publish_lines, start_worker_ex, stop_worker, wait_idle, wait_until

pytestmark = pytest.mark.integration

AT = "2026-03-10T09:00:00Z"
SCENARIOS = Path(__file__).parent.parent / "scenarios"


def envelope(event_id: str, type_: str, data: dict[str, Any], **fields: Any) -> bytes:
    role = "support" if type_.startswith("organization") else "program_admin" if type_.startswith("program") else None
    doc = {
        "event_id": event_id,
        "type": type_,
        "schema_version": 1,
        "occurred_at": fields.pop("occurred_at", "2026-03-01T09:00:00Z"),
        "org_id": "org-1",
        **fields,
        "actor": {"id": "user-1", "role": role or "participant"},
        "data": data,
    }
    return json.dumps(doc).encode()


def program(program_id: str) -> bytes:
    data = {
        "name": program_id,
        "session_verification": True,
        "late_cancel_window": "PT24H",
        "auto_confirm_window": "P3D",
    }
    return envelope(f"create-{program_id}", "program.created", data | {"authorized_hours": 10}, program_id=program_id)


def scheduled(event_id: str, program_id: str, path_id: str, meeting_id: str) -> bytes:
    times = {"start": "2026-03-12T10:00:00Z", "end": "2026-03-12T11:00:00Z"}
    return envelope(
        event_id, "meeting.scheduled", {"meeting_id": meeting_id, **times}, program_id=program_id, path_id=path_id
    )


ORG = envelope("org-on", "organization.session_management_set", {"enabled": True})
WAITS_FOR_PROGRAM = scheduled("ev-9", "prog-9", "path-9", "w1")
WAITS_FOR_MEETING = envelope(
    "ev-c", "meeting.canceled", {"meeting_id": "m-late", "reason": "sick"}, program_id="prog-1", path_id="path-1"
)
BAD = (SCENARIOS / "11-bad-input" / "events.jsonl").read_bytes().split(b"\n")
NOT_JSON, TOO_LARGE = BAD[3], BAD[4]  # bad-1 (invalid_json), big-1 (too_large: cut on the rejected topic)
NOT_UTF8 = b'\xff{"event_id": "x", "path_id": "path-1"}'
WAITING = ("--reason", "unknown_program", "--reason", "unknown_meeting")


def _wait(settings: Settings, worker: Any, what: str, predicate: Any) -> Any:
    return wait_until(predicate, 60, what, interval_s=0.2, procs=[worker])


def test_list_then_redrive_after_the_program_and_the_meeting_exist(settings: Settings, tmp_path: Path) -> None:
    lines = [ORG, program("prog-1"), WAITS_FOR_PROGRAM, WAITS_FOR_MEETING, NOT_JSON, TOO_LARGE, NOT_UTF8]
    asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    worker = start_worker_ex(settings, tmp_path / "worker.log", clock=AT, park_timeout_s=1.0)
    try:
        wait_idle(settings, end_offsets(settings), timeout_s=90, procs=[worker])  # the two waiting events expired
        rejected = settings.topics.rejected
        _wait(settings, worker, "5 rejections", lambda: len(topic_docs(settings, rejected)) >= 5)

        # ---- list: a table, JSON lines, the originals
        table = ok(cli(settings, "rejected", "list"))
        assert table.splitlines()[0].split()[:3] == ["rejected", "at", "reason"]
        for event_id, reason in (("ev-9", "unknown_program"), ("ev-c", "unknown_meeting"), ("-", "too_large")):
            assert any(event_id in row and reason in row for row in table.splitlines()), table
        assert sum("invalid_json" in row for row in table.splitlines()) == 2, table  # bad-1 and the non-UTF-8 one
        docs = [
            json.loads(x)
            for x in ok(cli(settings, "rejected", "list", "--reason", "unknown_program", "--json")).splitlines()
        ]
        assert [(d["event_id"], d["source"]["topic"]) for d in docs] == [("ev-9", settings.topics.path_events)]
        assert (
            ok(cli(settings, "rejected", "list", "--event-id", "ev-9", "--original"))
            == WAITS_FOR_PROGRAM.decode() + "\n"
        )
        raw = cli(settings, "rejected", "list", "--reason", "invalid_json", "--original").stdout
        assert sorted(raw.split(b"\n")[:-1]) == sorted([NOT_JSON, NOT_UTF8])  # the exact bytes, not UTF-8 too
        assert ok(cli(settings, "rejected", "list", "--until", "2020-01-01T00:00:00Z")).count("\n") == 1  # the header
        assert len(ok(cli(settings, "rejected", "list", "--topic", "admin", "--json")).splitlines()) == 0
        two = ok(cli(settings, "rejected", "list", "--limit", "2", "--json")).splitlines()
        assert len(two) == 2

        # ---- what they waited for arrives
        fixes = [program("prog-9"), scheduled("s-late", "prog-1", "path-1", "m-late")]
        asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, fixes))
        wait_idle(settings, end_offsets(settings), timeout_s=60, procs=[worker])
        assert query(settings, "SELECT cancel_kind FROM meetings WHERE meeting_id = 'm-late'")[0][0] == 0

        # ---- redrive: refused without a filter, a dry run sends nothing
        ok(cli(settings, "rejected", "redrive"), status=1)
        inputs_before = end_offsets(settings)
        dry = ok(cli(settings, "rejected", "redrive", *WAITING))
        assert "dry run: 2 would be re-driven, 0 cannot be" in dry, dry
        assert "ev-9 -> ev-9.r1" in dry and "ev-c -> ev-c.r1" in dry, dry
        assert end_offsets(settings) == inputs_before, "a dry run published something"

        out = ok(
            cli(settings, "rejected", "redrive", *WAITING, "--yes", "--why", "created prog-9", "--operator", "ops-1")
        )
        assert "re-driven 2, failed 0" in out, out
        inputs_after = end_offsets(settings)
        assert sum(inputs_after.values()) == sum(inputs_before.values()) + 2
        wait_idle(settings, inputs_after, timeout_s=60, procs=[worker])

        # the re-driven events applied: the meeting of the new program exists, the cancel counted
        assert query(settings, "SELECT path_id FROM meetings WHERE meeting_id = 'w1'") == [("path-9",)]
        assert query(settings, "SELECT status FROM meetings WHERE meeting_id = 'm-late'") == [("canceled",)]
        seen = {r[0] for r in query(settings, "SELECT event_key FROM processed_events")}
        assert {"ev-9", "ev-9.r1", "ev-c", "ev-c.r1"} <= seen
        tallies = settings.topics.path_tallies
        _wait(
            settings,
            worker,
            "path-9's tally",
            lambda: any(d["path_id"] == "path-9" for d in topic_docs(settings, tallies)),
        )
        sent = [r for r in asyncio.run(_input_records(settings)) if b"ev-9.r1" in r["value"]]
        assert len(sent) == 1 and sent[0]["key"] == b"path-9"
        assert sent[0]["value"] == WAITS_FOR_PROGRAM.replace(b'"ev-9"', b'"ev-9.r1"')  # byte for byte but the id
        headers = dict(sent[0]["headers"])
        assert headers["session-tally-redrive-of"].startswith(f"{settings.topics.path_events}:".encode())
        assert headers["session-tally-line"] == b"3"  # the original's own headers are kept

        # the audit says what was re-driven
        rows = query(settings, "SELECT operator, detail FROM operator_audit WHERE action = 'rejected redrive'")
        assert len(rows) == 1 and rows[0][0] == "ops-1"
        detail = rows[0][1]
        assert detail["why"] == "created prog-9"
        assert sorted((r["from"], r["to"]) for r in detail["records"]) == [("ev-9", "ev-9.r1"), ("ev-c", "ev-c.r1")]
        assert all(r["sent"]["topic"] == settings.topics.path_events for r in detail["records"])
        history = ok(cli(settings, "offsets", "history"))
        assert "rejected redrive" in history and "ops-1" in history

        # ---- a second redrive sends nothing; --again sends the same ids, counted as duplicates
        again = ok(cli(settings, "rejected", "redrive", *WAITING, "--yes"))
        assert again.count("before  ") == 2 and "re-driven 0" in again, again
        assert end_offsets(settings) == inputs_after
        outputs = end_offsets(settings, settings.topics.outputs)
        versions = query(settings, "SELECT meeting_id, status_version FROM meetings ORDER BY 1")
        forced = ok(cli(settings, "rejected", "redrive", *WAITING, "--yes", "--again"))
        assert "re-driven 2" in forced, forced
        forced_ends = end_offsets(settings)
        assert sum(forced_ends.values()) == sum(inputs_after.values()) + 2
        wait_idle(settings, forced_ends, timeout_s=60, procs=[worker])
        assert end_offsets(settings, settings.topics.outputs) == outputs, "a duplicate published something"
        assert query(settings, "SELECT meeting_id, status_version FROM meetings ORDER BY 1") == versions

        # ---- originals that are not the message as sent, or not JSON, cannot be re-driven
        refused = ok(
            cli(settings, "rejected", "redrive", "--reason", "too_large", "--reason", "invalid_json", "--yes"), 1
        )
        assert refused.count("cannot  ") == 3, refused
        assert "cut to 64 KiB" in refused and "not JSON" in refused
        assert end_offsets(settings) == forced_ends
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]


async def _input_records(settings: Settings) -> list[dict[str, Any]]:
    from tests.integration.pipeline_helpers import read_raw_topic

    return await read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.path_events)
