"""Outages of the services under two running workers and a live stream:

- ``pg-outage``: the workers reach PostgreSQL through a TCP proxy (tests/integration/faults.py) that is
  cut (every connection reset, new ones refused: a restart, a fail-over or a network partition as the
  workers see it) for a random time, then restored;
- ``kafka-outage``: the workers run against a private broker (free ports, its own state directory),
  which is stopped (SIGTERM: controlled shutdown) or killed (SIGKILL: no flush, log recovery at the next
  start) for a random time, then started again. The stream's publisher is held between two sends for
  the outage (upstream producers that cannot reach Kafka are not part of what is tested: every record
  they sent is acknowledged, every record of the input is in Kafka).

Measured per outage: its length, whether the workers' /healthz reported it, and the time from the
service being back to the first input record applied again.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from session_tally.localsvc.kafka import LocalKafka
from session_tally.localsvc.proc import free_port, port_open
from tests.campaign.feed import Feed, numbered
from tests.campaign.harness import (
    AT,
    CampaignError,
    Context,
    Fleet,
    Scenario,
    Stage,
    eventually,
    pause,
    say,
    spec_stream,
    wait_for,
    wait_idle,
)
from tests.campaign.monitor import Monitor
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary
from tests.integration.faults import TcpProxy


@dataclass(frozen=True)
class Size:
    runs: int
    outages: int  # per run
    length_s: tuple[float, float]  # each outage lasts a random time in this range
    rate: float  # live stream, events/s
    between_s: tuple[float, float] = (4.0, 8.0)  # normal operation between two outages
    kills: bool = True  # Kafka: SIGKILL the broker half of the time (its restart then recovers the logs)


QUICK_PG = Size(runs=1, outages=2, length_s=(3.0, 5.0), rate=400, between_s=(2.0, 3.0))
FULL_PG = Size(runs=1, outages=9, length_s=(5.0, 50.0), rate=500)
QUICK_KAFKA = Size(runs=1, outages=1, length_s=(3.0, 3.0), rate=400, between_s=(2.0, 3.0), kills=False)
FULL_KAFKA = Size(runs=1, outages=10, length_s=(5.0, 50.0), rate=500)


def health(http: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(http + "/healthz", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as err:
        return json.loads(err.read())  # type: ignore[no-any-return]
    except OSError:
        return {"checks": {}}


class Outage:
    """How a scenario takes its service down and brings it back."""

    check = ""  # the /healthz check that must fail meanwhile

    def attach(self, feed: Feed) -> None:
        """The run's publisher (for an outage that must hold it)."""

    def down(self, rng: random.Random) -> str:
        raise NotImplementedError

    def up(self) -> None:
        raise NotImplementedError


class PostgresCut(Outage):
    check = "postgres"

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    def down(self, rng: random.Random) -> str:
        self.proxy.cut()
        return "PostgreSQL cut"

    def up(self) -> None:
        self.proxy.restore()


class BrokerDown(Outage):
    check = "kafka"

    def __init__(self, broker: LocalKafka, kills: bool) -> None:
        self.broker = broker
        self.kills = kills
        self.feed: Feed | None = None

    def attach(self, feed: Feed) -> None:
        self.feed = feed

    def down(self, rng: random.Random) -> str:
        if self.feed is not None:
            self.feed.hold()  # nothing in flight when the broker goes
        if not self.kills or rng.random() < 0.5:
            self.broker.stop()
            return "Kafka stopped"
        self.broker.kill()
        return "Kafka killed"

    def up(self) -> None:
        wait_for(lambda: not port_open(self.broker.port), 30, "the broker's port to close")
        self.broker.wait_ready(self.broker.launch())
        if self.feed is not None:
            self.feed.release()


