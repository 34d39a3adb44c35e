"""SIGKILL at random moments, two workers, a backlog.

Each run publishes a backlog, starts two workers (static group membership: a restarted worker takes its
partitions back at once, without waiting out the session timeout) and, at random fractions of the
backlog applied (seeded), SIGKILLs one of the two at random, with its children, and starts it again.
What each kill hit is read from PostgreSQL just before it: a session of the victim holding a lock on
``consumer_offsets`` (only an input-batch transaction takes one: the batch is rolled back and done
again), a session holding outbox lane locks (the relay between "selected its rows" and "deleted them":
what it sent goes out again), or neither. The run then waits until the pipeline is idle and judges it
(tests/campaign/verdict.py).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from storage.messages import LANES
from tests.campaign.feed import numbered, publish_all
from tests.campaign.harness import AT, Context, Fleet, Scenario, Stage, pause, say, spec_stream, wait_for, wait_idle
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary
from tests.integration.pipeline_helpers import FastProbe, applied_fraction

NAME = "crash"


@dataclass(frozen=True)
class Size:
    runs: int
    events: int
    kills: int  # per run


QUICK = Size(runs=1, events=12_000, kills=2)
FULL = Size(runs=5, events=300_000, kills=8)


def classify(sessions: list[dict[str, object]]) -> str:
    """What a kill lands in, from the victim's sessions inside a transaction just before it."""
    if any(s["batch"] for s in sessions):
        return "in a batch transaction"
    if any(s["lanes"] for s in sessions):
        return "while the relay held lane locks"
    return "between transactions"


def kill_during(stage: Stage, fleet: Fleet, ends: dict[str, int], thresholds: list[float], rng: random.Random,
                row: Row, label: str) -> list[float]:  # fmt: skip
    """At each fraction of the backlog applied, SIGKILL a random one of the two workers and start it again;
    returns how long each restart took to be ready."""
    restarts = []
    probe = FastProbe(stage.settings, LANES)

    def applied() -> float:
        return applied_fraction(probe.offsets(), ends)

    try:
        for n, threshold in enumerate(thresholds, start=1):
            wait_for(lambda: applied() >= threshold, 600, f"{threshold:.0%} applied", 0.01, fleet)  # noqa: B023
            fraction = applied()
            victim = fleet.workers[rng.choice(("w1", "w2"))]
            pause(rng.uniform(0.0, 0.3))
            hit = classify(probe.sessions(victim.app))
            fleet.kill(victim.name)
            row.faults[f"SIGKILL {hit}"] += 1
            started = time.monotonic()
            fleet.start(victim.name)
            restarts.append(time.monotonic() - started)
            say(f"{label}kill {n}/{len(thresholds)} of {victim.name} at {fraction:.0%} applied, {hit}")
    finally:
        probe.close()
    return restarts


def run(ctx: Context) -> Row:
    size: Size = ctx.size(QUICK, FULL)
    row = Row(NAME)
    rng = random.Random(ctx.seed)
    restarts: list[float] = []
    for run_no in range(1, size.runs + 1):
        label = f"{NAME} run {run_no}/{size.runs}: "
        with ctx.stage(row, run_no) as stage:
            lines = spec_stream(ctx.seed + run_no, size.events)
            row.events += len(lines)
            ends = publish_all(stage.settings, numbered(lines))
            say(f"{label}{len(lines):,}-event backlog published; two workers")
            fleet = stage.fleet(static=True)
            fleet.start_all(("w1", "w2"))
            thresholds = sorted(rng.uniform(0.03, 0.85) for _ in range(size.kills))
            restarts += kill_during(stage, fleet, ends, thresholds, rng, row, label)
            wait_idle(stage, ends, fleet, timeout_s=120 + size.events / 500, label=label)
            fleet.stop_all()
            verdict = judge(stage.settings, enumerate(lines, start=1), AT)
            say(f"{label}{summary(verdict)}")
            row.add_verdict(verdict)
            row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
    row.figures["kills"] = dict(row.faults)
    row.figures["restart to ready"] = f"{min(restarts):.1f}-{max(restarts):.1f} s" if restarts else "n/a"
    return row


SCENARIO = Scenario(NAME, "SIGKILL one of two workers at random moments of a backlog, restart it", run)
