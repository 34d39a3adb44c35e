"""A record PostgreSQL refuses, a partition that stops, a database that hangs (issue 9, points 8 and 10),
through a real worker, the real Kafka and PostgreSQL. The faults are planted in the test's own schema (a
trigger on ``meetings`` for one meeting id) or between the worker and PostgreSQL (tests/integration/
faults.py's TCP proxy):

- a record that fails on its data (SQLSTATE 22023) is isolated (consumers/isolation.py): rejected with
  "could not be processed (...)", every other record of its batch applied, nothing waiting expires;
- a record that fails as an outage would (SQLSTATE class 08) stops its partition for as long as the fault
  lasts: /healthz turns 503 (``consuming`` false) once records wait longer than ``--stall-timeout``, the
  lag and stuck-partition metrics name it, and when the fault is gone everything recovers and equals
  replay;
- /healthz answers from the health monitor's last round, at once, while PostgreSQL hangs or refuses
  connections (it once took seconds: the probe asked the database itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2
from sqlalchemy.engine import make_url

from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from tests.integration.faults import TcpProxy
from tests.integration.pipeline_helpers import (
    Probe,
    assert_same_document,
    comparable,
    metric_value,
    publish_lines,
    read_raw_topic,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)
from tests.integration.robustness_helpers import (
    AT,
    confirmed,
    expected_document,
    health,
    metric_series,
    migrate,
    plant_meeting_trigger,
    remove_meeting_trigger,
    run_async,
    scheduled,
    setup_lines,
)

pytestmark = pytest.mark.integration
PATHS = ("path-s1", "path-s2", "path-s3", "path-s4", "path-s5", "path-s6")


def _lines(poison: str) -> list[bytes]:
    """Setup; per path a confirmation that comes before its meeting (it waits), two meetings and a
    confirmation; on the first path a meeting ``poison`` too."""
    lines = setup_lines()
    for n, path in enumerate(PATHS):
        lines += [
            confirmed(f"{path}-early", path, f"{path}-m2", 3),  # waits for m2
            scheduled(f"{path}-1", path, f"{path}-m1", 2),
            scheduled(f"{path}-2", path, f"{path}-m2", 3),
            confirmed(f"{path}-c1", path, f"{path}-m1", 2),
        ]
        if n == 0:
            lines.append(scheduled("poison-ev", path, poison, 4))
    return lines


def _stop(worker: object, log: Path) -> None:
    assert stop_worker(worker) == 0, log.read_text(errors="replace")[-3000:]  # type: ignore[arg-type]


def test_a_record_that_fails_on_its_data_is_rejected_alone(settings: Settings, tmp_path: Path) -> None:
    migrate(settings)
    plant_meeting_trigger(settings, "iso-poison", "22023", "planted data fault")
    lines = _lines("iso-poison")
    poison_line = next(n for n, raw in enumerate(lines, start=1) if b"poison-ev" in raw)
    ends = run_async(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, park_timeout_s=5.0)
    try:
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
    finally:
        _stop(worker, log)

    snapshot = comparable(run_async(read_snapshot(settings.kafka_bootstrap_servers, settings.topics)))
    want = expected_document(lines, AT, {poison_line: ("poison-ev", "schema_violation")})
    assert_same_document(snapshot, comparable(want))
    assert not [r for r in snapshot["rejected"] if r["reason"] in ("unknown_meeting", "unknown_program")]
    records = run_async(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.rejected, 30))
    (detail,) = [r["value"].decode() for r in records if b"poison-ev" in r["value"]]
    assert "could not be processed (" in detail and "planted data fault" in detail, detail
    text = log.read_text(errors="replace")
    assert "retrying it in halves" in text and "cannot be processed" in text


def test_a_stopped_partition_fails_healthz_and_recovers(settings: Settings, tmp_path: Path) -> None:
    migrate(settings)
    plant_meeting_trigger(settings, "stall-m", "08006", "planted outage")
    lines = _lines("stall-m")
    ends = run_async(publish_lines(settings.kafka_bootstrap_servers, settings, lines))
    path_t = settings.topics.path_events
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, http_port=0, park_timeout_s=60.0,
                             extra=("--stall-timeout", "5"))  # fmt: skip
    try:
        http = ready_info(log, worker)["http"]
        wait_until(lambda: metric_value(http, "session_tally_batch_failures_total") > 0, 30,
                   "a batch to fail on the planted fault", procs=[worker])  # fmt: skip
        _status, doc = wait_until(lambda: (h := health(http))[0] == 503 and h, 40, "/healthz 503", procs=[worker])
        assert doc["checks"]["consuming"] is False and doc["checks"]["postgres"] is True, doc
        poison = f"{path_t}:{(murmur2(PATHS[0].encode()) & 0x7FFFFFFF) % 6}"  # where publish_lines put it
        assert poison in doc["details"]["stuck_partitions"], doc
        topic, partition = poison.rsplit(":", 1)
        lag = metric_series(http, "session_tally_consumer_lag")
        assert lag[f'{{partition="{partition}",topic="{topic}"}}'] > 0, lag
        assert metric_value(http, "session_tally_stuck_partitions") >= 1
        with Probe(settings) as probe:
            assert probe.offsets().get(poison, 0) < ends[poison]  # stopped, not merely slow

        remove_meeting_trigger(settings)
        wait_until(lambda: health(http)[0] == 200, 40, "/healthz 200 after the fault is gone", procs=[worker])
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
        assert metric_value(http, "session_tally_stuck_partitions") == 0
    finally:
        _stop(worker, log)
    snapshot = comparable(run_async(read_snapshot(settings.kafka_bootstrap_servers, settings.topics)))
    assert_same_document(snapshot, comparable(expected_document(lines, AT, {})))


def test_healthz_answers_at_once_while_postgres_hangs_or_refuses(settings: Settings, tmp_path: Path) -> None:
    url = make_url(settings.database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = settings.replace(database_url=url.set(port=proxy.port).render_as_string(False))
        log = tmp_path / "worker.log"
        worker = start_worker_ex(proxied, log, clock=AT, http_port=0)
        try:
            http = ready_info(log, worker)["http"]
            wait_until(lambda: health(http)[0] == 200, 30, "/healthz 200", procs=[worker])
            for fault, undo in ((proxy.pause, proxy.resume), (proxy.cut, proxy.restore)):
                fault()
                # every probe is answered within 1 s (the socket timeout), and soon says postgres is away
                status, doc = wait_until(
                    lambda: (h := health(http, timeout_s=1.0))[1]["checks"]["postgres"] is False and h,
                    30, f"/healthz to report PostgreSQL away ({fault.__name__})", interval_s=0.2, procs=[worker],
                )  # fmt: skip
                assert status == 503 and doc["status"] != "ok", doc
                for _ in range(5):
                    assert health(http, timeout_s=1.0)[0] == 503
                undo()
                wait_until(lambda: health(http)[0] == 200, 60, f"/healthz 200 after {undo.__name__}", procs=[worker])
        finally:
            _stop(worker, log)
        assert proxy.dropped >= 1, "the cut closed the worker's connections"
