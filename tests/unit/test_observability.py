"""The worker's metrics facade, its child-process merge, its HTTP endpoint and probes, and its log
formats, without services (the same against a running worker: tests/integration/test_observability.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.log_context import batch_context
from session_tally import logs
from session_tally.endpoint import EndpointError, HttpEndpoint
from session_tally.health import HealthMonitor
from session_tally.metrics import Metrics
from storage.messages import SourceRecord

ROOT = Path(__file__).resolve().parents[2]


def families(metrics: Metrics) -> dict[str, Any]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(fams: dict[str, Any], sample: str, **labels: str) -> float | None:
    for family in fams.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def test_exposition_is_typed_escapes_label_values_and_has_process_metrics() -> None:
    m = Metrics()
    awkward = 'a "quoted" \\ back\nslash'
    m.inc("session_tally_misrouted_records_total", 2, topic=awkward)
    m.observe("session_tally_batch_duration_seconds", 0.3, topic="t")
    fams = families(m)
    assert value(fams, "session_tally_misrouted_records_total", topic=awkward) == 2
    assert fams["session_tally_batch_duration_seconds"].type == "histogram"
    assert value(fams, "session_tally_batch_duration_seconds_bucket", topic="t", le="0.25") == 0
    assert value(fams, "session_tally_batch_duration_seconds_bucket", topic="t", le="0.5") == 1
    assert (value(fams, "process_resident_memory_bytes") or 0) > 0
    assert "session_tally_events_created" not in fams and "session_tally_events" in fams


def test_observe_many_equals_observing_one_by_one() -> None:
    values = [0.0, 0.005, 0.0051, 0.3, 2.5, 59.9, 60.0, 7 * 3600.0, 1e9]
    bulk, single = Metrics(process_metrics=False), Metrics(process_metrics=False)
    bulk.observe_many("session_tally_event_commit_latency_seconds", values, topic="t")
    bulk.observe_many("session_tally_event_commit_latency_seconds", [], topic="t")
    for v in values:
        single.observe("session_tally_event_commit_latency_seconds", v, topic="t")
    name = "session_tally_event_commit_latency_seconds"
    assert families(bulk)[name].samples == families(single)[name].samples
    assert value(families(bulk), "session_tally_event_commit_latency_seconds_bucket", topic="t", le="0.005") == 2


def test_an_undeclared_name_is_an_error() -> None:
    with pytest.raises(KeyError):
        Metrics(process_metrics=False).inc("session_tally_no_such_thing_total")


def test_replace_drops_the_series_of_partitions_no_longer_owned() -> None:
    m = Metrics(process_metrics=False)
    m.replace("session_tally_consumer_lag", {("t", "0"): 5, ("t", "1"): 7})
    m.replace("session_tally_consumer_lag", {("t", "1"): 3})
    fams = families(m)
    assert value(fams, "session_tally_consumer_lag", topic="t", partition="1") == 3
    assert value(fams, "session_tally_consumer_lag", topic="t", partition="0") is None


def test_the_childs_snapshot_adds_to_the_workers_samples() -> None:
    worker, child = Metrics(), Metrics(process_metrics=False)
    worker.inc("session_tally_events_total", 3, outcome="applied")
    child.inc("session_tally_events_total", 2, outcome="applied")
    child.inc("session_tally_published_messages_total", 4, topic="tallies")
    child.set("session_tally_read_horizon_lag_seconds", -1)
    child.observe("session_tally_relay_round_seconds", 0.02)
    worker.merge_child(json.loads(json.dumps(child.snapshot())))  # as it crosses the pipe
    fams = families(worker)
    assert value(fams, "session_tally_events_total", outcome="applied") == 5
    assert value(fams, "session_tally_published_messages_total", topic="tallies") == 4
    assert value(fams, "session_tally_read_horizon_lag_seconds") == -1
    assert value(fams, "session_tally_relay_round_seconds_count") == 1
    assert value(fams, "session_tally_relay_round_seconds_bucket", le="0.025") == 1
    worker.merge_child(child.snapshot())  # a newer snapshot replaces the older one: nothing counted twice
    assert value(families(worker), "session_tally_events_total", outcome="applied") == 5


class FakeConsumer:
    def __init__(self, parts: set[tuple[str, int]], joined: bool = True, problem: str | None = None) -> None:
        self.parts, self.joined, self.problem = parts, joined, problem
        self.asked: list[bool] = []

    def assigned(self) -> set[tuple[str, int]]:
        return self.parts

    def loop_problem(self, stall_s: float, records_waiting: bool) -> str | None:
        self.asked.append(records_waiting)
        return self.problem


def monitor(consumers: dict[str, FakeConsumer], postgres_up: bool = True, metrics: Any = None) -> HealthMonitor:
    async def ping_postgres() -> float | None:
        if not postgres_up:
            raise OSError("connection refused")
        return None

    async def ping_kafka() -> bool:
        return True

    async def ends(topic: str) -> dict[int, int]:
        return {0: 10, 1: 4}

    async def applied(topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        return {("t", 0): 10, ("t", 1): 1}

    return HealthMonitor(
        ping_postgres=ping_postgres,
        ping_kafka=ping_kafka,
        end_offsets=ends,
        applied_offsets=applied,
        consumers=consumers,
        producers_alive=lambda: True,
        details=dict,
        metrics=metrics,
    )


def test_probes_liveness_needs_turning_loops_readiness_needs_services_and_a_join() -> None:
    path = FakeConsumer({("t", 0), ("t", 1)})
    m = Metrics(process_metrics=False)
    mon = monitor({"path": path}, metrics=m)
    asyncio.run(mon.round())
    assert mon.liveness()[0] == {"monitor": True, "consumer_loops": True}
    assert path.asked == [True]  # partition 1 has 3 records waiting
    assert mon.readiness()[0] == {"postgres": True, "kafka": True, "joined": True}
    fams = families(m)
    assert value(fams, "session_tally_consumer_lag", topic="t", partition="1") == 3
    assert value(fams, "session_tally_assigned_partitions", topic="t") == 2
    assert value(fams, "session_tally_health_check", check="postgres") == 1

    path.problem, path.joined = "one batch in the handler for 200 s", False
    checks, details = mon.liveness()
    assert checks["consumer_loops"] is False and details["consumer_loops"] == {"path": path.problem}
    assert mon.readiness()[0]["joined"] is False

    down = monitor({"path": FakeConsumer({("t", 0)})}, postgres_up=False)
    asyncio.run(down.round())
    assert down.readiness()[0]["postgres"] is False
    assert all(down.liveness()[0].values()), "PostgreSQL away is no reason to restart"


def test_each_round_ends_stalled_sessions_counts_them_and_survives_a_failure() -> None:
    answers: list[Any] = [[(42, "COPY meetings (...) FROM STDIN")], [], OSError("connection lost")]

    async def end_stalled() -> list[tuple[int, str]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    m = Metrics(process_metrics=False)
    mon = monitor({"path": FakeConsumer({("t", 0)})}, metrics=m)
    mon.end_stalled = end_stalled
    for _ in range(3):
        asyncio.run(mon.round())
    assert answers == []  # asked once per round, the failing round included
    assert value(families(m), "session_tally_stalled_sessions_ended_total") == 1
    assert mon.readiness()[0]["postgres"] is True  # a failed check is no verdict on PostgreSQL


async def _request(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nAccept: */*\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_endpoint_routes_and_refuses_a_port_in_use() -> None:
    async def scenario() -> None:
        mon = monitor({"path": FakeConsumer(set(), joined=False)})
        endpoint = HttpEndpoint(Metrics(process_metrics=False))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            assert (await _request(port, "/livez"))[0] == 200  # starting: alive, not ready
            assert (await _request(port, "/readyz"))[0] == 503
            await mon.round()
            endpoint.probes = mon
            status, body = await _request(port, "/readyz")
            assert status == 503 and json.loads(body)["checks"]["joined"] is False
            assert (await _request(port, "/livez"))[0] == 200
            status, body = await _request(port, "/metrics")
            assert status == 200 and b"# TYPE session_tally_consumer_lag gauge" in body
            assert (await _request(port, "/nope"))[0] == 404
            with pytest.raises(EndpointError, match="in use"):
                await HttpEndpoint(Metrics(process_metrics=False)).start("127.0.0.1", port)
        finally:
            await endpoint.stop()

    asyncio.run(scenario())


def test_worker_with_its_port_taken_exits_2_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "session_tally", "worker", "--http-port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], result.stderr
    assert time.monotonic() - started < 60


def _capture(fmt: str) -> tuple[io.StringIO, io.StringIO]:
    err, out = io.StringIO(), io.StringIO()
    saved = sys.stderr, sys.stdout
    sys.stderr, sys.stdout = err, out
    try:
        logs.configure("INFO", fmt)
    finally:
        sys.stderr, sys.stdout = saved
    return err, out


def test_json_logs_carry_the_batch_fields_and_extra_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    err, out = _capture("json")
    log = logging.getLogger("session_tally.test")
    batch = [SourceRecord("in", 3, offset, None, b"{}") for offset in (7, 8, 9)]
    with batch_context(batch):
        log.warning("batch line")
        log.error("record line", extra={"event_id": "e-1", "offset": 8})
    log.info("plain %s", "line")
    logs.announce("session-tally worker ready: {'http': None}", http=None)
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["batch line", "record line", "plain line"]
    first, second, third = lines
    assert {"time", "level", "logger", "message"} <= first.keys() and first["time"].endswith("Z")
    assert (first["topic"], first["partition"], first["offset"], first["last_offset"]) == ("in", 3, 7, 9)
    assert (second["event_id"], second["offset"], second["level"]) == ("e-1", 8, "ERROR")
    assert "topic" not in third
    (ready,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert ready["message"] == "session-tally worker ready: {'http': None}" and ready["logger"] == logs.ANNOUNCE_LOGGER


def test_text_logs_show_the_fields_and_announce_bare_lines() -> None:
    err, out = _capture("text")
    log = logging.getLogger("session_tally.test")
    with batch_context([SourceRecord("in", 0, 5, None, b""), SourceRecord("in", 2, 1, None, b"")]):
        log.warning("two partitions")
    logs.announce("session-tally worker stopped")
    assert err.getvalue().rstrip().endswith("two partitions [topic=in partitions=0:5-5,2:1-1]"), err.getvalue()
    assert out.getvalue() == "session-tally worker stopped\n"


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger(logs.ANNOUNCE_LOGGER).handlers.clear()
