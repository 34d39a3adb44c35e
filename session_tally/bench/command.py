"""The bench pipeline command: options, validation, signal handling, the run."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from session_tally.bench.common import EXAMPLE, BenchError, load_average, say
from session_tally.bench.pipeline import PipelineBench
from session_tally.bench.ratios import CAPACITY_FRACTION
from session_tally.bench.report import summarize

# ---------------------------------------------------------------------------------------- registration


def register_pipeline(commands: Any) -> None:
    p = commands.add_parser(
        "pipeline",
        help="end-to-end throughput, latency, Kafka/PostgreSQL ceilings and a naive baseline",
        description=(
            "Measure the real pipeline (Kafka -> worker processes -> PostgreSQL -> relay -> Kafka) in one "
            "run: `session-tally replay` on the same stream, Kafka and PostgreSQL ceilings, backlog throughput "
            "(per worker count), latency at an offered rate and at a fraction of the measured capacity, a "
            "batch-size-1 baseline, worker peak RSS; prints the ratios first (pipeline / replay, W workers / "
            "1 worker, p99 against capacity), then the absolute figures with the machine, the versions and the "
            "command line."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=200_000, metavar="N", help="backlog events (default 200000)")
    p.add_argument("--rate", type=float, default=2000.0, help="offered events/s of the latency phase (default 2000)")
    p.add_argument(
        "--latency-seconds", type=float, default=20.0, metavar="S", help="length of the latency phase (default 20)"
    )
    p.add_argument(
        "--workers",
        default="1",
        metavar="W[,W...]",
        help="worker processes; a list (1,2,3) repeats the backlog phase per count (default 1)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the traffic generator (default 1)")
    p.add_argument("--batch-size", type=int, default=5000, help="worker --batch-size (default 5000, as the worker)")
    p.add_argument(
        "--naive-events", type=int, default=5000, metavar="N", help="events of the batch-size-1 run (default 5000)"
    )
    p.add_argument(
        "--capacity-fraction",
        type=float,
        default=CAPACITY_FRACTION,
        metavar="F",
        help="second latency phase at F x the capacity measured by the backlog phase (after start-up); "
        f"0 = skip it (default {CAPACITY_FRACTION:g})",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the run's topics, schemas and worker logs")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="fail a phase when nothing progresses for S seconds (default 120)",
    )
    p.add_argument("--skip-replay", action="store_true", help="skip phase 0 (replay of the same stream)")
    p.add_argument("--skip-kafka-ceiling", action="store_true", help="skip phase 1's consume measurement")
    p.add_argument("--skip-pg-ceiling", action="store_true", help="skip phase 2")
    p.add_argument("--skip-backlog", action="store_true", help="skip phase 3 (throughput, scaling, growth)")
    p.add_argument("--skip-latency", action="store_true", help="skip phase 4 (both latency runs)")
    p.add_argument("--skip-naive", action="store_true", help="skip phase 5")
    p.set_defaults(func=run_pipeline)


def parse_workers(text: str) -> list[int]:
    counts = [int(part) for part in text.replace(" ", "").split(",") if part]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(text)
    return counts


# ---------------------------------------------------------------------------------------- the command


def _validate(args: argparse.Namespace) -> str | None:
    if args.events < 1 or args.naive_events < 1:
        return "--events and --naive-events must be at least 1"
    if args.rate <= 0 or args.latency_seconds <= 0:
        return "--rate and --latency-seconds must be positive"
    if args.batch_size < 1:
        return "--batch-size must be at least 1"
    if not 0 <= args.capacity_fraction <= 1:
        return "--capacity-fraction must be between 0 and 1"
    return None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so that the ``finally`` blocks stop the workers and clean up."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_pipeline(args: argparse.Namespace) -> int:
    message = _validate(args)
    try:
        counts = parse_workers(args.workers)
    except ValueError:
        message = message or f"--workers wants counts like 1 or 1,2,3, not {args.workers!r}"
        counts = []
    if message:
        print(f"session-tally bench pipeline: {message}", file=sys.stderr)
        return 2
    bench = PipelineBench(args, counts)
    status = 0
    with _sigterm_interrupts():
        try:
            try:
                bench.run()
            finally:
                bench.cleanup()
        except KeyboardInterrupt:
            print("\nsession-tally bench pipeline: interrupted; workers stopped", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"session-tally bench pipeline: {exc}", file=sys.stderr)
            status = 1
        # Kafka or PostgreSQL out of reach: session_tally.cli says so in one line (exit 2)
    results = bench.results
    if not results:
        return status or 1
    results.setdefault("load_average", {}).setdefault("end", load_average())
    summarize(results, counts, args.events)
    say(
        f"load average at start {' '.join(map(str, results['load_average'].get('start', [])))}, "
        f"at end {' '.join(map(str, results['load_average']['end']))} ({results['machine']['cores']} cores)"
    )
    results["complete"] = status == 0
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
        say(f"results written to {out}")
    return status


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


__all__ = ["register_pipeline", "run_pipeline"]
