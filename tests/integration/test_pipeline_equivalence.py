"""End to end, the pipeline publishes what `replay` computes (SPEC section 6), for a generated stream of a
few thousand events with duplicates, bad records and events that arrive before what they refer to,
processed by a consumer group of worker processes with a frozen clock:

- two workers;
- two workers, one of them SIGKILLed midway and restarted;
- two workers, a third one joining midway (a rebalance while batches are in flight).

Waiting events. An event that names a program or meeting not yet known waits, for the park timeout
(wall time). `replay` rejects what still waits at the end of the file; the pipeline rejects what waited
longer than the park timeout. The two agree only if nothing that will be released waits longer than the
timeout, and a SIGKILL or a rebalance stalls partitions for seconds. So the workers run with a park
timeout longer than any stall of the test (PARK_WHILE_RUNNING_S), and once every input offset is
applied and the outbox is empty (the end of the file: nothing can release what still waits) they are
stopped with SIGTERM (which must exit 0) and a finisher worker with a short park timeout rejects the
leftovers with unknown_program/unknown_meeting, as replay does at the end of its input.
"""

from __future__ import annotations

import asyncio
import functools
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
from session_tally.traffic import TrafficConfig, generate_tagged
from tests.integration.pipeline_helpers import (
    BackgroundPublish,
    Probe,
    applied_fraction,
    assert_same_document,
    comparable,
    kill_worker,
    metric_value,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_group,
    wait_idle,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 4000
STREAM = TrafficConfig(
    seed=20260301, order_independent=True, bad_fraction=0.03, duplicate_fraction=0.02, early_fraction=0.02
)
AT = "2026-03-01T00:00:00Z"  # inside the stream's event time: upcoming, unconfirmed and settled meetings
BATCH = 100  # small batches: many transactions, so that a kill or a rebalance lands among them
CHUNKS, CHUNK_INTERVAL_S = 20, 0.3  # the stream is published live, over about 6 s
PARK_WHILE_RUNNING_S = 120.0
PARK_FINISH_S = 0.5


@functools.cache
def stream() -> tuple[list[bytes], Counter[str]]:
    tagged = list(generate_tagged(STREAM, EVENTS))
    kinds = Counter("bad" if t.kind.startswith("bad:") else t.kind for t in tagged)
    kinds["early"] = sum(t.early for t in tagged)
    return [t.record.value for t in tagged], kinds


@functools.cache
def expected() -> str:
    lines, _ = stream()
    return json.dumps(comparable(replay(lines, parse_instant(AT))), sort_keys=True)


def test_stream_exercises_what_it_should() -> None:
    """The stream has what these tests claim to cover (guards against a generator change)."""
    _, kinds = stream()
    assert kinds["duplicate"] >= 20 and kinds["bad"] >= 50 and kinds["early"] >= 20, kinds
    doc = json.loads(expected())
    statuses = Counter(m["status"] for m in doc["meetings"])
    for status in ("upcoming", "unconfirmed", "confirmed", "auto_confirmed", "late_canceled_pending", "late_canceled"):
        assert statuses[status] > 0, statuses
    reasons = Counter(r["reason"] for r in doc["rejected"])
    assert reasons["unknown_program"] > 0 and reasons["unknown_meeting"] > 0, reasons
    assert len(reasons) >= 10, reasons


def _log(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}.log"


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class Group:
    """Worker processes of one consumer group, each with its own log file."""

    def __init__(self, settings: Settings, tmp_path: Path, worker_settings: Settings | None = None) -> None:
        self.settings = settings  # what the test reads with (probes, snapshot)
        self.worker_settings = worker_settings or settings  # what the workers run with (e.g. through a proxy)
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.per_worker = 1  # group members per worker process

    def start(
        self, name: str, park_timeout_s: float = PARK_WHILE_RUNNING_S, http_port: int = -1, restart: bool = False
    ) -> subprocess.Popen[bytes]:
        if not restart:
            assert name not in self.procs, name
        proc = start_worker_ex(
            self.worker_settings,
            _log(self.tmp_path, name),
            clock=AT,
            park_timeout_s=park_timeout_s,
            batch_size=BATCH,
            http_port=http_port,
        )
        self.procs[name] = proc
        return proc

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs.values() if p.poll() is None]

    def stop_all(self) -> None:
        """SIGTERM every running worker; each must exit 0 (graceful)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                rc = stop_worker(proc)
                assert rc == 0, f"worker {name} exited {rc} on SIGTERM:\n{_tail(_log(self.tmp_path, name))}"

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def finish_and_compare(self, ends: dict[str, int]) -> dict[str, Any]:
        """Wait until the input is applied and published, stop, expire the leftovers, compare."""
        settings = self.settings
        with Probe(settings) as probe:
            wait_until(
                lambda: (s := probe.state())["outbox"] == 0 and applied_fraction(s["offsets"], ends) == 1.0,
                60,
                "every input offset applied and the outbox empty",
                interval_s=0.2,
                procs=self.running(),
            )
        self.stop_all()
        finisher = self.start("finisher", park_timeout_s=PARK_FINISH_S)
        try:
            state = wait_idle(settings, ends, timeout_s=45, procs=[finisher])
        finally:
            self.stop_all()
        snapshot = asyncio.run(read_snapshot(settings.kafka_bootstrap_servers, settings.topics))
        got = comparable(snapshot)
        want = json.loads(expected())
        assert_same_document(got, want)
        return state


def _midway(settings: Settings, publish: BackgroundPublish, group: Group, low: float) -> float:
    """Wait until ``low`` of the stream is applied; it must not be all of it (then it is not midway)."""
    with Probe(settings) as probe:
        fraction = wait_until(
            lambda: (f := publish.applied(probe.offsets())) >= low and f,
            60,
            f"{low:.0%} of the input applied",
            interval_s=0.02,
            procs=group.running(),
        )
    assert fraction < 1.0, f"the whole input was applied before the midway action ({fraction:.2f})"
    return float(fraction)


def _start_pair(settings: Settings, group: Group, chunks: int = CHUNKS) -> BackgroundPublish:
    """Two workers, the group stable (each owns partitions), then the stream, published live.

    A worker may be more than one group member (one consumer per input topic): the members of one
    worker are counted first, then the group must have twice as many."""
    bootstrap = settings.kafka_bootstrap_servers
    group.start("w1")
    group.per_worker = len(wait_group(bootstrap, settings.group_id, None, 60, procs=group.running()))
    group.start("w2")
    wait_group(bootstrap, settings.group_id, 2 * group.per_worker, 60, procs=group.running())
    return BackgroundPublish(settings, stream()[0], chunks=chunks, interval_s=CHUNK_INTERVAL_S)


def test_two_workers_equal_replay(settings: Settings, tmp_path: Path) -> None:
    group = Group(settings, tmp_path)
    try:
        publish = _start_pair(settings, group)
        group.finish_and_compare(publish.join())
    finally:
        group.kill_all()


def test_worker_killed_and_restarted_midway_equal_replay(settings: Settings, tmp_path: Path) -> None:
    """SIGKILL one of two workers while batches flow; restart it (a new member: the group rebalances
    once the dead member's session expires, and its partitions resume from what PostgreSQL applied)."""
    group = Group(settings, tmp_path)
    try:
        publish = _start_pair(settings, group)
        fraction = _midway(settings, publish, group, low=0.3)
        kill_worker(group.procs["w2"])  # no shutdown hook, no ack; a transaction or relay round may be cut
        with Probe(settings) as probe:
            after_kill = publish.applied(probe.offsets())
        assert after_kill < 1.0, f"nothing left to process after the kill (at {fraction:.2f})"
        group.start("w2", restart=True)
        group.finish_and_compare(publish.join())
    finally:
        group.kill_all()


def test_third_worker_joining_midway_equal_replay(settings: Settings, tmp_path: Path) -> None:
    """A third worker joins while batches flow: a stop-the-world rebalance with batches in flight. The
    stream is published over about 18 s (not 6): a joiner takes seconds to start and join, and it must
    find records left to apply."""
    group = Group(settings, tmp_path)
    try:
        publish = _start_pair(settings, group, chunks=3 * CHUNKS)
        _midway(settings, publish, group, low=0.2)
        w3 = group.start("w3", http_port=0)
        http = ready_info(_log(tmp_path, "w3"), w3)["http"]
        wait_group(settings.kafka_bootstrap_servers, settings.group_id, 3 * group.per_worker, 60, procs=group.running())
        # the joiner owns partitions and applies records from them
        wait_until(
            lambda: metric_value(http, "session_tally_records_total") > 0,
            60,
            "the third worker to apply records",
            procs=[w3],
        )
        group.finish_and_compare(publish.join())
    finally:
        group.kill_all()
