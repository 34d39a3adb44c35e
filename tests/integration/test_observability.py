"""Observability of a running worker against the real Kafka and PostgreSQL: /metrics parses with
prometheus_client's parser, its families are typed, it shows the lag of each owned partition (exact
while records wait, 0 once they are applied) and histograms with counts; /livez and /readyz during a
database outage; JSON logs line by line.

Records wait deterministically: a consumer of the test joins the worker's admin group and holds some
admin partitions without applying them, after one record was written to one of them, so every path
batch waits at the admin barrier (consumers/barrier.py) until that consumer leaves.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from session_tally.config import Settings
from session_tally.traffic import TrafficConfig, generate
from tests.integration.faults import TcpProxy
from tests.integration.pipeline_helpers import (
    READY_PREFIX,
    kill_worker,
    metric_value,
    publish_lines,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)

pytestmark = pytest.mark.integration

AT = "2026-03-01T00:00:00Z"
PARTITIONS = 6


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def scrape(http: str) -> dict[str, Any]:
    """The families of /metrics by name, parsed by prometheus_client (raises on anything it cannot parse)."""
    with urllib.request.urlopen(http + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers
        body = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(body)}


def samples(families: dict[str, Any], family: str, sample: str | None = None) -> dict[tuple[Any, ...], float]:
    """{sorted label items: value} of one family's samples named ``sample`` (default: the family's name, with
    ``_total`` for a counter)."""
    found = families.get(family)
    if found is None:
        return {}
    name = sample or (family + "_total" if found.type == "counter" else family)
    return {tuple(sorted(s.labels.items())): s.value for s in found.samples if s.name == name}


def lag(families: dict[str, Any]) -> dict[tuple[str, int], float]:
    out = {}
    for labels, value in samples(families, "session_tally_consumer_lag").items():
        d = dict(labels)
        out[(d["topic"], int(d["partition"]))] = value
    return out


class Squatter:
    """A member of the worker's admin consumer group that holds the partitions it is given and never
    applies them (its own thread and event loop); ``stop()`` leaves the group."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.assignment: set[int] = set()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="squatter", daemon=True)

    def __enter__(self) -> Squatter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the squatter did not leave its group"

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=15_000,
            heartbeat_interval_ms=1_000,
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                await consumer.getmany(timeout_ms=100)
                self.assignment = {tp.partition for tp in consumer.assignment()}
        except BaseException as exc:
            self._error = exc
        finally:
            await consumer.stop()  # leaves the group: the worker gets every partition back


def _assigned(http: str, name: str) -> list[str] | None:
    status, doc = _get(http + "/readyz")
    return doc["details"]["assigned"][name] if status == 200 else None


@pytest.mark.parametrize("producers", ["in-process", "process"])
def test_metrics_parse_typed_with_lag_per_partition_and_histograms(
    settings: Settings, tmp_path: Path, producers: str
) -> None:
    lines = [r.value for r in generate(TrafficConfig(seed=11, order_independent=True, bad_fraction=0.05), 1500)]
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, park_timeout_s=3.0, http_port=0, extra=["--producers", producers])
    admin, path = settings.topics.admin_events, settings.topics.path_events
    try:
        http = ready_info(log, worker)["http"]
        wait_until(lambda: _assigned(http, "admin") == [f"{admin}:{p}" for p in range(PARTITIONS)], 60, "readyz")
        with Squatter(settings.kafka_bootstrap_servers, f"{settings.group_id}.admin", admin) as squatter:
            # the group splits the admin partitions between the worker and the squatter
            held = wait_until(
                lambda: (
                    squatter.assignment
                    if squatter.assignment
                    and len(_assigned(http, "admin") or []) == PARTITIONS - len(squatter.assignment)
                    else None
                ),
                60,
                "the admin partitions split between the worker and the squatter",
                procs=[worker],
            )
            blocker = min(held)
            asyncio.run(_send_to(settings.kafka_bootstrap_servers, admin, blocker, b"not json: holds the barrier"))
            ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
            want = {(path, p): ends.get(f"{path}:{p}", 0) for p in range(PARTITIONS)}
            assert sum(want.values()) > 0

            # nothing of the path topic can be applied: its lag is exactly what was published, per partition
            def waiting() -> dict[str, Any] | None:
                fam = scrape(http)
                got = {k: v for k, v in lag(fam).items() if k[0] == path}
                return fam if got == want else None

            fam = wait_until(waiting, 60, f"path lag {want}", interval_s=0.3, procs=[worker])
            assert set(lag(fam)) == {(path, p) for p in range(PARTITIONS)} | {
                (admin, p) for p in range(PARTITIONS) if p not in held
            }, "lag is shown for exactly the partitions this worker owns"
            _status, health = _get(http + "/healthz")
            assert health["details"]["lag_records"] >= sum(want.values()), health
            assert _get(http + "/livez")[0] == 200, "waiting at the barrier is not a liveness failure"
            assert wait_until(
                lambda: metric_value(http, "session_tally_admin_barrier_behind_records") > 0, 30, "barrier gauge"
            )
        # the squatter left: the worker owns every partition again, applies the blocker, then the backlog
        ends[f"{admin}:{blocker}"] = max(ends.get(f"{admin}:{blocker}", 0), 1)
        wait_idle(settings, ends, timeout_s=90, procs=[worker])
        every = {(t, p): 0.0 for t in (admin, path) for p in range(PARTITIONS)}

        def caught_up() -> dict[str, Any] | None:
            fam = scrape(http)
            return fam if lag(fam) == every else None

        fam = wait_until(caught_up, 30, "lag 0 on every partition", interval_s=0.3, procs=[worker])
        _check_families(fam, producers, len([raw for raw in lines if raw.strip()]) + 1, settings)
    finally:
        kill_worker(worker)


