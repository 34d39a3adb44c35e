"""What every scenario of the fault campaign shares: its own topics, schema and consumer group per run
(a :class:`Stage`), worker processes it can kill, stop, freeze and resume (a :class:`Fleet`), waiting
until the pipeline is idle, and how a scenario is registered and run (:class:`Context`,
:class:`Scenario`). The publisher is in :mod:`tests.campaign.feed`, the row a scenario reports in
:mod:`tests.campaign.row`.

Nothing here sleeps to synchronise: every wait is on a condition with a deadline. Every process a
scenario starts is stopped when its stage closes, whatever ended the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from session_tally.config import Settings, Topics
from session_tally.traffic import TrafficConfig, generate
from tests.campaign.row import Row
from tests.integration.pipeline_helpers import (
    Probe,
    applied_fraction,
    child_pids,
    kill_worker,
    metric_value,
    ready_info,
    start_worker_ex,
)

AT = "2026-03-01T00:00:00Z"  # the workers' frozen clock and replay's --at: inside the streams' event time
PARK_TIMEOUT_S = 3.0  # short: expiry waits for the read horizon (consumers/horizon.py), not the wall clock
_STARTED = time.monotonic()


class CampaignError(Exception):
    """A run could not go on (a worker died on its own, a wait ran out): the row records it as an error."""


def say(message: str) -> None:
    """One progress line, stamped with the seconds since the campaign started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


@dataclass(frozen=True)
class Services:
    bootstrap: str
    database_url: str

    @classmethod
    def from_env(cls) -> Services:
        bootstrap, url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""), os.environ.get("DATABASE_URL", "")
        if not bootstrap or not url:
            raise CampaignError(
                "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL must be set: run `session-tally services up` and "
                "`. .services/env` (or `make campaign`, which does both)"
            )
        return cls(bootstrap, url)


def spec_stream(seed: int, events: int) -> list[bytes]:
    """A generated stream whose result depends only on the order SPEC section 3 guarantees (with its own
    duplicates, bad records and early events)."""
    return [r.value for r in generate(TrafficConfig(seed=seed, spec_ordered=True), events)]


# --------------------------------------------------------------------------------------------- stages


class Stage:
    """One run's topics (own prefix), PostgreSQL schema and consumer group, removed by :meth:`close`;
    ``log_dir`` keeps the workers' logs."""

    def __init__(self, services: Services, name: str, log_dir: Path, bootstrap: str | None = None) -> None:
        tag = uuid.uuid4().hex[:8]
        prefix = f"camp{tag}."
        self.name = name
        self.log_dir = log_dir
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap or services.bootstrap,
            database_url=services.database_url,
            db_schema=f"camp_{tag}",
            group_id=f"{prefix}session-tally",
            topics=Topics.from_env(prefix=prefix),
            park_timeout_s=PARK_TIMEOUT_S,
        )
        self.fleets: list[Fleet] = []

    def open(self) -> Stage:
        from session_tally.topics import ensure_topics
        from storage.db import upgrade

        self.log_dir.mkdir(parents=True, exist_ok=True)
        mismatches = asyncio.run(ensure_topics(self.settings.kafka_bootstrap_servers, self.settings.topics))
        if mismatches:
            raise CampaignError(f"topics of {self.name}: {mismatches}")
        upgrade(self.settings.database_url, self.settings.db_schema)  # the probes read the tables at once
        return self

    def close(self, keep: bool = False) -> None:
        for fleet in self.fleets:
            fleet.close()
        if keep:
            return
        from sqlalchemy import text

        from storage.db import sync_engine
        from tests.conftest import delete_topics

        t = self.settings.topics
        with contextlib.suppress(Exception):
            asyncio.run(delete_topics(self.settings.kafka_bootstrap_servers, [*t.inputs, *t.outputs]))
        engine = sync_engine(self.settings.database_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.settings.db_schema}" CASCADE'))
        finally:
            engine.dispose()

    def fleet(self, **options: Any) -> Fleet:
        fleet = Fleet(self, **options)
        self.fleets.append(fleet)
        return fleet


