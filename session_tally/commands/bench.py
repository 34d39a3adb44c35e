"""`session-tally bench BENCHMARK`: reproducible measurements, each printing the machine it ran on."""

from __future__ import annotations

from typing import Any

from session_tally.bench.command import register_pipeline
from session_tally.bench.replay import register_replay


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (replay throughput and memory, the whole pipeline)",
        description="Reproducible benchmarks; each prints its figures with the machine it ran on.",
    )
    commands = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    commands.required = True
    register_replay(commands)
    register_pipeline(commands)
