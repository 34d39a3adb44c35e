"""Rebalance storms: the group scaled 1 -> 3 -> 1 -> 2 -> 3 -> 1 -> 2 ... workers, a few seconds apart
(without waiting for the group to settle), as an autoscaler in a hurry would:

- ``rebalance-backlog``: while the workers work through a backlog;
- ``rebalance-live``: while a live stream of about 1,000 events/s comes in.

Scaling up starts new workers (dynamic membership: each is a new member, every join a stop-the-world
rebalance); scaling down sends SIGTERM to workers picked at random (which must drain and exit 0). The
steps go on while input remains; then the run waits until the pipeline is idle and is judged.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

from tests.campaign.feed import Feed, numbered, publish_all
from tests.campaign.harness import AT, Context, Fleet, Scenario, pause, say, spec_stream, wait_idle
from tests.campaign.monitor import Monitor
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary

PATTERN = (3, 1, 2)  # target sizes, repeated, starting from one worker


@dataclass(frozen=True)
class Size:
    runs: int
    events: int  # backlog size, or the live stream's length
    steps: int  # per run
    delay_s: tuple[float, float]  # between two steps
    rate: float | None = None  # live stream, events/s (None: a backlog)


QUICK_BACKLOG = Size(runs=1, events=20_000, steps=3, delay_s=(1.0, 2.0))
FULL_BACKLOG = Size(runs=2, events=300_000, steps=8, delay_s=(2.0, 6.0))
QUICK_LIVE = Size(runs=1, events=12_000, steps=3, delay_s=(1.5, 2.5), rate=1000)
FULL_LIVE = Size(runs=1, events=240_000, steps=24, delay_s=(3.0, 8.0), rate=1000)


class Storm:
    """Scales a fleet step by step; new workers get new names (new members)."""

    def __init__(self, fleet: Fleet, rng: random.Random) -> None:
        self.fleet = fleet
        self.rng = rng
        self.names = (f"w{n}" for n in itertools.count(1))
        self.steps: list[dict[str, Any]] = []

    def scale(self, target: int) -> None:
        running = self.fleet.running()
        started = time.monotonic()
        if target > len(running):
            for _ in range(target - len(running)):
                self.fleet.start(next(self.names), wait_ready=False)
        else:
            self.fleet.stop_many([w.name for w in self.rng.sample(running, len(running) - target)])
        self.steps.append({"from": len(running), "to": target, "took_s": round(time.monotonic() - started, 1)})


def run_variant(ctx: Context, live: bool) -> Row:
    size: Size = ctx.size(QUICK_LIVE, FULL_LIVE) if live else ctx.size(QUICK_BACKLOG, FULL_BACKLOG)
    name = "rebalance-live" if live else "rebalance-backlog"
    row = Row(name)
    rng = random.Random(ctx.seed)
    stalls: list[float] = []
    lags: list[int] = []
    durations: list[float] = []
    for run_no in range(1, size.runs + 1):
        with ctx.stage(row, run_no) as stage:
            lines = spec_stream(ctx.seed + run_no, size.events)
            row.events += len(lines)
            fleet = stage.fleet()
            storm = Storm(fleet, rng)
            feed: Feed | None = None
            if live:
                storm.scale(1)
                fleet.ready(fleet.running()[0])
                feed = Feed(stage.settings, numbered(lines), rate=size.rate).start()
                published = feed.count
            else:
                ends = publish_all(stage.settings, numbered(lines))
                storm.scale(1)
                published = len(lines).__index__
            say(f"{name} run {run_no}/{size.runs}: {len(lines):,} events, storm of {size.steps} steps")
            with Monitor(stage, fleet, published, every_s=0.5) as monitor:
                for step, target in zip(range(size.steps), itertools.cycle(PATTERN), strict=False):
                    pause(rng.uniform(*size.delay_s), fleet)
                    last = monitor.samples[-1] if monitor.samples else None
                    if (feed is not None and feed.done) or (feed is None and last is not None and last.lag == 0):
                        say(f"{name} run {run_no}: the input ran out after {step} steps")
                        break
                    storm.scale(target)
                    say(f"{name} run {run_no}: step {step + 1}: {storm.steps[-1]}, lag {last.lag if last else '?'}")
                    row.faults[f"scale {storm.steps[-1]['from']}->{target}"] += 1
                if feed is not None:
                    ends = feed.join(timeout_s=size.events / (size.rate or 1) + 120)
                durations.append(wait_idle(stage, ends, fleet, timeout_s=600, label=f"{name} run {run_no}: "))
                fleet.stop_all()
            stalls.append(monitor.longest_stall())
            lags.append(monitor.max_lag())
            verdict = judge(stage.settings, enumerate(lines, start=1), AT)
            say(f"{name} run {run_no}: {summary(verdict)}")
            row.add_verdict(verdict)
            row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
            row.figures.setdefault("steps", []).extend(storm.steps)
    row.figures["longest stall with input waiting"] = f"{max(stalls):.1f} s"
    row.figures["max lag"] = f"{max(lags):,} records"
    row.figures["idle after the last step"] = f"{max(durations):.1f} s"
    steps = row.figures.pop("steps")
    row.figures["scale steps took"] = f"{min(s['took_s'] for s in steps)}-{max(s['took_s'] for s in steps)} s"
    return row


SCENARIOS = [
    Scenario(
        "rebalance-backlog",
        "scale 1 -> 3 -> 1 -> 2 ... workers while a backlog is applied",
        lambda ctx: run_variant(ctx, live=False),
    ),
    Scenario(
        "rebalance-live",
        "scale 1 -> 3 -> 1 -> 2 ... workers under ~1,000 events/s",
        lambda ctx: run_variant(ctx, live=True),
    ),
]