# --------------------------------------------------------------------------------------------- workers


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    app: str  # PostgreSQL application_name of its sessions
    http: str = ""
    expected_down: bool = False  # killed or stopped on purpose

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def metric(self, name: str) -> float:
        return metric_value(self.http, name)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class Fleet:
    """Worker processes of one consumer group on a stage (frozen clock :data:`AT`, HTTP on a free port,
    each with its own PostgreSQL ``application_name``). ``static``: each worker's name is its static
    group membership id, so a restart takes its partitions back at once."""

    def __init__(
        self,
        stage: Stage,
        *,
        worker_settings: Settings | None = None,
        static: bool = False,
        batch_size: int | None = None,
        park_timeout_s: float = PARK_TIMEOUT_S,
        extra: Sequence[str] = (),
    ) -> None:
        self.stage = stage
        self.extra = tuple(extra)  # more `session-tally worker` options
        self.settings = worker_settings or stage.settings
        self.static = static
        self.batch_size = batch_size
        self.park_timeout_s = park_timeout_s
        self.workers: dict[str, Worker] = {}
        self.starts: Counter[str] = Counter()
        self.unclean_exits: list[str] = []  # a SIGTERM that did not end in exit status 0

    def start(self, name: str, wait_ready: bool = True) -> Worker:
        old = self.workers.get(name)
        assert old is None or not old.alive, f"{name} runs already"
        self.starts[name] += 1
        log = self.stage.log_dir / f"{name}-{self.starts[name]}.log"
        log.unlink(missing_ok=True)  # a log of an earlier campaign in the same --logs directory
        app = f"st-{self.stage.settings.db_schema}-{name}"[:63]
        proc = start_worker_ex(
            self.settings,
            log,
            clock=AT,
            park_timeout_s=self.park_timeout_s,
            batch_size=self.batch_size,
            instance_id=name if self.static else None,
            http_port=0,
            db_application_name=app,
            extra=self.extra,
        )
        worker = Worker(name, proc, log, app)
        self.workers[name] = worker
        if wait_ready:
            self.ready(worker)
        return worker

    def start_all(self, names: Sequence[str]) -> list[Worker]:
        """Start the workers together (none gets the backlog to itself for seconds), then wait for each."""
        started = [self.start(name, wait_ready=False) for name in names]
        return [self.ready(w) for w in started]

    def ready(self, worker: Worker) -> Worker:
        try:
            worker.http = ready_info(worker.log, worker.proc, timeout_s=90)["http"]
        except AssertionError as exc:
            raise CampaignError(f"{worker.name} did not start: {exc}\n{worker.tail()}") from None
        return worker

    def running(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.alive]

    def check(self) -> None:
        """Raise when a worker that should run has exited."""
        for w in self.workers.values():
            if not w.expected_down and not w.alive:
                raise CampaignError(f"worker {w.name} exited with {w.proc.returncode}:\n{w.tail()}")

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its children: no shutdown hook runs."""
        worker = self.workers[name]
        worker.expected_down = True
        kill_worker(worker.proc)

    def stop(self, name: str) -> int:
        """SIGTERM (graceful) once the worker is ready (a SIGTERM while it is still importing ends it with
        the default action: nothing to drain yet, but no test of a graceful stop either); an exit status
        other than 0 is recorded."""
        return self.stop_many([name])[0]

    def stop_many(self, names: Sequence[str]) -> list[int]:
        """SIGTERM to all of them at once (each must drain its batch in flight and its outbox and exit 0),
        then wait for each."""
        workers = [self.workers[n] for n in names]
        for w in workers:
            if w.alive and not w.http:
                self.ready(w)
        for w in workers:
            w.expected_down = True
            if w.alive:
                w.proc.send_signal(signal.SIGTERM)
        codes = []
        for w in workers:
            try:
                rc = w.proc.wait(60)  # no second SIGTERM: that one would mean "stop now"
            except subprocess.TimeoutExpired:
                kill_worker(w.proc)
                rc = w.proc.wait(10)
            if rc != 0:
                self.unclean_exits.append(f"{w.name} exited {rc} on SIGTERM:\n{w.tail(1500)}")
            codes.append(rc)
        return codes

    def pause(self, name: str) -> None:
        os.kill(self.workers[name].proc.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.workers[name].proc.pid, signal.SIGCONT)

    def stop_all(self) -> None:
        self.stop_many([w.name for w in self.running()])

    def close(self) -> None:
        for w in self.workers.values():
            if w.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signal.SIGCONT)  # a frozen worker cannot die of SIGKILL's cleanup
                kill_worker(w.proc)

    def rss_mb(self, name: str) -> float:
        """Resident memory of the worker and its child processes, in MB."""
        worker = self.workers[name]
        total = 0
        for pid in [worker.proc.pid, *child_pids(worker.proc.pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024


# --------------------------------------------------------------------------------------------- waiting


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1, fleet: Fleet | None = None
) -> Any:
    """``predicate()`` until truthy (returned); CampaignError at the deadline or when a worker died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if fleet is not None:
            fleet.check()
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            raise CampaignError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def pause(seconds: float, fleet: Fleet | None = None) -> None:
    """Let ``seconds`` pass (load shaping: the time between two faults), checking the workers live."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if fleet is not None:
            fleet.check()
        time.sleep(min(0.1, max(0.0, until - time.monotonic())))


def eventually(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Whether ``predicate()`` becomes truthy within ``timeout_s`` (a check, not a precondition)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def wait_idle(
    stage: Stage, ends: dict[str, int], fleet: Fleet, timeout_s: float, label: str = "", every_s: float = 10.0
) -> float:
    """Until every published offset is applied and the outbox and the waiting table are empty (printing
    progress); the seconds it took."""
    started = time.monotonic()
    last = 0.0
    with Probe(stage.settings) as probe:

        def idle() -> bool:
            nonlocal last
            state = probe.state()
            fraction = applied_fraction(state["offsets"], ends)
            if time.monotonic() - last >= every_s:
                last = time.monotonic()
                say(f"{label}applied {fraction:6.1%}, outbox {state['outbox']}, waiting {state['parked']}")
            return fraction >= 1.0 and state["outbox"] == 0 and state["parked"] == 0

        wait_for(idle, timeout_s, f"{label}the pipeline to be idle", interval_s=0.25, fleet=fleet)
    return time.monotonic() - started


def applied_now(stage: Stage) -> dict[str, int]:
    with Probe(stage.settings) as probe:
        return probe.offsets()


@contextlib.contextmanager
def staged(
    services: Services, row: Row, run: int, out_dir: Path, bootstrap: str | None = None, keep: bool = False
) -> Iterator[Stage]:
    """A stage for run ``run`` of ``row``'s scenario, closed (processes stopped, topics and schema
    dropped) however the run ends; logs stay in ``out_dir``."""
    stage = Stage(services, f"{row.scenario}-{run}", out_dir / row.scenario / f"run-{run}", bootstrap).open()
    try:
        yield stage
    finally:
        stage.close(keep=keep)


def fmt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f} s"


def spread(values: Sequence[float]) -> str:
    """'min-max' of a few measurements, in seconds."""
    return "n/a" if not values else f"{min(values):.1f}-{max(values):.1f} s"


# --------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Context:
    """What a scenario is run with: the services, where logs go, quick or full sizes, how many runs
    (None: the scenario's own count), the seed of every random choice, whether to keep topics and schemas."""

    services: Services
    out_dir: Path
    full: bool = False
    runs: int | None = None
    seed: int = 20261201
    keep: bool = False

    def size(self, quick: Any, full: Any) -> Any:
        """The quick or full size (a dataclass with a ``runs`` field), with ``runs`` overridden if asked."""
        chosen = full if self.full else quick
        return replace(chosen, runs=self.runs) if self.runs else chosen

    def stage(self, row: Row, run: int, bootstrap: str | None = None) -> contextlib.AbstractContextManager[Stage]:
        return staged(self.services, row, run, self.out_dir, bootstrap, self.keep)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # one line for --list and the docs
    run: Callable[[Context], Row]
    quick: bool = True  # in the quick set (CI); False: a long one, run by --full or by name
