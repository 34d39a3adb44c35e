"""The pure parts of the pipeline benchmark's report: ratios from the phases' results (bench/ratios.py) and
latency stages from two scrapes of the workers' Prometheus histograms (bench/stages.py). No timing: the
inputs are fixed figures."""

from __future__ import annotations

from typing import Any

from session_tally.bench.ratios import compute_ratios, ratio_targets
from session_tally.bench.stages import parse, stage_figures


def _run(workers: int, e2e: int, worker: int, after: int | None) -> dict[str, Any]:
    return {
        "workers": workers,
        "events_per_s": e2e,
        "worker_events_per_s": worker,
        "after_startup_events_per_s": after,
    }


def test_ratios_compare_figures_of_the_same_run() -> None:
    results = {
        "replay": {"events_per_s": 50_000, "after_startup_events_per_s": 62_500},
        "backlog": [_run(1, 7_000, 8_500, 10_000), _run(2, 11_000, 14_000, 17_000)],
        "latency": {"measured": 100, "p99_ms": 300.0, "achieved_rate": 2_000},
        "latency_capacity": {"measured": 80, "p99_ms": 120.0, "achieved_rate": 2_500, "capacity_fraction": 0.25},
    }
    ratios = compute_ratios(results)
    assert ratios["pipeline_to_replay_end_to_end"] == 0.14
    assert ratios["pipeline_to_replay_worker_only"] == 0.17
    assert ratios["pipeline_to_replay_after_startup"] == 0.2
    assert ratios["pipeline_to_replay_both_after_startup"] == 0.16
    assert ratios["workers_2_to_1_after_startup"] == 1.7 and ratios["workers_2_to_1_end_to_end"] == 1.571
    assert ratios["capacity_events_per_s"] == 10_000 and ratios["capacity_basis"] == "after start-up"
    assert ratios["latency_offered_to_capacity"] == 0.2 and ratios["latency_p99_ms"] == 300.0
    assert ratios["latency_capacity_p99_ms"] == 120.0 and ratios["latency_capacity_rate"] == 2_500
    targets = ratio_targets(ratios)
    assert targets["pipeline_to_replay_both_after_startup"]["verdict"] == "below target"  # 0.16 < 0.35
    assert targets["workers_2_to_1_after_startup"]["verdict"] == "target met"  # 1.7 >= 1.6
    assert targets["latency_p99_ms"]["verdict"] == "below target"  # 300 > 250
    assert targets["latency_capacity_p99_ms"]["verdict"] == "target met"


def test_ratios_leave_out_what_was_not_measured() -> None:
    ratios = compute_ratios({"backlog": [_run(1, 700, 800, None)], "latency": {"measured": 0}})
    assert not any(k.startswith("pipeline_to_replay") for k in ratios)  # no replay phase
    assert ratios["capacity_basis"].startswith("worker only") and ratios["capacity_events_per_s"] == 800
    assert "latency_p99_ms" not in ratios and not any(k.startswith("workers_") for k in ratios)
    assert ratio_targets(ratios)["pipeline_to_replay_after_startup"]["verdict"] == "not measured"


EXPOSITION = """\
# HELP session_tally_event_commit_latency_seconds Per record
# TYPE session_tally_event_commit_latency_seconds histogram
session_tally_event_commit_latency_seconds_bucket{le="0.05",topic="a"} {a1}
session_tally_event_commit_latency_seconds_bucket{le="0.1",topic="a"} {a2}
session_tally_event_commit_latency_seconds_bucket{le="+Inf",topic="a"} {a2}
session_tally_event_commit_latency_seconds_count{topic="a"} {a2}
session_tally_event_commit_latency_seconds_sum{topic="a"} {asum}
session_tally_batch_duration_seconds_bucket{le="0.05",topic="a"} {b}
session_tally_batch_duration_seconds_bucket{le="+Inf",topic="a"} {b}
session_tally_batch_duration_seconds_count{topic="a"} {b}
session_tally_batch_duration_seconds_sum{topic="a"} {bsum}
session_tally_records_total 5.0
"""


def _scrape(**values: float) -> str:
    text = EXPOSITION
    for name, value in values.items():
        text = text.replace("{" + name + "}", repr(float(value)))
    return text


def test_stages_are_the_difference_of_two_scrapes() -> None:
    before = parse(_scrape(a1=10, a2=10, asum=0.2, b=2, bsum=0.02))
    after = parse(_scrape(a1=10, a2=110, asum=8.2, b=12, bsum=0.22))
    stages = stage_figures(before, after)
    commit = stages["published_to_committed"]
    assert commit["count"] == 100 and commit["mean_ms"] == 80.0  # 8 s over 100 records
    assert commit["p50_le_ms"] == 100.0 and commit["p99_le_ms"] == 100.0  # all 100 new ones in (0.05, 0.1]
    assert stages["batch_received_to_committed"] == {"count": 10, "mean_ms": 20.0, "p50_le_ms": 50.0, "p99_le_ms": 50.0}
    assert stages["published_to_batch_received"] == {"mean_ms": 60.0}
    assert "committed_to_relay_published" not in stages  # not in the scrape: left out, not guessed
    assert stage_figures(after, after) == {}  # nothing happened in between
