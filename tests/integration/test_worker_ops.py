"""Operating a worker: graceful shutdown, health and metrics, concurrent migrations, and the wall clock
moving a status with no new input (a correctness requirement of the clock, measured, not benchmarked)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from domain.replay import Replay
from domain.timefmt import format_instant, parse_instant
from session_tally.config import Settings
from session_tally.traffic import TrafficConfig, generate
from storage.messages import LANES
from tests.integration.pipeline_helpers import (
    ROOT,
    FastProbe,
    kafka_committed,
    kill_worker,
    publish_lines,
    read_raw_topic,
    ready_info,
    start_worker_ex,
    wait_group,
    wait_idle,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

AT = "2026-03-01T00:00:00Z"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# ------------------------------------------------------------------------------------ graceful stop

GRACEFUL_S = 10.0


def test_sigterm_drains_the_batch_in_flight_and_exits_0(settings: Settings, tmp_path: Path) -> None:
    """SIGTERM while an input-batch transaction is open: that batch commits AND is acknowledged to Kafka
    (nothing is redelivered to the next worker), the relay publishes what it wrote (outbox empty), and
    the process exits 0 within the graceful timeout."""
    lines = [r.value for r in generate(TrafficConfig(seed=99, order_independent=True), 20000)]
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    log = tmp_path / "worker.log"
    app = "st-ops-" + settings.db_schema
    worker = start_worker_ex(
        settings,
        log,
        clock=AT,
        park_timeout_s=120,
        batch_size=200,
        db_application_name=app,
        extra=["--graceful-timeout", str(GRACEFUL_S)],
    )
    probe = FastProbe(settings, LANES)
    try:
        # the worker is up (its producers child too: a SIGTERM in the first second, before the child
        # installed its handlers, kills the child at once and leaves the last rows for the next relay)
        wait_until(
            lambda: "session-tally producers ready" in log.read_text(errors="replace"),
            60,
            "the worker's producers",
            procs=[worker],
        )

        # the moment: a batch transaction is open (it holds consumer_offsets) and input remains
        def in_flight() -> dict[str, int] | None:
            before = probe.offsets()
            sessions = probe.sessions(app)
            return before if any(s["batch"] for s in sessions) and before else None

        before = wait_until(in_flight, 60, "an input batch in flight", interval_s=0.0, procs=[worker])
        t0 = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            rc = worker.wait(GRACEFUL_S + 10)
        except subprocess.TimeoutExpired:
            kill_worker(worker)
            raise AssertionError(f"no exit {GRACEFUL_S + 10}s after SIGTERM:\n{_tail(log)}") from None
        elapsed = time.monotonic() - t0
        assert rc == 0, _tail(log)
        assert elapsed < GRACEFUL_S, f"took {elapsed:.1f}s to stop (graceful timeout {GRACEFUL_S}s)"
        assert "session-tally worker stopped" in log.read_text(errors="replace")

        after = probe.offsets()
        assert sum(after.values()) > sum(before.values()), "the batch in flight was not committed"
        assert sum(after.values()) < sum(ends.values()), "the whole input was applied: nothing was in flight"
        committed = asyncio.run(kafka_committed(settings.kafka_bootstrap_servers, settings.group_id))
        behind = {k: (committed.get(k), v) for k, v in after.items() if committed.get(k, 0) != v}
        assert not behind, f"applied in PostgreSQL but not acknowledged to Kafka (would be redelivered): {behind}"
        outbox = probe.conn.execute(f'SELECT count(*) FROM "{settings.db_schema}".outbox').fetchone()
        assert outbox is not None and outbox[0] == 0, f"{outbox} outbox rows left unpublished"
    finally:
        kill_worker(worker)
        probe.close()


def test_sigterm_right_after_start_still_publishes_what_was_applied(settings: Settings, tmp_path: Path) -> None:
    """SIGTERM as soon as the first batch is applied (a deploy that rolls a worker right after it came
    up): the worker exits 0 and the relay has published what the applied batches wrote (outbox empty),
    as docs/operations.md "Stopping" promises."""
    lines = [r.value for r in generate(TrafficConfig(seed=99, order_independent=True), 20000)]
    asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, park_timeout_s=120, batch_size=200)
    probe = FastProbe(settings, LANES)
    try:
        wait_until(lambda: sum(probe.offsets().values()) > 0, 60, "the first batch applied", procs=[worker])
        worker.send_signal(signal.SIGTERM)
        rc = worker.wait(GRACEFUL_S + 10)
        assert rc == 0, _tail(log)
        outbox = probe.conn.execute(f'SELECT count(*) FROM "{settings.db_schema}".outbox').fetchone()
        assert outbox is not None and outbox[0] == 0, (
            f"{outbox[0] if outbox else '?'} outbox rows left unpublished after a graceful stop "
            f"(producers child ready before SIGTERM: {'session-tally producers ready' in log.read_text()})"
        )
    finally:
        kill_worker(worker)
        probe.close()


# ----------------------------------------------------------------------------- health and metrics

OUTCOMES = ("applied", "duplicate", "skipped", "rejected")


@pytest.mark.parametrize("producers", ["process", "in-process"])
def test_healthz_and_metrics_count_every_event(settings: Settings, tmp_path: Path, producers: str) -> None:
    """While a worker runs, /healthz is 200 with every check true, and /metrics accounts for every input
    record exactly once: applied, duplicate, skipped or rejected in a batch (as replay counts them), or
    rejected by the janitor after waiting in vain (``session_tally_waiting_expired_total``); with the
    producers (relay, clock, janitor) in the worker's child process (the default) and in-process."""
    lines = [r.value for r in generate(TrafficConfig(seed=5, order_independent=True, bad_fraction=0.05), 3000)]
    reference = Replay()
    reference.feed_lines(lines)
    doc = reference.document(parse_instant(AT))
    waited_in_vain = sum(r["reason"] in ("unknown_program", "unknown_meeting") for r in doc["rejected"])
    assert waited_in_vain > 0 and all(reference.counts.get(k) for k in OUTCOMES), reference.counts

    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, park_timeout_s=3.0, http_port=0, extra=["--producers", producers])
    try:
        http = ready_info(log, worker)["http"]
        assert http and http.startswith("http://127.0.0.1:"), http
        status, body = _get(http + "/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok", health
        assert health["checks"] and all(v is True for v in health["checks"].values()), health

        ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
        wait_idle(settings, ends, timeout_s=60, procs=[worker])

        def settled() -> dict[str, float] | None:
            # every record ends once as applied, duplicate, skipped or rejected (in a batch, or by the
            # janitor after waiting in vain, counted when its round ends)
            status, body = _get(http + "/metrics")
            assert status == 200
            m = _parse_metrics(body.decode())
            done = sum(m.get(f'session_tally_events_total{{outcome="{k}"}}', 0) for k in OUTCOMES)
            return m if done + m.get("session_tally_waiting_expired_total", 0) == len(lines) else None

        try:
            metrics = wait_until(settled, 15, "every record counted once", interval_s=0.2, procs=[worker])
        except AssertionError:
            m = _parse_metrics(_get(http + "/metrics")[1].decode())
            done = sum(m.get(f'session_tally_events_total{{outcome="{k}"}}', 0) for k in OUTCOMES)
            expired = m.get("session_tally_waiting_expired_total")
            raise AssertionError(
                f"/metrics accounts for {done:g} + {expired} expired of {len(lines)} records "
                f"({waited_in_vain} waited in vain and were rejected by the janitor; "
                f"session_tally_waiting_expired_total is {expired}):\n{m}"
            ) from None
        events = {k: metrics.get(f'session_tally_events_total{{outcome="{k}"}}', 0) for k in (*OUTCOMES, "parked")}
        expired = metrics.get("session_tally_waiting_expired_total", 0)
        # outcomes as replay counts them for the same records (parking may differ: it depends on how the
        # two input topics interleave)
        assert {k: events[k] for k in OUTCOMES} == {k: reference.counts.get(k, 0) for k in OUTCOMES}, events
        assert expired == waited_in_vain
        assert metrics["session_tally_records_total"] == len(lines)
        assert metrics.get("session_tally_outbox_backlog") == 0 and metrics.get("session_tally_waiting_events") == 0

        status, body = _get(http + "/healthz")
        assert status == 200 and all(json.loads(body)["checks"].values()), body
        assert _get(http + "/nope")[0] == 404
    finally:
        kill_worker(worker)


def _parse_metrics(body: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


# --------------------------------------------------------------------------- concurrent migrations


def test_db_upgrade_from_three_processes_at_once(settings: Settings, tmp_path: Path) -> None:
    """Three `session-tally db upgrade` on a schema that does not exist yet: all succeed, one schema at head."""
    schema = settings.db_schema + "_fresh"
    env = worker_env(settings) | {"SESSION_TALLY_DB_SCHEMA": schema}
    engine = create_engine(settings.database_url)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "session_tally", "db", "upgrade"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            outputs.append((p.returncode, out.decode(errors="replace")))
        assert [rc for rc, _ in outputs] == [0, 0, 0], outputs
        revisions = {out.strip().splitlines()[-1] for _, out in outputs}
        assert len(revisions) == 1 and f"database schema {schema} at revision" in next(iter(revisions)), outputs
        with engine.connect() as conn:
            version = conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version')).scalars().all()
            tables = set(
                conn.execute(
                    text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
                ).scalars()
            )
        assert len(version) == 1 and next(iter(revisions)).endswith(version[0]), (version, revisions)
        assert {"orgs", "programs", "paths", "meetings", "outbox", "consumer_offsets", "admin_audit"} <= tables
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


# ---------------------------------------------------------------------------------- the wall clock

LEAD_S = 3.0
MAX_DELAY_S = 1.5


def _envelope(
    event_id: str, kind: str, occurred: datetime, data: dict[str, Any], role: str = "support", **ids: str
) -> bytes:
    doc = {
        "event_id": event_id,
        "type": kind,
        "schema_version": 1,
        "occurred_at": format_instant(int(occurred.timestamp() * 1_000_000)),
        "org_id": "org-clock",
        "actor": {"id": f"{role}-1", "role": role},
        "data": data,
        **ids,
    }
    return json.dumps(doc).encode()


def test_clock_publishes_unconfirmed_at_start_once_with_two_workers(settings: Settings, tmp_path: Path) -> None:
    """A meeting starting ~3 s from now becomes `unconfirmed` at its start with no new input: published
    within MAX_DELAY_S of the start, exactly once though two workers run clocks."""
    bootstrap = settings.kafka_bootstrap_servers
    workers = [start_worker_ex(settings, tmp_path / f"w{i}.log", park_timeout_s=60) for i in (1, 2)]
    try:
        for i, w in enumerate(workers, start=1):
            ready_info(tmp_path / f"w{i}.log", w)
        wait_group(bootstrap, settings.group_id, None, 60, procs=workers)

        now = datetime.now(UTC).replace(microsecond=0)
        start = now + timedelta(seconds=1 + LEAD_S)
        end = start + timedelta(minutes=45)
        program = {"program_id": "prog-clock"}
        path = {"program_id": "prog-clock", "path_id": "path-clock"}
        lines = [
            _envelope("c-1", "organization.session_management_set", now, {"enabled": True}),
            _envelope(
                "c-2",
                "program.created",
                now,
                {
                    "session_verification": True,
                    "late_cancel_window": None,
                    "auto_confirm_window": "P1D",
                    "authorized_hours": 10,
                },
                **program,
            ),
            _envelope(
                "c-3",
                "meeting.scheduled",
                now,
                {
                    "meeting_id": "m-clock",
                    "start": format_instant(int(start.timestamp() * 1e6)),
                    "end": format_instant(int(end.timestamp() * 1e6)),
                },
                role="system",
                **path,
            ),
        ]
        ends = asyncio.run(publish_lines(bootstrap, settings, lines))
        wait_idle(settings, ends, timeout_s=30, procs=workers)

        seen = asyncio.run(_watch_statuses(bootstrap, settings.topics.meeting_statuses, "m-clock", start, workers))
        statuses = [s for s, _ in seen]
        assert statuses[0] == "upcoming", seen
        arrived = [t for s, t in seen if s == "unconfirmed"]
        assert arrived, f"no unconfirmed status within {LEAD_S + MAX_DELAY_S + 3}s: {seen}"
        delay = arrived[0] - start.timestamp()
        print(f"unconfirmed published {delay:.3f}s after the start")
        assert 0 <= delay < MAX_DELAY_S, f"published {delay:.3f}s after the start"

        # exactly once, even though both workers' clocks saw it due
        records = asyncio.run(read_raw_topic(bootstrap, settings.topics.meeting_statuses))
        docs = [json.loads(r["value"]) for r in records]
        mine = Counter(d["status"] for d in docs if d["meeting_id"] == "m-clock")
        assert mine == Counter({"upcoming": 1, "unconfirmed": 1}), mine
        tallies = [json.loads(r["value"]) for r in asyncio.run(read_raw_topic(bootstrap, settings.topics.path_tallies))]
        assert [(t["upcoming_minutes"], t["pending_minutes"]) for t in tallies] == [(45, 0), (0, 45)], tallies
        assert [t["version"] for t in tallies] == [1, 2]
        # and no input came in meanwhile
        assert sum(ends.values()) == 3
        assert wait_idle(settings, ends, timeout_s=5, procs=workers)["offsets"] == ends
    finally:
        for w in workers:
            kill_worker(w)


async def _watch_statuses(
    bootstrap: str, topic: str, meeting_id: str, start: datetime, procs: list[subprocess.Popen[bytes]]
) -> list[tuple[str, float]]:
    """Tail the statuses topic: (status, wall time when it could be read) for ``meeting_id``, until a
    second after the first `unconfirmed` (so that a repeat would be seen) or a deadline."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from session_tally.snapshot import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    seen: list[tuple[str, float]] = []
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic, 30)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = start.timestamp() + MAX_DELAY_S + 3
        stop_at = deadline
        while time.time() < stop_at:
            for p in procs:
                assert p.poll() is None, f"worker exited with {p.returncode}"
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batch.values():
                for r in records:
                    doc = json.loads(r.value)
                    if doc["meeting_id"] == meeting_id:
                        seen.append((doc["status"], now))
                        if doc["status"] == "unconfirmed":
                            stop_at = min(stop_at, now + 1.0)
        return seen
    finally:
        await consumer.stop()
