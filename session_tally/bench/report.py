"""The summary of the pipeline benchmark: the ratios first (bench/ratios.py), then the table of absolute
figures with their targets, then the machine's CPU model (absolute figures mean nothing without it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from session_tally.bench.common import (
    TARGET_EVENTS_PER_S,
    TARGET_NAIVE_RATIO,
    TARGET_P99_AT_RATE,
    TARGET_P99_MS,
    TARGET_RSS_EVENTS,
    TARGET_RSS_MB,
    fmt_rate,
    say,
    verdict,
)
from session_tally.bench.ratios import compute_ratios, print_ratios, ratio_targets

# ---------------------------------------------------------------------------------------- summary


def summarize(results: dict[str, Any], counts: list[int], events: int) -> None:
    """Figures, ratios and target verdicts: into ``results`` (``figures``, ``targets``) and printed."""
    figures: dict[str, Any] = {}
    replay = results.get("replay")
    if replay:
        figures["replay_events_per_s"] = replay["events_per_s"]
        figures["replay_peak_rss_mb"] = replay["peak_rss_mb"]
    kc = results.get("kafka_ceiling") or {}
    if "publish_msgs_per_s" in kc:
        figures["kafka_publish_msgs_per_s"] = kc["publish_msgs_per_s"]
    if "consume_msgs_per_s" in kc:
        figures["kafka_consume_msgs_per_s"] = kc["consume_msgs_per_s"]
    pg = results.get("pg_ceiling")
    if pg:
        figures["pg_copy_rows_per_s"] = pg["rows_per_s"]
    backlog = results.get("backlog") or []
    head = backlog[0] if backlog else None
    if head:
        figures["backlog_events_per_s"] = head["events_per_s"]
        figures["backlog_worker_events_per_s"] = head["worker_events_per_s"]
        figures["backlog_after_startup_events_per_s"] = head["after_startup_events_per_s"]
    lat = results.get("latency")
    if lat:
        for q in ("p50", "p95", "p99"):
            figures[f"latency_{q}_ms"] = lat[f"{q}_ms"]
    low = results.get("latency_capacity")
    if low:
        figures["latency_capacity_rate"] = low["achieved_rate"]
        figures["latency_capacity_p99_ms"] = low["p99_ms"]
    naive = results.get("naive")
    if naive:
        figures["naive_events_per_s"] = naive["events_per_s"]
        figures["naive_worker_events_per_s"] = naive["worker_events_per_s"]
    rss = [m for run in backlog for m in run["peak_rss_mb"]]
    if rss:
        figures["worker_peak_rss_mb"] = max(rss)
    all_rss = rss + (lat or {}).get("peak_rss_mb", []) + (naive or {}).get("peak_rss_mb", [])
    if head and "consume_msgs_per_s" in kc and head["events_per_s"]:
        figures["ratio_throughput_to_kafka_ceiling"] = round(head["events_per_s"] / kc["consume_msgs_per_s"], 3)
    if head and pg and head["events_per_s"]:
        figures["ratio_throughput_to_pg_ceiling"] = round(head["events_per_s"] / pg["events_per_s"], 3)
    if head and naive and head["after_startup_events_per_s"] and naive["after_startup_events_per_s"]:
        # both after start-up: the cost per event, without the fixed start-up that N would dilute differently
        figures["ratio_throughput_to_naive"] = round(
            head["after_startup_events_per_s"] / naive["after_startup_events_per_s"], 1
        )
        figures["ratio_throughput_to_naive_basis"] = "after start-up"
    elif head and naive and head["worker_events_per_s"] and naive["worker_events_per_s"]:
        # a backlog too small to outlast the workers' start-up (a smoke run): worker windows instead
        figures["ratio_throughput_to_naive"] = round(head["worker_events_per_s"] / naive["worker_events_per_s"], 1)
        figures["ratio_throughput_to_naive_basis"] = "worker only (the backlog was done before start-up ended)"
    results["figures"] = figures

    def ok(value: Any, good: Callable[[Any], bool]) -> bool | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else good(value)

    p99 = figures.get("latency_p99_ms")
    offered = (lat or {}).get("offered_rate")
    targets = {
        "backlog_events_per_s": {
            "target": f">= {TARGET_EVENTS_PER_S:,} events/s end to end (backlog, {counts[0]} worker(s))",
            "measured": figures.get("backlog_events_per_s"),
            "verdict": verdict(ok(figures.get("backlog_events_per_s"), lambda v: v >= TARGET_EVENTS_PER_S)),
        },
        "ratio_to_naive": {
            "target": f">= {TARGET_NAIVE_RATIO:g}x the batch-size-1 figure",
            "measured": figures.get("ratio_throughput_to_naive"),
            "verdict": verdict(ok(figures.get("ratio_throughput_to_naive"), lambda v: v >= TARGET_NAIVE_RATIO)),
        },
        "latency_p99_ms": {
            "target": f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_P99_AT_RATE:,.0f} events/s offered",
            "measured": p99,
            "verdict": verdict(ok(p99, lambda v: v <= TARGET_P99_MS)),
            "note": None
            if offered is None or offered >= TARGET_P99_AT_RATE
            else f"measured at {offered:,.0f} events/s",
        },
        "worker_peak_rss_mb": {
            "target": f"<= {TARGET_RSS_MB:g} MB with a {TARGET_RSS_EVENTS:,}-event backlog",
            "measured": figures.get("worker_peak_rss_mb"),
            "verdict": verdict(ok(figures.get("worker_peak_rss_mb"), lambda v: v <= TARGET_RSS_MB)),
            "note": None
            if events >= TARGET_RSS_EVENTS and rss
            else (f"measured with a {events:,}-event backlog" if rss else "no backlog phase"),
        },
    }
    results["targets"] = targets

    ratios = compute_ratios(results)
    results["ratios"] = ratios
    results["ratio_targets"] = ratio_targets(ratios)
    print_ratios(ratios, results["ratio_targets"])

    rows: list[tuple[str, str, str]] = []
    if replay:
        rows.append(
            (
                "replay, same stream (one core)",
                fmt_rate(replay["events_per_s"]),
                f"peak RSS {replay['peak_rss_mb']:,.0f} MB; `session-tally replay` in a child process, its "
                f"{replay['startup_s']:.2f} s start-up included",
            )
        )
    if "kafka_publish_msgs_per_s" in figures:
        rows.append(
            ("Kafka publish (idempotent, acks=all)", fmt_rate(figures["kafka_publish_msgs_per_s"], "msg/s"), "")
        )
    if "kafka_consume_msgs_per_s" in figures:
        rows.append(("ceiling: Kafka plain consumer", fmt_rate(figures["kafka_consume_msgs_per_s"], "msg/s"), ""))
    if pg:
        rows.append(
            (
                "ceiling: PostgreSQL COPY",
                fmt_rate(pg["rows_per_s"], "rows/s"),
                f"= {fmt_rate(pg['events_per_s'])} at 2 rows/event",
            )
        )
    for run in backlog:
        w = run["workers"]
        t = targets["backlog_events_per_s"]
        note = f">= {TARGET_EVENTS_PER_S:,}: {t['verdict']}" if run is head else ""
        rows.append((f"backlog W={w}: end to end", fmt_rate(run["events_per_s"]), note))
        rows.append((f"backlog W={w}: worker only", fmt_rate(run["worker_events_per_s"]), "worker start -> last tally"))
        rows.append(
            (
                f"backlog W={w}: after start-up",
                fmt_rate(run["after_startup_events_per_s"]),
                "workers ready -> last tally",
            )
        )
        segs = run["segments"]
        if segs:
            rows.append(
                (
                    f"backlog W={w}: per 20% of offsets",
                    " ".join("n/a" if s["events_per_s"] is None else f"{s['events_per_s']:,}" for s in segs),
                    "events/s; flat = no cost growth",
                )
            )
    if lat:
        rows.append(
            (
                f"latency @ {lat['achieved_rate']:,} ev/s: p50/p95/p99",
                f"{lat['p50_ms']:.0f} / {lat['p95_ms']:.0f} / {lat['p99_ms']:.0f} ms",
                f"p99 <= {TARGET_P99_MS:g} ms: {targets['latency_p99_ms']['verdict']}"
                + (f" ({targets['latency_p99_ms']['note']})" if targets["latency_p99_ms"]["note"] else ""),
            )
        )
    if low:
        rows.append(
            (
                f"latency @ {low['achieved_rate']:,} ev/s: p50/p95/p99",
                f"{low['p50_ms']:.0f} / {low['p95_ms']:.0f} / {low['p99_ms']:.0f} ms",
                f"{low['capacity_fraction']:.0%} of capacity {low['capacity_events_per_s']:,} events/s",
            )
        )
    if naive:
        rows.append(("naive (batch size 1): end to end", fmt_rate(naive["events_per_s"]), ""))
        rows.append(("naive (batch size 1): worker only", fmt_rate(naive["worker_events_per_s"]), ""))
        rows.append(("naive (batch size 1): after start-up", fmt_rate(naive["after_startup_events_per_s"]), ""))
    if "ratio_throughput_to_kafka_ceiling" in figures:
        rows.append(("ratio: throughput / Kafka ceiling", f"{figures['ratio_throughput_to_kafka_ceiling']:.3f}", ""))
    if "ratio_throughput_to_pg_ceiling" in figures:
        rows.append(("ratio: throughput / PostgreSQL ceiling", f"{figures['ratio_throughput_to_pg_ceiling']:.3f}", ""))
    if "ratio_throughput_to_naive" in figures:
        rows.append(
            (
                f"ratio: throughput / naive ({figures['ratio_throughput_to_naive_basis'].split(' (')[0]})",
                f"{figures['ratio_throughput_to_naive']:.1f}x",
                f">= {TARGET_NAIVE_RATIO:g}x: {targets['ratio_to_naive']['verdict']}",
            )
        )
    if all_rss:
        t = targets["worker_peak_rss_mb"]
        rows.append(
            (
                "worker peak RSS (VmHWM)",
                f"{max(rss or all_rss):,.0f} MB" + ("" if rss else " (latency/naive)"),
                f"<= {TARGET_RSS_MB:g} MB: {t['verdict']}" + (f" ({t['note']})" if t["note"] else ""),
            )
        )
    say("\n== results (absolute figures: they move with the machine)")
    width = max(len(r[0]) for r in rows) if rows else 10
    vwidth = max(len(r[1]) for r in rows) if rows else 10
    for name, value, note in rows:
        say(f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip())
    machine = results.get("machine") or {}
    if machine:
        say(f"  measured on: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('python')}")