def ride_out(
    name: str, ctx: Context, row: Row, stage: Stage, fleet: Fleet, outage: Outage, size: Size, rng: random.Random
) -> list[dict[str, Any]]:
    """Two workers, a live stream, ``size.outages`` outages; the pipeline then idle and judged."""
    lines = spec_stream(ctx.seed + row.runs + 1, int(size.rate * (20 + size.outages * (size.length_s[1] + 30))))
    workers = fleet.start_all(("w1", "w2"))
    feed = Feed(stage.settings, numbered(lines), rate=size.rate).start()
    outage.attach(feed)
    figures: list[dict[str, Any]] = []
    try:
        with Monitor(stage, fleet, feed.count, every_s=0.25) as monitor:
            for n in range(1, size.outages + 1):
                pause(rng.uniform(*size.between_s), fleet)  # normal operation first
                length = rng.uniform(*size.length_s)
                kind = outage.down(rng)
                down_at = time.monotonic()
                say(f"{name}: outage {n}/{size.outages}: {kind} for {length:.0f} s")
                seen = eventually(
                    lambda: all(health(w.http).get("checks", {}).get(outage.check) is False for w in workers),
                    length,
                    interval_s=0.5,
                )
                pause(down_at + length - time.monotonic(), fleet)
                outage.up()
                back_at = time.monotonic()
                recovered = monitor.first_progress_after(back_at)
                row.faults[kind] += 1
                figures.append(
                    {
                        "kind": kind,
                        "length_s": round(back_at - down_at, 1),
                        "healthz_reported": seen,
                        "back_to_progress_s": None if recovered is None else round(recovered, 1),
                    }
                )
                say(f"{name}: outage {n}: {figures[-1]}")
                if recovered is None:
                    raise CampaignError(f"no input applied within 300 s of the end of outage {n}")
            ends = feed.stop()
            wait_idle(stage, ends, fleet, timeout_s=600, label=f"{name}: ")
            fleet.stop_all()
    finally:
        if not feed.done:
            feed.release()
            feed.stop()
    row.events += feed.sent
    verdict = judge(stage.settings, enumerate(lines[: feed.sent], start=1), AT)
    say(f"{name}: {summary(verdict)}")
    row.add_verdict(verdict)
    row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
    return figures


def _report(row: Row, figures: list[dict[str, Any]]) -> Row:
    lengths = [f["length_s"] for f in figures]
    recoveries = [f["back_to_progress_s"] for f in figures if f["back_to_progress_s"] is not None]
    row.figures["outage lengths"] = f"{min(lengths)}-{max(lengths)} s" if lengths else "n/a"
    row.figures["back to progress"] = f"{min(recoveries)}-{max(recoveries)} s" if recoveries else "n/a"
    row.figures["/healthz reported it"] = f"{sum(f['healthz_reported'] for f in figures)}/{len(figures)}"
    row.figures["per outage"] = figures
    return row


def run_pg(ctx: Context) -> Row:
    size: Size = ctx.size(QUICK_PG, FULL_PG)
    row = Row("pg-outage")
    rng = random.Random(ctx.seed)
    figures: list[dict[str, Any]] = []
    for run_no in range(1, size.runs + 1):
        url = make_url(ctx.services.database_url)
        with ctx.stage(row, run_no) as stage, TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            through = url.set(port=proxy.port).render_as_string(hide_password=False)
            fleet = stage.fleet(worker_settings=stage.settings.replace(database_url=through))
            figures += ride_out("pg-outage", ctx, row, stage, fleet, PostgresCut(proxy), size, rng)
    return _report(row, figures)


@contextlib.contextmanager
def private_broker(ctx: Context) -> Iterator[LocalKafka]:
    broker = LocalKafka(ctx.out_dir / "kafka-outage" / "broker", port=free_port(), controller_port=free_port())
    try:
        say(f"kafka-outage: starting a private broker on {broker.bootstrap}")
        broker.wait_ready(broker.launch())
        yield broker
    finally:
        broker.stop()


def run_kafka(ctx: Context) -> Row:
    size: Size = ctx.size(QUICK_KAFKA, FULL_KAFKA)
    row = Row("kafka-outage")
    rng = random.Random(ctx.seed)
    figures: list[dict[str, Any]] = []
    with private_broker(ctx) as broker:
        for run_no in range(1, size.runs + 1):
            with ctx.stage(row, run_no, bootstrap=broker.bootstrap) as stage:
                fleet = stage.fleet()
                figures += ride_out("kafka-outage", ctx, row, stage, fleet, BrokerDown(broker, size.kills), size, rng)
    return _report(row, figures)


SCENARIOS = [
    Scenario("pg-outage", "PostgreSQL cut (connections reset, refused) under two workers and a live stream", run_pg),
    # long: a private broker's start and a restart per outage (~1 minute at the least); the single outage
    # runs in CI as tests/integration/test_faults.py::test_broker_restart_midstream_equal_replay
    Scenario(
        "kafka-outage", "the Kafka broker stopped or killed under two workers and a live stream", run_kafka, False
    ),
]
