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
    "replay_events_per_s",
    "replay_peak_rss_mb",
    "kafka_publish_msgs_per_s",
    "kafka_consume_msgs_per_s",
    "pg_copy_rows_per_s",
    "backlog_events_per_s",
    "backlog_worker_events_per_s",
    "backlog_after_startup_events_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_capacity_rate",
    "latency_capacity_p99_ms",
    "naive_events_per_s",
    "naive_worker_events_per_s",
    "worker_peak_rss_mb",
    "ratio_throughput_to_kafka_ceiling",
    "ratio_throughput_to_pg_ceiling",
    "ratio_throughput_to_naive",
)
# the `ratios` object (issue 13); the after-start-up ones may be missing, see below
RATIOS = (
    "pipeline_to_replay_end_to_end",
    "pipeline_to_replay_worker_only",
    "pipeline_to_replay_after_startup",
    "pipeline_to_replay_both_after_startup",
    "workers_2_to_1_end_to_end",
    "capacity_events_per_s",
    "latency_p99_ms",
    "latency_offered_rate",
    "latency_offered_to_capacity",
    "latency_capacity_fraction",
    "latency_capacity_rate",
    "latency_capacity_p99_ms",
)
STAGES = ("published_to_committed", "batch_received_to_committed", "committed_to_relay_published")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


def test_bench_pipeline_reports_every_figure(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    cmd = [
        sys.executable, "-m", "session_tally", "bench", "pipeline",
        "--events", "1500", "--naive-events", "200", "--latency-seconds", "3", "--rate", "200",
        "--workers", "1,2", "--json", str(out),
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
    assert [run["workers"] for run in doc["backlog"]] == [1, 2]
    for name in FIGURES:
        value = doc["figures"].get(name)
        if name == "backlog_after_startup_events_per_s" and value is None:
            # legitimate only when the tiny backlog was done before the workers were seen ready
            assert backlog["ready_after_s"] is not None and backlog["worker_window_s"] is not None
            assert backlog["ready_after_s"] >= backlog["worker_window_s"], backlog
            continue
        assert _positive(value), (name, value, text[-3000:])
    ratios = doc["ratios"]
    for name in RATIOS:
        value = ratios.get(name)
        if name == "pipeline_to_replay_after_startup" and value is None:
            assert doc["figures"].get("backlog_after_startup_events_per_s") is None  # the same case as above
            continue
        if name == "pipeline_to_replay_both_after_startup" and value is None:
            # replay of 1,500 events can take no longer than replay of an empty file (its start-up)
            assert doc["replay"]["after_startup_events_per_s"] is None or backlog["after_startup_s"] is None
            continue
        assert _positive(value), (name, value, ratios)
    assert ratios["capacity_basis"] and doc["latency_capacity"]["capacity_fraction"] == 0.25
    assert doc["replay"]["events"] == 1500 and doc["replay"]["tallies"] > 0 and doc["replay"]["startup_s"] > 0
    for phase in ("latency", "latency_capacity"):
        stages = doc[phase]["stages"]
        for name in STAGES:
            assert stages[name]["count"] > 0 and stages[name]["mean_ms"] >= 0, (phase, name, stages)
        assert "mean_ms" in stages["published_to_batch_received"]
    for target in doc["ratio_targets"].values():
        assert target["verdict"] in ("target met", "below target", "not measured"), target
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
    headings = ("== 0. replay", "== 1. Kafka ceiling", "== 2. PostgreSQL ceiling", "== 3. backlog", "== 4. latency",
                "== 4b. latency", "== 5. naive", "== ratios", "== results")  # fmt: skip
    for heading in headings:
        assert heading in text, heading
    assert text.index("== ratios") < text.index("== results")  # the ratios lead, absolute figures after
    assert "pipeline / replay, end to end" in text and "stages (workers' histograms): published ->" in text
    assert f"measured on: {doc['machine']['cpu']}" in text
    assert "cleaned up:" in text