async def _send_to(bootstrap: str, topic: str, partition: int, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


def _check_families(fam: dict[str, Any], producers: str, published: int, settings: Settings) -> None:
    admin, path = settings.topics.admin_events, settings.topics.path_events
    ours = {n: f for n, f in fam.items() if n.startswith("session_tally_")}
    untyped = {n: f.type for n, f in ours.items() if f.type not in ("counter", "gauge", "histogram")}
    assert not untyped and all(f.documentation for f in ours.values()), untyped
    assert fam["session_tally_consumer_lag"].type == "gauge"
    assert fam["session_tally_events"].type == "counter"
    assert fam["session_tally_batch_duration_seconds"].type == "histogram"

    counts = samples(fam, "session_tally_batch_duration_seconds", "session_tally_batch_duration_seconds_count")
    assert {dict(k)["topic"] for k, v in counts.items() if v > 0} == {admin, path}, counts
    records = sum(samples(fam, "session_tally_records").values())
    assert records >= published, (records, published)
    latency = "session_tally_event_commit_latency_seconds"
    assert sum(samples(fam, latency, latency + "_count").values()) == records, "one latency per record committed"
    buckets = samples(fam, latency, latency + "_bucket")
    assert sum(v for k, v in buckets.items() if dict(k)["le"] == "+Inf") == records, buckets

    published_total = sum(samples(fam, "session_tally_published_messages").values())
    publish = "session_tally_commit_publish_latency_seconds"
    assert published_total > 0 and samples(fam, publish, publish + "_count")[()] == published_total
    assert samples(fam, "session_tally_relay_round_seconds", "session_tally_relay_round_seconds_count")[()] > 0
    by_topic = {dict(k)["topic"]: v for k, v in samples(fam, "session_tally_published_messages").items()}
    rejected = samples(fam, "session_tally_rejected")
    # every rejection is counted once by reason, and is one message on the rejected topic
    assert rejected and sum(rejected.values()) == by_topic.get(settings.topics.rejected), (rejected, by_topic)
    assert all(dict(k)["reason"] for k in rejected), rejected

    assert samples(fam, "process_resident_memory_bytes")[()] > 0
    assert samples(fam, "session_tally_assigned_partitions") == {
        (("topic", admin),): PARTITIONS,
        (("topic", path),): PARTITIONS,
    }
    assert samples(fam, "session_tally_stuck_partitions")[()] == 0
    assert all(v == 1 for v in samples(fam, "session_tally_health_check").values())
    if producers == "process":  # the child's process metrics, read by the worker from /proc
        assert samples(fam, "session_tally_producers_process_resident_memory_bytes")[()] > 0


def test_livez_stays_up_and_readyz_fails_while_postgres_is_unreachable(settings: Settings, tmp_path: Path) -> None:
    url = make_url(settings.database_url)
    lines = [r.value for r in generate(TrafficConfig(seed=12, order_independent=True), 600)]
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = settings.replace(database_url=url.set(port=proxy.port).render_as_string(hide_password=False))
        log = tmp_path / "worker.log"
        worker = start_worker_ex(through_proxy, log, clock=AT, park_timeout_s=3.0, http_port=0)
        try:
            http = ready_info(log, worker)["http"]
            ready = wait_until(lambda: (r := _get(http + "/readyz"))[0] == 200 and r[1], 60, "/readyz 200")
            assert ready["checks"] == {"postgres": True, "kafka": True, "joined": True}, ready
            assert _get(http + "/livez")[0] == 200

            proxy.cut()
            before = metric_value(http, "session_tally_batch_failures_total")
            ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
            not_ready = wait_until(
                lambda: (r := _get(http + "/readyz"))[0] == 503 and r[1], 30, "/readyz 503", procs=[worker]
            )
            assert not_ready["checks"]["postgres"] is False and not_ready["checks"]["kafka"] is True, not_ready
            assert _get(http + "/healthz")[0] == 503

            # while batches fail and are retried, the worker is alive: a restart would not bring PostgreSQL back
            livez: list[int] = []

            def failing_while_alive() -> bool:
                livez.append(_get(http + "/livez")[0])
                return metric_value(http, "session_tally_batch_failures_total") >= before + 3

            wait_until(failing_while_alive, 60, "three batch failures", interval_s=0.3, procs=[worker])
            assert livez and set(livez) == {200}, livez
            status, live = _get(http + "/livez")
            assert status == 200 and live["checks"] == {"monitor": True, "consumer_loops": True}, live

            proxy.restore()
            wait_until(lambda: _get(http + "/readyz")[0] == 200, 60, "/readyz 200 again", procs=[worker])
            wait_idle(settings, ends, timeout_s=90, procs=[worker])
        finally:
            kill_worker(worker)


def test_json_logs_parse_line_by_line_with_record_fields(settings: Settings, tmp_path: Path) -> None:
    from producers.routing import murmur2_partition, route

    lines = [r.value for r in generate(TrafficConfig(seed=13, order_independent=True), 400)]
    log = tmp_path / "worker.log"
    worker = start_worker_ex(
        settings,
        log,
        clock=AT,
        park_timeout_s=3.0,
        http_port=0,
        extra=["--log-format", "json", "--log-level", "INFO", "--producers", "process"],
    )
    try:
        http = ready_info(log, worker)["http"]
        ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
        wait_idle(settings, ends, timeout_s=60, procs=[worker])
        # an event of a path on another partition than its path's: rejected, and logged with its fields
        raw = next(v for v in lines if route(v)[0] == "path" and route(v)[1] and b'"event_id"' in v)
        key = route(raw)[1]
        assert key is not None
        wrong = (murmur2_partition(key, PARTITIONS) + 1) % PARTITIONS
        path = settings.topics.path_events
        asyncio.run(_send_to(settings.kafka_bootstrap_servers, path, wrong, raw))
        wait_until(lambda: metric_value(http, "session_tally_misrouted_records_total") == 1, 30, "misrouted")
        event_id = json.loads(raw)["event_id"]
        assert stop_worker(worker, signal.SIGTERM) == 0
    finally:
        kill_worker(worker)

    records = []
    for number, line in enumerate(log.read_text().splitlines(), start=1):
        doc = json.loads(line)  # every line, the producers child's included, is one JSON object
        assert isinstance(doc, dict) and {"time", "level", "logger", "message"} <= doc.keys(), (number, line)
        records.append(doc)
    messages = [r["message"] for r in records]
    assert any(m.startswith(READY_PREFIX) for m in messages)
    assert "session-tally producers ready" in messages and "session-tally worker stopped" in messages
    assert any(
        r["logger"].startswith("aiokafka") or r["logger"].startswith("session_tally.faststream") for r in records
    )
    misrouted = [r for r in records if "are rejected" in r["message"]]
    assert len(misrouted) == 1, misrouted
    fields = misrouted[0]
    assert fields["level"] == "ERROR" and fields["event_id"] == event_id, fields
    assert (fields["topic"], fields["partition"]) == (path, wrong) and isinstance(fields["offset"], int), fields
    levels = defaultdict(int)
    for r in records:
        levels[r["level"]] += 1
    assert set(levels) <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, levels
