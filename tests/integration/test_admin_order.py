"""Order across the two input topics (SPEC section 3), through the real pipeline: however far the admin
consumers are behind the path consumers, an admin event is applied before every path event published
after it, so the pipeline equals `replay` of the same file.

The admin topic is flooded ahead of the scenario (20,000 admin events of other organizations), so that
without the barrier the path consumers run thousands of events ahead of the admin consumers: a path's
first event waits for its program while a later event of the same path, naming another (known) program,
registers the path there; a confirmation is judged before the settings change published before it.

The workers run with a short park timeout: waiting events expire against what the consumers have
read (consumers.horizon), never while what releases them is still unread, so no finisher is needed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from domain.replay import replay
from domain.timefmt import parse_instant
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from session_tally.traffic import TrafficConfig, generate
from tests.integration.pipeline_helpers import (
    Probe,
    applied_fraction,
    assert_same_document,
    comparable,
    kill_worker,
    publish_lines,
    start_worker_ex,
    stop_worker,
    wait_group,
    wait_idle,
    wait_until,
)

pytestmark = pytest.mark.integration

AT = "2026-03-01T00:00:00Z"
FLOOD = 20_000
PARK_S = 2.0
BATCH = 200
SMALL_BATCH = 40  # admin batches of 40 records: the 20,000-event admin backlog lasts long enough to act in it


def flood(n: int = FLOOD) -> list[bytes]:
    """``n`` admin events of other organizations (switching session management on)."""
    return [
        json.dumps(
            {
                "event_id": f"flood-{i}",
                "type": "organization.session_management_set",
                "schema_version": 1,
                "occurred_at": "2026-01-01T00:00:00Z",
                "org_id": f"flood-org-{i}",
                "actor": {"id": "desk-1", "role": "support"},
                "data": {"enabled": True},
            }
        ).encode()
        for i in range(n)
    ]


def envelope(eid: str, typ: str, occurred: str, data: dict[str, Any], role: str, **ids: str) -> bytes:
    doc: dict[str, Any] = {"event_id": eid, "type": typ, "schema_version": 1, "occurred_at": occurred}
    doc.update({"org_id": "org-a"} | ids)
    doc["actor"] = {"id": f"{role}-1", "role": role}
    doc["data"] = data
    return json.dumps(doc).encode()


def crafted() -> list[bytes]:
    """A path whose first events follow its program's creation by a few lines, then an event of the same
    path naming another known program (tenant_mismatch); a settings change shrinking the auto-confirm
    window just before a confirmation of the same program (confirmation_window_closed)."""
    program = {"session_verification": True, "late_cancel_window": "PT24H", "auto_confirm_window": "P7D"}
    path = {"program_id": "prog-a", "path_id": "path-a"}
    meeting = {"start": "2026-02-02T10:00:00Z", "end": "2026-02-02T11:00:00Z"}
    return [
        envelope("c-1", "organization.session_management_set", "2026-01-01T00:00:00Z", {"enabled": True}, "support"),
        envelope("c-2", "program.created", "2026-01-02T00:00:00Z", program | {"authorized_hours": 10}, "support",
                 program_id="prog-other"),
        envelope("c-3", "program.created", "2026-01-02T00:00:00Z", program | {"authorized_hours": 5}, "support",
                 program_id="prog-a"),
        envelope("c-4", "meeting.scheduled", "2026-01-20T00:00:00Z", {"meeting_id": "m-1"} | meeting, "facilitator",
                 **path),
        envelope("c-5", "meeting.scheduled", "2026-01-20T00:00:01Z",
                 {"meeting_id": "m-2", "start": "2026-02-03T10:00:00Z", "end": "2026-02-03T12:00:00Z"},
                 "facilitator", **path),
        # the same path names another program that exists: tenant_mismatch (the path is prog-a's)
        envelope("c-6", "meeting.scheduled", "2026-01-20T00:00:02Z", {"meeting_id": "m-3"} | meeting, "facilitator",
                 program_id="prog-other", path_id="path-a"),
        # the support desk shrinks the auto-confirm window (dated before the meetings end) ...
        envelope("c-7", "program.settings_updated", "2026-01-25T00:00:00Z", {"auto_confirm_window": "PT1H"},
                 "support", program_id="prog-a"),
        # ... so an answer two days after the end is too late (under the old P7D it was in time)
        envelope("c-8", "meeting.confirmation_submitted", "2026-02-04T11:00:00Z",
                 {"meeting_id": "m-1", "occurred": True}, "participant", **path),
        envelope("c-9", "meeting.confirmation_submitted", "2026-02-03T12:30:00Z",
                 {"meeting_id": "m-2", "occurred": True}, "participant", **path),
    ]  # fmt: skip


def stream(seed: int, events: int = 3000) -> list[bytes]:
    config = TrafficConfig(
        seed=seed, spec_ordered=True, bad_fraction=0.03, duplicate_fraction=0.02, early_fraction=0.02
    )
    return [r.value for r in generate(config, events)]


def expected(lines: list[bytes]) -> dict[str, Any]:
    return comparable(replay(lines, parse_instant(AT)))


class Workers:
    def __init__(self, settings: Settings, tmp_path: Path, batch: int = BATCH) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.batch = batch
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{name}.log"
        self.procs[name] = proc = start_worker_ex(
            self.settings, log, clock=AT, park_timeout_s=PARK_S, batch_size=self.batch
        )
        return proc

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs.values() if p.poll() is None]

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, name: str) -> None:
        rc = stop_worker(self.procs[name])
        assert rc == 0, f"{name} exited {rc}:\n{self.log(name)}"

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.stop(name)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                kill_worker(proc)


def admin_fraction(probe: Probe, ends: dict[str, int], admin_topic: str) -> float:
    admin_ends = {k: v for k, v in ends.items() if k.startswith(admin_topic + ":")}
    return applied_fraction(probe.offsets(), admin_ends)


def finish(settings: Settings, workers: Workers, ends: dict[str, int], lines: list[bytes]) -> dict[str, Any]:
    wait_idle(settings, ends, timeout_s=180, procs=workers.running())
    workers.stop_all()
    got = comparable(asyncio.run(read_snapshot(settings.kafka_bootstrap_servers, settings.topics)))
    want = expected(lines)
    assert_same_document(got, want)
    return got


def test_a_scenario_behind_an_admin_flood_with_two_workers_equals_replay(settings: Settings, tmp_path: Path) -> None:
    lines = flood() + crafted() + stream(seed=81)
    want = expected(lines)
    reasons = Counter(r["reason"] for r in want["rejected"])
    assert reasons["tenant_mismatch"] >= 2 and reasons["confirmation_window_closed"] >= 1, reasons
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    workers = Workers(settings, tmp_path)
    try:
        workers.start("w1")
        workers.start("w2")
        got = finish(settings, workers, ends, lines)
    finally:
        workers.kill_all()
    crafted_outcome = {r["event_id"]: r["reason"] for r in got["rejected"] if (r["event_id"] or "").startswith("c-")}
    assert crafted_outcome == {"c-6": "tenant_mismatch", "c-8": "confirmation_window_closed"}
    tally = next(t for t in got["tallies"] if t["path_id"] == "path-a")
    assert (tally["program_id"], tally["used_minutes"], tally["authorized_hours"]) == ("prog-a", 180, 5)


def test_a_worker_killed_while_the_admin_backlog_is_worked_through(settings: Settings, tmp_path: Path) -> None:
    lines = flood() + crafted() + stream(seed=82)
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    workers = Workers(settings, tmp_path, batch=SMALL_BATCH)
    try:
        workers.start("w1")
        workers.start("w2")
        with Probe(settings) as probe:
            reached = wait_until(
                lambda: (f := admin_fraction(probe, ends, settings.topics.admin_events)) >= 0.1 and f,
                120,
                "a tenth of the admin backlog applied",
                interval_s=0.02,
                procs=workers.running(),
            )
        assert reached < 1.0, f"the admin backlog was applied before the kill ({reached:.2f})"
        kill_worker(workers.procs["w2"])
        workers.start("w2")
        finish(settings, workers, ends, lines)
    finally:
        workers.kill_all()


def test_admin_members_rebalancing_while_the_backlog_is_worked_through(settings: Settings, tmp_path: Path) -> None:
    """A third worker joins, then one leaves, while the admin backlog is applied."""
    lines = flood() + crafted() + stream(seed=83)
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    workers = Workers(settings, tmp_path, batch=SMALL_BATCH)
    admin_group = f"{settings.group_id}.admin"
    bootstrap = settings.kafka_bootstrap_servers
    try:
        workers.start("w1")
        workers.start("w2")
        with Probe(settings) as probe:
            wait_until(
                lambda: admin_fraction(probe, ends, settings.topics.admin_events) >= 0.05,
                120,
                "the admin backlog under way",
                interval_s=0.02,
                procs=workers.running(),
            )
            workers.start("w3")
            wait_group(bootstrap, admin_group, 3, 90, procs=workers.running())
            during = admin_fraction(probe, ends, settings.topics.admin_events)
            workers.stop("w1")
        assert during < 1.0, "the admin backlog was applied before the third worker joined"
        finish(settings, workers, ends, lines)
    finally:
        workers.kill_all()


def test_repeated_malformed_ids_are_rejected_every_time_through_the_pipeline(
    settings: Settings, tmp_path: Path
) -> None:
    folder = Path(__file__).parent.parent / "scenarios" / "22-malformed-event-ids-and-nul"
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    workers = Workers(settings, tmp_path)
    try:
        workers.start("w1")
        got = finish(settings, workers, ends, lines)
    finally:
        workers.kill_all()
    malformed = [r for r in got["rejected"] if r["event_id"] in ("", "evt 1", "e" * 129, "\u00e9-1")]
    assert len(malformed) == 8 and {r["reason"] for r in malformed} == {"schema_violation"}
