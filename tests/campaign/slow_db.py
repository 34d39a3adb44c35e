"""A slow database: every round trip between the workers and PostgreSQL takes :data:`LATENCY_S` longer
(the TCP proxy of tests/integration/faults.py holds each chunk from the server that long), under two
workers and a live stream. Measured: the round trip through the proxy, the batches' mean duration and
size, the apply rate reached, the lag, and how long the pipeline took to be idle after the input ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from tests.campaign.feed import Feed, numbered
from tests.campaign.harness import AT, Context, Scenario, say, spec_stream, wait_idle
from tests.campaign.monitor import Monitor
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary
from tests.integration.faults import TcpProxy
from tests.integration.pipeline_helpers import libpq_url

LATENCY_S = 0.2
NAME = "slow-db"


@dataclass(frozen=True)
class Size:
    runs: int
    events: int
    rate: float


QUICK = Size(runs=1, events=600, rate=200)
FULL = Size(runs=1, events=60_000, rate=500)


def round_trip_s(url: str) -> float:
    """The median of five ``SELECT 1`` round trips over one connection."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - started)
    return sorted(times)[2]


def run(ctx: Context) -> Row:
    size: Size = ctx.size(QUICK, FULL)
    row = Row(NAME)
    for run_no in range(1, size.runs + 1):
        url = make_url(ctx.services.database_url)
        with ctx.stage(row, run_no) as stage, TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            through = url.set(port=proxy.port).render_as_string(hide_password=False)
            lines = spec_stream(ctx.seed + run_no, size.events)
            row.events += len(lines)
            fleet = stage.fleet(worker_settings=stage.settings.replace(database_url=through))
            workers = fleet.start_all(("w1", "w2"))  # started at full speed, then the database slows down
            proxy.latency_s = LATENCY_S
            rtt = round_trip_s(through)
            say(f"{NAME} run {run_no}: round trip through the proxy {rtt * 1000:.0f} ms; {size.rate:.0f} events/s live")
            feed = Feed(stage.settings, numbered(lines), rate=size.rate).start()
            with Monitor(stage, fleet, feed.count, every_s=0.5) as monitor:
                ends = feed.join(timeout_s=size.events / size.rate + 300)
                catch_up = wait_idle(stage, ends, fleet, timeout_s=900, label=f"{NAME} run {run_no}: ")
                batches = sum(w.metric("session_tally_batches_total") for w in workers)
                batch_s = sum(w.metric("session_tally_batch_seconds_total") for w in workers)
                records = sum(w.metric("session_tally_records_total") for w in workers)
                fleet.stop_all()
            span = (monitor.samples[-1].at - monitor.samples[0].at) if monitor.samples else 0.0
            verdict = judge(stage.settings, enumerate(lines, start=1), AT)
            say(f"{NAME} run {run_no}: {summary(verdict)}")
            row.add_verdict(verdict)
            row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
            row.faults[f"+{LATENCY_S * 1000:.0f} ms per round trip"] += 1
            row.figures["round trip"] = f"{rtt * 1000:.0f} ms (added {LATENCY_S * 1000:.0f} ms)"
            row.figures["batches"] = (
                f"{batches:.0f}, mean {batch_s / max(batches, 1):.2f} s, {records / max(batches, 1):.0f} records"
            )
            row.figures["offered / applied"] = f"{size.rate:.0f} / {len(lines) / max(span, 1e-9):.0f} events/s"
            row.figures["max lag"] = f"{monitor.max_lag():,} records"
            row.figures["idle after the input ended"] = f"{catch_up:.1f} s"
    return row


SCENARIO = Scenario(
    NAME, f"PostgreSQL {LATENCY_S * 1000:.0f} ms slower per round trip, two workers, a live stream", run
)
