"""The ratios of the pipeline benchmark (issue 13): the pipeline against replay of the same stream, latency
against the capacity it measured, W workers against one. Computed from the phases' results only, printed first
in the report (absolute figures move with the machine, these barely do).

Invariant: every ratio compares two figures of the same run (same stream, same machine, same hour); a ratio
whose figures were not measured (a phase skipped, a window too short to exist) is left out, never guessed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from session_tally.bench.common import TARGET_P99_MS, fmt_rate, say, verdict

CAPACITY_FRACTION = 0.25  # default rate of the second latency phase: this fraction of the measured capacity

TARGET_AFTER_STARTUP_TO_REPLAY = 0.35  # issue 13: 1 worker after start-up >= 0.35 x replay (goal 0.5)
GOAL_AFTER_STARTUP_TO_REPLAY = 0.5
TARGET_TWO_TO_ONE = 1.6  # 2 workers >= 1.6 x one worker (after start-up)

# ---------------------------------------------------------------------------------------- replay phase


def replay_same_stream(stream: Path, clock: str, events: int, workdir: Path) -> dict[str, Any]:
    """`session-tally replay` on the backlog's own file, at the backlog's frozen clock (the workers' clock):
    the engine alone on exactly the events the pipeline applies. Raises RuntimeError when replay fails."""
    from session_tally.bench.replay import measure_replay

    say(f"\n== 0. replay: `session-tally replay` on the same {events:,} events, clock {clock} (one core)")
    measured = measure_replay(stream, clock, workdir)
    empty = workdir / "empty.jsonl"
    empty.write_bytes(b"")
    startup_s = measure_replay(empty, clock, workdir)["replay_s"]  # interpreter start, imports, empty output
    measured["events"] = events
    measured["events_per_s"] = round(events / measured["replay_s"])
    measured["startup_s"] = startup_s
    engine_s = measured["replay_s"] - startup_s
    measured["after_startup_events_per_s"] = round(events / engine_s) if engine_s > 0 else None
    say(
        f"  {events:,} events in {measured['replay_s']:.2f} s = {fmt_rate(measured['events_per_s'])} "
        f"(without its {startup_s:.2f} s start-up: {fmt_rate(measured['after_startup_events_per_s'])}), peak RSS "
        f"{measured['peak_rss_mb']:,.0f} MB; {measured['tallies']:,} tallies, {measured['meetings']:,} meetings, "
        f"{measured['rejected']:,} rejected"
    )
    return measured


def capacity_of(results: dict[str, Any]) -> tuple[float | None, str]:
    """The capacity the run measured (first worker count of the backlog phase): after start-up, or the worker
    window when the backlog was done before the workers were seen ready (a tiny smoke run)."""
    backlog = results.get("backlog") or []
    if not backlog:
        return None, "no backlog phase"
    head = backlog[0]
    if head.get("after_startup_events_per_s"):
        return float(head["after_startup_events_per_s"]), "after start-up"
    if head.get("worker_events_per_s"):
        return float(head["worker_events_per_s"]), "worker only (the backlog was done before start-up ended)"
    return None, "not measured"


# ---------------------------------------------------------------------------------------- ratios


def _ratio(a: Any, b: Any, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The ``ratios`` object of the JSON output (keys present only when both sides were measured).

    ``pipeline_to_replay_*``: the pipeline's end-to-end, worker-only and after-start-up rates over replay's
    whole run (interpreter start-up included, as `bench replay` prints it: the issue's reference);
    ``..._both_after_startup`` leaves replay's start-up out too (measured on an empty file), which matters on
    short streams where it is a large share of replay's time."""
    ratios: dict[str, Any] = {}
    replay = results.get("replay") or {}
    backlog = results.get("backlog") or []
    head = backlog[0] if backlog else {}
    base = replay.get("events_per_s")
    for name, key in (
        ("end_to_end", "events_per_s"),
        ("worker_only", "worker_events_per_s"),
        ("after_startup", "after_startup_events_per_s"),
    ):
        value = _ratio(head.get(key), base)
        if value is not None:
            ratios[f"pipeline_to_replay_{name}"] = value
    # both without start-up: the cost per event of the pipeline against that of the engine alone
    value = _ratio(head.get("after_startup_events_per_s"), replay.get("after_startup_events_per_s"))
    if value is not None:
        ratios["pipeline_to_replay_both_after_startup"] = value
    by_count = {run["workers"]: run for run in backlog}
    one = by_count.get(1)
    for count, run in sorted(by_count.items()):
        if count == 1 or one is None:
            continue
        for name, key in (("after_startup", "after_startup_events_per_s"), ("end_to_end", "events_per_s")):
            value = _ratio(run.get(key), one.get(key))
            if value is not None:
                ratios[f"workers_{count}_to_1_{name}"] = value
    capacity, basis = capacity_of(results)
    if capacity:
        ratios["capacity_events_per_s"] = round(capacity)
        ratios["capacity_basis"] = basis
    lat = results.get("latency") or {}
    if lat.get("measured"):
        ratios["latency_p99_ms"] = lat["p99_ms"]
        ratios["latency_offered_rate"] = lat["achieved_rate"]
        if capacity:
            ratios["latency_offered_to_capacity"] = _ratio(lat["achieved_rate"], capacity)
    low = results.get("latency_capacity") or {}
    if low.get("measured"):
        ratios["latency_capacity_fraction"] = low["capacity_fraction"]
        ratios["latency_capacity_rate"] = low["achieved_rate"]
        ratios["latency_capacity_p99_ms"] = low["p99_ms"]
    return ratios


def ratio_targets(ratios: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets of issue 13 with their verdicts (never asserted: printed and written to the JSON)."""

    def entry(target: str, measured: Any, good: bool | None) -> dict[str, Any]:
        return {"target": target, "measured": measured, "verdict": verdict(None if measured is None else good)}

    # both without start-up when replay's was measured (a start-up of 1-2 s is a large share of replaying a
    # 200,000-event stream); else against replay's whole run, as the issue measured it
    basis = "pipeline_to_replay_both_after_startup"
    if basis not in ratios:
        basis = "pipeline_to_replay_after_startup"
    after = ratios.get(basis)
    two = ratios.get("workers_2_to_1_after_startup")
    p99 = ratios.get("latency_p99_ms")
    low = ratios.get("latency_capacity_p99_ms")
    return {
        basis: entry(
            f">= {TARGET_AFTER_STARTUP_TO_REPLAY:g} x replay (goal {GOAL_AFTER_STARTUP_TO_REPLAY:g})",
            after,
            after is not None and after >= TARGET_AFTER_STARTUP_TO_REPLAY,
        ),
        "workers_2_to_1_after_startup": entry(
            f">= {TARGET_TWO_TO_ONE:g} x one worker", two, two is not None and two >= TARGET_TWO_TO_ONE
        ),
        "latency_p99_ms": entry(f"p99 <= {TARGET_P99_MS:g} ms", p99, p99 is not None and p99 <= TARGET_P99_MS),
        "latency_capacity_p99_ms": entry(f"p99 <= {TARGET_P99_MS:g} ms", low, low is not None and low <= TARGET_P99_MS),
    }


def print_ratios(ratios: dict[str, Any], targets: dict[str, dict[str, Any]]) -> None:
    """The ratios section of the report: printed before the absolute figures."""
    rows: list[tuple[str, str, str]] = []

    def note(key: str) -> str:
        t = targets.get(key)
        return "" if t is None else f"{t['target']}: {t['verdict']}"

    for name, label in (
        ("end_to_end", "end to end"),
        ("worker_only", "worker only"),
        ("after_startup", "after start-up"),
        ("both_after_startup", "both after start-up"),
    ):
        key = f"pipeline_to_replay_{name}"
        if key in ratios:
            rows.append((f"pipeline / replay, {label}", f"{ratios[key]:.3f}", note(key)))
    for key in sorted(k for k in ratios if k.startswith("workers_")):
        count, _, name = key.removeprefix("workers_").partition("_to_1_")
        rows.append((f"{count} workers / 1 worker, {name.replace('_', ' ')}", f"{ratios[key]:.2f}x", note(key)))
    if "latency_p99_ms" in ratios:
        share = ratios.get("latency_offered_to_capacity")
        label = f"p99 at {ratios['latency_offered_rate']:,} ev/s offered" + (
            f" ({share:.0%} of capacity)" if share else ""
        )
        rows.append((label, f"{ratios['latency_p99_ms']:.0f} ms", note("latency_p99_ms")))
    if "latency_capacity_p99_ms" in ratios:
        rows.append(
            (
                f"p99 at {ratios['latency_capacity_fraction']:.0%} of capacity "
                f"({ratios['latency_capacity_rate']:,} ev/s)",
                f"{ratios['latency_capacity_p99_ms']:.0f} ms",
                note("latency_capacity_p99_ms"),
            )
        )
    say("\n== ratios (the targets; absolute figures below)")
    if "capacity_events_per_s" in ratios:
        capacity = fmt_rate(ratios["capacity_events_per_s"])
        say(f"  capacity = {capacity} ({ratios['capacity_basis']}, first worker count)")
    if not rows:
        say("  none measured (phases skipped)")
        return
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, text in rows:
        say(f"  {name:<{width}}  {value:>{vwidth}}  {text}".rstrip())
