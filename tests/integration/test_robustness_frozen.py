"""A frozen worker once froze its group (issue 9, point 7): SIGSTOP inside a batch transaction kept its
row locks on ``consumer_offsets``, and the worker that took its partitions over waited on them until it
resumed. The workers' sessions are now bounded (storage/db.py SESSION_BOUNDS: lock_timeout 5 s,
idle_in_transaction_session_timeout 20 s, statement_timeout 60 s) and lock timeouts are retried.

Two real workers share a live stream; one is SIGSTOPped while a session of it holds a batch transaction
and is in the middle of a COPY (seen from outside in pg_stat_activity / pg_locks, as
tests/integration/test_pipeline_crash.py aims its kills): a case that no PostgreSQL session bound ends,
since the server handles a statement timeout inside COPY FROM STDIN only once the client sends again.
It failed in CI before the workers' health monitors ended such sessions (storage/db.py
end_stalled_sessions): the other worker waited on the frozen one's locks until the deadline. A freeze
between statements (idle in a transaction: PostgreSQL ends it, or the monitors do when it follows a
pipeline) is the fault campaign's freeze-batch scenario (tests/campaign/freeze.py, in CI's quick set);
the reaper's criterion itself is tests/integration/test_stalled_sessions.py.

While it stays stopped, the other takes its partitions over (after Kafka's session timeout, 15 s), ends
the frozen session and applies and publishes the whole stream. Then it resumes and rejoins; the result
equals replay, and the outputs read raw have no version going backwards and no two contents under one
version."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from domain.replay import replay
from domain.timefmt import parse_instant
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from session_tally.traffic import TrafficConfig, generate
from storage.messages import LANES
from tests.integration.pipeline_helpers import (
    BackgroundPublish,
    FastProbe,
    Probe,
    applied_fraction,
    assert_same_document,
    check_rejected,
    check_versions,
    comparable,
    group_assignment,
    metric_value,
    read_raw_topic,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_group,
    wait_idle,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 2500
STREAM = TrafficConfig(
    seed=909, order_independent=True, bad_fraction=0.03, duplicate_fraction=0.02, early_fraction=0.02
)
AT = "2026-03-01T00:00:00Z"
BATCH = 50
PARK_WHILE_RUNNING_S = 120.0  # nothing waiting expires while a worker is frozen (see test_pipeline_equivalence)
TAKEOVER_DEADLINE_S = 120.0  # Kafka's session timeout (15 s) + PostgreSQL's bound on the frozen sessions + margin


@functools.cache
def stream() -> list[bytes]:
    return [r.value for r in generate(STREAM, EVENTS)]


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat ('T' stopped, 'S' sleeping, 'R' running)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


class Pair:
    """Two workers of one group, each with its own PostgreSQL application_name and log."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.apps = {name: f"st-{name}-{settings.db_schema}" for name in ("a", "b")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, park_timeout_s: float = PARK_WHILE_RUNNING_S) -> subprocess.Popen[bytes]:
        self.procs[name] = start_worker_ex(
            self.settings,
            self.log(name),
            clock=AT,
            park_timeout_s=park_timeout_s,
            batch_size=BATCH,
            instance_id=f"frozen-{name}",
            db_application_name=self.apps.get(name),
            http_port=0,
        )
        return self.procs[name]

    def log(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def stop(self, name: str) -> None:
        rc = stop_worker(self.procs[name])
        assert rc == 0, f"worker {name} exited {rc}:\n{self.log(name).read_text(errors='replace')[-3000:]}"

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait(10)


def row_lockers(fast: FastProbe, app: str, mid_copy: bool = False) -> list[tuple[Any, ...]]:
    """Sessions of ``app`` inside a transaction that holds row locks on consumer_offsets (an input batch
    claims its partitions' rows: INSERT .. ON CONFLICT, SELECT .. FOR UPDATE); a transaction that only
    reads the table (the health monitor, the admin barrier) holds none. ``mid_copy``: only those whose
    server waits for the rest of a COPY's data."""
    copying = "AND a.state = 'active' AND a.wait_event = 'ClientRead' AND a.query LIKE 'COPY %%' " if mid_copy else ""
    return fast.conn.execute(
        """
        SELECT a.pid, a.state, left(a.query, 100) FROM pg_stat_activity a
        WHERE a.application_name = %s AND a.xact_start IS NOT NULL """
        + copying
        + """AND EXISTS (
            SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'relation'
            AND l.relation = to_regclass(%s) AND l.mode IN ('RowShareLock', 'RowExclusiveLock'))
        """,
        (app, f'"{fast.schema}".consumer_offsets'),
    ).fetchall()


def _freeze_inside_a_transaction(fast: FastProbe, app: str, proc: subprocess.Popen[bytes]) -> list[tuple[Any, ...]]:
    """SIGSTOP ``proc`` as soon as one of its sessions holds row locks on consumer_offsets (a batch
    transaction) inside a COPY; when the COPY ended before the signal landed (its data was sent), let it
    go on and aim again."""
    for _ in range(60):
        wait_until(lambda: row_lockers(fast, app, mid_copy=True), 30, "a batch transaction of worker a in a COPY",
                   interval_s=0.002, procs=[proc])  # fmt: skip
        os.kill(proc.pid, signal.SIGSTOP)
        wait_until(lambda: process_state(proc.pid) == "T", 5, "worker a stopped", interval_s=0.01)
        held = row_lockers(fast, app, mid_copy=True)
        if held:
            return held
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError("never stopped worker a inside a batch transaction's COPY")


def test_a_frozen_worker_holds_up_nobody(settings: Settings, tmp_path: Path) -> None:
    lines = stream()
    bootstrap, group = settings.kafka_bootstrap_servers, settings.group_id
    pair = Pair(settings, tmp_path)
    fast = FastProbe(settings, LANES)
    try:
        a = pair.start("a")
        per_worker = len(wait_group(bootstrap, group, None, 60, procs=[a]))
        b = pair.start("b")
        wait_group(bootstrap, group, 2 * per_worker, 60, procs=[a, b])
        http_b = ready_info(pair.log("b"), b)["http"]
        publish = BackgroundPublish(settings, lines, chunks=20, interval_s=0.3)
        with Probe(settings) as probe:
            wait_until(lambda: publish.applied(probe.offsets()) > 0.1, 60, "10% applied", procs=[a, b])

        held = _freeze_inside_a_transaction(fast, pair.apps["a"], a)
        frozen_at, stopped_offsets = time.monotonic(), fast.offsets()
        _state, members = asyncio.run(group_assignment(bootstrap, group))
        owned_by_a = {tp for m, tps in members.items() if m.startswith("frozen-a") for tp in tps}
        assert owned_by_a, members
        ends = publish.join()

        # while a stays stopped, b applies and publishes everything, a's partitions included
        with Probe(settings) as probe:
            wait_until(
                lambda: (s := probe.state())["outbox"] == 0 and applied_fraction(s["offsets"], ends) == 1.0,
                TAKEOVER_DEADLINE_S, "worker b to apply and publish the whole stream while worker a is stopped",
                interval_s=0.2, procs=[b],
            )  # fmt: skip
        took_s = time.monotonic() - frozen_at
        assert process_state(a.pid) == "T", "worker a must still be stopped: the progress is worker b's"
        after = fast.offsets()
        moved = sorted(k for k in owned_by_a if after.get(k, 0) > stopped_offsets.get(k, 0))
        assert moved, f"none of worker a's partitions {sorted(owned_by_a)} moved while it was stopped"
        # b could only finish once its health monitor ended a's session frozen inside the COPY
        assert not row_lockers(fast, pair.apps["a"]), "a's frozen transaction still holds its row locks"
        ended = metric_value(http_b, "session_tally_stalled_sessions_ended_total")
        assert ended >= 1, "worker b's health monitor never ended a's frozen session"
        retries = metric_value(http_b, "session_tally_transaction_retries_total")
        print(f"frozen inside {held}; stream done {took_s:.1f} s after the freeze; a's partitions moved: {moved}; "
              f"b's transaction retries: {retries}; sessions b ended: {ended}")  # fmt: skip

        os.kill(a.pid, signal.SIGCONT)  # a wakes up to a closed session and a group that moved on
        wait_group(bootstrap, group, 2 * per_worker, 90, procs=[a, b])
        pair.stop("a")
        pair.stop("b")
        finisher = pair.start("finisher", park_timeout_s=0.5)  # the end of the input, as replay's
        wait_idle(settings, ends, timeout_s=45, procs=[finisher])
        pair.stop("finisher")
    finally:
        fast.close()
        pair.close()

    counts = {}
    for topic, entity in ((settings.topics.path_tallies, "path_id"), (settings.topics.meeting_statuses, "meeting_id")):
        counts[entity] = check_versions(asyncio.run(read_raw_topic(bootstrap, topic)), entity)
    counts["rejected"] = check_rejected(asyncio.run(read_raw_topic(bootstrap, settings.topics.rejected)))
    print("outputs:", counts)
    snapshot = asyncio.run(read_snapshot(bootstrap, settings.topics))
    assert_same_document(comparable(snapshot), comparable(replay(lines, parse_instant(AT))))
