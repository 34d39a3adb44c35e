"""A soak: two workers under a steady live stream (:data:`RATE` events/s) for a long time (30 minutes
in the full campaign), sampled every few seconds: the resident memory of each worker process (with its
children), the lag (records published and not yet applied), the outbox (rows, age of the oldest row),
waiting events. It stops by itself when the stream has been published and the pipeline is idle; then
the whole stream (generated again, it is deterministic) is judged against ``replay``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from session_tally.traffic import TrafficConfig, generate
from tests.campaign.feed import Feed, numbered
from tests.campaign.harness import AT, Context, Scenario, say, wait_idle
from tests.campaign.monitor import Monitor, Sample
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary

NAME = "soak"
RATE = 1500.0


@dataclass(frozen=True)
class Size:
    runs: int
    seconds: float
    sample_every_s: float


QUICK = Size(runs=1, seconds=10, sample_every_s=1.0)
FULL = Size(runs=1, seconds=1800, sample_every_s=5.0)


def lines(seed: int, events: int) -> Iterator[bytes]:
    """The soak's stream, generated as it is needed (a 30-minute stream is 2.7 million events)."""
    return (r.value for r in generate(TrafficConfig(seed=seed, spec_ordered=True), events))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def trend(samples: list[Sample], name: str) -> str:
    """A worker's RSS at 0, 25, 50, 75 and 100 % of the run (MB)."""
    mine = [s.rss_mb[name] for s in samples if name in s.rss_mb]
    if not mine:
        return "n/a"
    return " -> ".join(f"{mine[min(len(mine) - 1, int(q * (len(mine) - 1)))]:.0f}" for q in (0, 0.25, 0.5, 0.75, 1))


def run(ctx: Context) -> Row:
    size: Size = ctx.size(QUICK, FULL)
    row = Row(NAME)
    for run_no in range(1, size.runs + 1):
        events = int(RATE * size.seconds)
        seed = ctx.seed + run_no
        with ctx.stage(row, run_no) as stage:
            fleet = stage.fleet()
            fleet.start_all(("w1", "w2"))
            say(f"{NAME} run {run_no}: {events:,} events at {RATE:.0f}/s ({size.seconds / 60:.1f} min), two workers")
            feed = Feed(stage.settings, numbered(lines(seed, events)), rate=RATE).start()
            with Monitor(stage, fleet, feed.count, every_s=size.sample_every_s) as monitor:
                every = max(10.0, size.seconds / 30)
                next_report = every
                while not feed.wait(1.0):
                    fleet.check()
                    if monitor.samples and monitor.samples[-1].at - monitor.samples[0].at >= next_report:
                        s = monitor.samples[-1]
                        say(
                            f"{NAME}: {s.published:,} published, lag {s.lag:,}, outbox {s.outbox_rows} "
                            f"(oldest {s.outbox_age_s:.1f} s), RSS {s.rss_mb} MB"
                        )
                        next_report += every
                ends = feed.join()
                publishing = (feed.finished_at or 0) - (feed.started_at or 0)
                live = [s for s in monitor.samples if s.published < events]
                catch_up = wait_idle(stage, ends, fleet, timeout_s=3600, label=f"{NAME} run {run_no}: ")
                fleet.stop_all()
            row.events += feed.sent
            samples = monitor.samples
            lags = [float(s.lag) for s in live] or [0.0]
            ages = [s.outbox_age_s for s in live] or [0.0]
            rss = monitor.rss()
            row.faults[f"{RATE:.0f} events/s for {size.seconds / 60:.0f} min"] += 1
            row.figures["offered"] = f"{feed.sent / max(publishing, 1e-9):,.0f} events/s over {publishing:.0f} s"
            for name, figures in rss.items():
                row.figures[f"RSS {name}"] = (
                    f"{figures['start']:.0f} / {figures['peak']:.0f} / {figures['end']:.0f} MB "
                    f"(start/peak/end; {trend(samples, name)})"
                )
            row.figures["lag"] = (
                f"p50 {_quantile(lags, 0.5):.0f}, p99 {_quantile(lags, 0.99):.0f}, max {max(lags):.0f} records "
                "while publishing; 0 at the end"
            )
            row.figures["oldest outbox row"] = (
                f"p50 {_quantile(ages, 0.5):.2f}, p99 {_quantile(ages, 0.99):.2f}, max {max(ages):.2f} s"
            )
            row.figures["idle after the stream ended"] = f"{catch_up:.1f} s"
            row.figures["samples"] = f"{len(samples)} every {size.sample_every_s:.0f} s (all in --json)"
            row.series = monitor.table()
            verdict = judge(stage.settings, enumerate(lines(seed, feed.sent), start=1), AT)
            say(f"{NAME} run {run_no}: {summary(verdict)}")
            row.add_verdict(verdict)
            row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
    return row


SCENARIO = Scenario(NAME, f"{RATE:.0f} events/s for 30 minutes (full), RSS, lag and outbox age sampled", run, False)
