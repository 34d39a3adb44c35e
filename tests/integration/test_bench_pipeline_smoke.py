"""`session-tally bench pipeline` runs every phase on a tiny load and reports every figure, so that the
benchmark cannot rot. No timing threshold: the figures only have to be there and be positive."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEADLINE_S = 420  # the run takes well under a minute on an idle 2-core machine

FIGURES = (
    "kafka_publish_msgs_per_s",
    "kafka_consume_msgs_per_s",
    "pg_copy_rows_per_s",
    "backlog_events_per_s",
    "backlog_worker_events_per_s",
    "backlog_after_startup_events_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "naive_events_per_s",
    "naive_worker_events_per_s",
    "worker_peak_rss_mb",
    "ratio_throughput_to_kafka_ceiling",
    "ratio_throughput_to_pg_ceiling",
    "ratio_throughput_to_naive",
)


def test_bench_pipeline_reports_every_figure(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    cmd = [
        sys.executable, "-m", "session_tally", "bench", "pipeline",
        "--events", "1500", "--naive-events", "200", "--latency-seconds", "3", "--rate", "200",
        "--json", str(out),
    ]  # fmt: skip
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops its workers and deletes its topics and schemas
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"bench pipeline still running after {DEADLINE_S} s:\n{output.decode(errors='replace')[-5000:]}")
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-5000:]

    doc = json.loads(out.read_text())
    assert doc["complete"] is True
    backlog = doc["backlog"][0]
    for name in FIGURES:
        value = doc["figures"].get(name)
        if name == "backlog_after_startup_events_per_s" and value is None:
            # legitimate only when the tiny backlog was done before the workers were seen ready
            assert backlog["ready_after_s"] is not None and backlog["worker_window_s"] is not None
            assert backlog["ready_after_s"] >= backlog["worker_window_s"], backlog
            continue
        assert isinstance(value, int | float) and not math.isnan(value) and value > 0, (name, value, text[-3000:])
    assert doc["figures"]["ratio_throughput_to_naive_basis"]
    for target in doc["targets"].values():
        assert target["verdict"] in ("target met", "below target"), target
    assert backlog["events"] == 1500 and backlog["tallies_published"] > 0
    assert len(backlog["segments"]) == 5
    assert doc["latency"]["measured"] > 0
    assert doc["naive"]["batch_size"] == 1
    for key in ("cpu", "cores", "python"):
        assert doc["machine"][key]
    assert doc["versions"]["postgresql"] and doc["versions"]["kafka"]
    assert "bench pipeline" in doc["command"]
    # what a reader sees: the phases as they run and the final table
    for heading in ("== 1. Kafka ceiling", "== 2. PostgreSQL ceiling", "== 3. backlog", "== 4. latency",
                    "== 5. naive", "== results"):  # fmt: skip
        assert heading in text, heading
    assert "cleaned up:" in text
