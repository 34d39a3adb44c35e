"""``session-tally bench replay``: a realistic stream generated to a file first (not timed), then ``session-tally
replay FILE --at T`` run in a child process, its wall time and peak resident memory measured (``os.wait4``:
``ru_maxrss`` of the child), next to the plain ``json.loads`` rate of the same file timed the same way
(bench/baseline.py). The child's start-up and import time are included: that is what a user of ``replay``
waits for. :func:`measure_replay` is also what `bench pipeline` runs on its own stream."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------- shared
from session_tally.bench.baseline import PROFILES, json_loads_rate, traffic_config
from session_tally.bench.machine import machine_info, print_machine, run_measured

TARGET_TO_JSON_LOADS = {"default": 0.40, "heavy": 0.30}  # issue 13: replay / json.loads of the same file


def _timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------- bench replay


def register_replay(commands: Any) -> None:
    p = commands.add_parser(
        "replay",
        help="throughput and peak memory of `session-tally replay` on a generated stream",
        description=(
            "Generate a realistic stream of N events (not timed), then run `session-tally replay` on it in a "
            "child process and report its wall time, events/s and peak RSS next to the rate of plain json.loads "
            "of every line of the same file (timed the same way) and the ratio replay / json.loads, with the "
            "machine it ran on."
        ),
        epilog=(
            "examples:\n  session-tally bench replay --events 1000000 --json bench-results/replay.json\n"
            "  session-tally bench replay --events 1000000 --profile heavy   # 10,000 paths, ~15% of lines rejected"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=1_000_000, metavar="N", help="events to generate (default 1000000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generator (default 1)")
    p.add_argument(
        "--at",
        default=None,
        metavar="T",
        help="time to evaluate the clock at (default: the stream's last event time)",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="the stream: default (the realistic mix, 2%% bad input) or heavy (10,000 paths, 11%% bad input, "
        "~15%% of lines rejected)",
    )
    p.add_argument("--order-independent", action="store_true", help="generate an order-independent stream")
    p.add_argument("--keep", default=None, metavar="FILE", help="write the generated stream to FILE and keep it")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=run_replay)


def generate_file(
    path: Path, events: int, seed: int, order_independent: bool, profile: str = "default"
) -> tuple[int, int, float]:
    """Write the stream to ``path``; return (records written, last stream time, seconds taken)."""
    from session_tally.traffic import generate_tagged, write_jsonl

    config = traffic_config(profile, seed, events, order_independent)
    last = [int(config.epoch.timestamp())]

    def records() -> Any:
        for tagged in generate_tagged(config, events):
            last[0] = tagged.at
            yield tagged.record

    started = time.perf_counter()
    with open(path, "wb", buffering=1 << 20) as fh:
        written = write_jsonl(records(), fh)
    return written, last[0], time.perf_counter() - started


def measure_replay(events_path: Path, at: str, workdir: Path) -> dict[str, Any]:
    """Run `session-tally replay FILE --at T` in a child process; its wall time, peak RSS and what it found.
    Raises RuntimeError when replay fails."""
    cmd = [sys.executable, "-m", "session_tally", "replay", str(events_path), "--at", at]
    out_path, err_path = workdir / "replay.json", workdir / "replay.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        status, wall_s, rss_mb = run_measured(cmd, out, err)
    if status != 0:
        message = err_path.read_text(errors="replace").strip()
        raise RuntimeError(f"replay exited with status {status}: {message}")
    with open(out_path, "rb") as fh:
        document = json.load(fh)
    out_path.unlink()
    reasons = Counter(r["reason"] for r in document["rejected"])
    return {
        "replay_s": round(wall_s, 3),
        "peak_rss_mb": round(rss_mb, 1),
        "tallies": len(document["tallies"]),
        "meetings": len(document["meetings"]),
        "rejected": len(document["rejected"]),
        "rejected_by_reason": dict(reasons.most_common()),
    }


def run_replay(args: argparse.Namespace) -> int:
    if args.events < 1:
        print("session-tally bench replay: --events must be at least 1", file=sys.stderr)
        return 2
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="session-tally-bench-"))
    try:
        events_path = Path(args.keep) if args.keep else workdir / "events.jsonl"
        written, last_at, gen_s = generate_file(
            events_path, args.events, args.seed, args.order_independent, args.profile
        )
        size_mb = events_path.stat().st_size / 1e6
        at = args.at or _timestamp(last_at)
        print(
            f"generated {written:,} events ({size_mb:,.1f} MB, profile {args.profile}) in {gen_s:.1f} s "
            f"({written / gen_s:,.0f} events/s; not part of the measurement)"
        )
        try:
            measured = measure_replay(events_path, at, workdir)
            baseline = json_loads_rate(events_path, workdir)
        except RuntimeError as exc:
            print(f"session-tally bench replay: {exc}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall_s, rss_mb = measured["replay_s"], measured["peak_rss_mb"]
    rate = round(written / wall_s)
    ratio = round(rate / baseline["lines_per_s"], 3)
    target = TARGET_TO_JSON_LOADS.get(args.profile)
    result = {
        "benchmark": "replay",
        "profile": args.profile,
        "events": written,
        "seed": args.seed,
        "order_independent": args.order_independent,
        "at": at,
        "file_mb": round(size_mb, 1),
        "generate_s": round(gen_s, 2),
        "replay_s": wall_s,
        "events_per_s": rate,
        "peak_rss_mb": rss_mb,
        "json_loads": baseline,
        "json_loads_lines_per_s": baseline["lines_per_s"],
        "ratio_replay_to_json_loads": ratio,
        "target_ratio_to_json_loads": target,
        "tallies": measured["tallies"],
        "meetings": measured["meetings"],
        "rejected": measured["rejected"],
        "rejected_fraction": round(measured["rejected"] / written, 4),
        "rejected_by_reason": measured["rejected_by_reason"],
        "machine": info,
    }
    reasons = Counter(measured["rejected_by_reason"])
    met = "" if target is None else ("target met" if ratio >= target else "below target")
    verdict = f" (target >= {target:.2f}: {met})" if met else ""
    print(f"ratio: replay / json.loads = {ratio:.3f}{verdict}")
    print(f"replay: {written:,} events in {wall_s:.2f} s = {rate:,} events/s, peak RSS {rss_mb:,.1f} MB")
    print(
        f"json.loads of every line of the same file: {baseline['lines']:,} lines in {baseline['seconds']:.2f} s "
        f"= {baseline['lines_per_s']:,} lines/s, peak RSS {baseline['peak_rss_mb']:,.1f} MB"
    )
    print(
        f"result at {at}: {result['tallies']:,} tallies, {result['meetings']:,} meetings, "
        f"{result['rejected']:,} rejected = {result['rejected_fraction']:.1%} of lines "
        f"({', '.join(f'{k} {v:,}' for k, v in reasons.most_common(5))}"
        f"{', ...' if len(reasons) > 5 else ''})"
    )
    print_machine(info)
    if args.keep:
        print(f"stream kept in {args.keep}")
    if args.json:
        out_file = Path(args.json)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(result, indent=2) + "\n")
    return 0
