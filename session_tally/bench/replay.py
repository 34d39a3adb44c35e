"""``session-tally bench replay``: a realistic stream generated to a file first (not timed), then ``session-tally
replay FILE --at T`` run in a child process, its wall time and peak resident memory measured (``os.wait4``).
The child's start-up and import time are included: that is what a user of ``replay`` waits for."""

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
from session_tally.bench.machine import machine_info, print_machine, run_measured


def _timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------- bench replay


def register_replay(commands: Any) -> None:
    p = commands.add_parser(
        "replay",
        help="throughput and peak memory of `session-tally replay` on a generated stream",
        description=(
            "Generate a realistic stream of N events (not timed), then run `session-tally replay` on it in a "
            "child process and report its wall time, events/s and peak RSS, with the machine it ran on."
        ),
        epilog="example:\n  session-tally bench replay --events 1000000 --json bench-results/replay.json",
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
    p.add_argument("--order-independent", action="store_true", help="generate an order-independent stream")
    p.add_argument("--keep", default=None, metavar="FILE", help="write the generated stream to FILE and keep it")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=run_replay)


def generate_file(path: Path, events: int, seed: int, order_independent: bool) -> tuple[int, int, float]:
    """Write the stream to ``path``; return (records written, last stream time, seconds taken)."""
    from session_tally.traffic import TrafficConfig, generate_tagged, write_jsonl

    config = TrafficConfig(seed=seed, order_independent=order_independent)
    last = [int(config.epoch.timestamp())]

    def records() -> Any:
        for tagged in generate_tagged(config, events):
            last[0] = tagged.at
            yield tagged.record

    started = time.perf_counter()
    with open(path, "wb", buffering=1 << 20) as fh:
        written = write_jsonl(records(), fh)
    return written, last[0], time.perf_counter() - started


def run_replay(args: argparse.Namespace) -> int:
    if args.events < 1:
        print("session-tally bench replay: --events must be at least 1", file=sys.stderr)
        return 2
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="session-tally-bench-"))
    try:
        events_path = Path(args.keep) if args.keep else workdir / "events.jsonl"
        written, last_at, gen_s = generate_file(events_path, args.events, args.seed, args.order_independent)
        size_mb = events_path.stat().st_size / 1e6
        at = args.at or _timestamp(last_at)
        print(
            f"generated {written:,} events ({size_mb:,.1f} MB) in {gen_s:.1f} s "
            f"({written / gen_s:,.0f} events/s; not part of the measurement)"
        )
        cmd = [sys.executable, "-m", "session_tally", "replay", str(events_path), "--at", at]
        out_path, err_path = workdir / "replay.json", workdir / "replay.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            status, wall_s, rss_mb = run_measured(cmd, out, err)
        if status != 0:
            message = err_path.read_text(errors="replace").strip()
            print(f"session-tally bench replay: replay exited with status {status}: {message}", file=sys.stderr)
            return 1
        with open(out_path, "rb") as fh:
            document = json.load(fh)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reasons = Counter(r["reason"] for r in document["rejected"])
    result = {
        "benchmark": "replay",
        "events": written,
        "seed": args.seed,
        "order_independent": args.order_independent,
        "at": at,
        "file_mb": round(size_mb, 1),
        "generate_s": round(gen_s, 2),
        "replay_s": round(wall_s, 3),
        "events_per_s": round(written / wall_s),
        "peak_rss_mb": round(rss_mb, 1),
        "tallies": len(document["tallies"]),
        "meetings": len(document["meetings"]),
        "rejected": len(document["rejected"]),
        "rejected_by_reason": dict(reasons.most_common()),
        "machine": info,
    }
    rate = result["events_per_s"]
    print(f"replay: {written:,} events in {wall_s:.2f} s = {rate:,} events/s, peak RSS {rss_mb:,.1f} MB")
    print(
        f"result at {at}: {result['tallies']:,} tallies, {result['meetings']:,} meetings, "
        f"{result['rejected']:,} rejected ({', '.join(f'{k} {v:,}' for k, v in reasons.most_common(5))}"
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
