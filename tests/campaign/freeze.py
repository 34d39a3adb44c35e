"""A worker frozen (SIGSTOP) past its session timeout and resumed (SIGCONT), at an aimed moment:

- ``freeze-batch``: while one of its sessions is inside an input-batch transaction (it holds a lock on
  ``consumer_offsets``, and the path rows and program locks of the batch);
- ``freeze-relay``: while its outbox relay holds lane locks (advisory locks, rows selected and being
  sent to Kafka, not yet deleted).

Two workers (dynamic membership, as deployed) consume a live stream. The victim stays frozen past the
Kafka session timeout (the group gives its partitions to the other worker) and past PostgreSQL's
``idle_in_transaction_session_timeout`` (storage/db.py SESSION_BOUNDS: the server ends the frozen
sessions, which rolls their transactions back and releases their locks); it is resumed only once
PostgreSQL has ended every session it had inside a transaction at the freeze, so that nothing it
started before the freeze can commit afterwards (checked, and its next batch or relay round must fail).

Measured: the longest time the other worker made no progress (records applied, from its /metrics)
from the freeze until its first progress after the resume, against the stated bound
:data:`BOUND_S`; how long the frozen sessions kept their locks; the oldest outbox row meanwhile.
Versions going backwards and (entity, version) pairs with two contents are counted by the verdict.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

from consumers.subscriber import SESSION_TIMEOUT_MS
from storage.db import IDLE_IN_TRANSACTION_S, LOCK_S
from storage.messages import LANES
from tests.campaign.feed import Feed, numbered
from tests.campaign.harness import (
    AT,
    CampaignError,
    Context,
    Fleet,
    Scenario,
    Stage,
    Worker,
    eventually,
    say,
    spec_stream,
    wait_for,
    wait_idle,
)
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary
from tests.integration.pipeline_helpers import FastProbe, Probe

#: The longest the other worker may go without progress because one worker froze: the frozen sessions
#: end after IDLE_IN_TRANSACTION_S at most (PostgreSQL ends one idle in its transaction; one frozen inside
#: a COPY, or idle after a pipeline, which PostgreSQL does not bound, is ended by the other's health
#: monitor after STALLED_CLIENT_S and a round) and their locks go
#: with them (a lock wait returns as soon as they do), the frozen member leaves the group after the
#: session timeout (shorter), and LOCK_S covers the rest: a lock wait that timed out meanwhile and is
#: retried, the rebalance, the next fetch.
BOUND_S = IDLE_IN_TRANSACTION_S + LOCK_S
SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000
RECORDS = "session_tally_records_total"
FAILURES = {"batch": "session_tally_batch_failures_total", "relay": "session_tally_relay_failures_total"}


@dataclass(frozen=True)
class Size:
    runs: int
    freezes: int  # per run
    pause_s: tuple[float, float]  # frozen for a random time in this range (then until its sessions ended)
    rate: float  # live stream, events/s


QUICK = Size(runs=1, freezes=1, pause_s=(IDLE_IN_TRANSACTION_S + 1.0, IDLE_IN_TRANSACTION_S + 1.0), rate=300)
FULL = Size(runs=2, freezes=3, pause_s=(IDLE_IN_TRANSACTION_S + 1.0, IDLE_IN_TRANSACTION_S + 15.0), rate=500)


def _matches(aim: str, session: dict[str, Any]) -> bool:
    if aim == "batch":
        return bool(session["batch"])
    return bool(session["lanes"]) and session["state"] == "idle in transaction"


class Freezer:
    """Aims, freezes, measures and resumes one worker of a pair."""

    def __init__(self, stage: Stage, fleet: Fleet, aim: str) -> None:
        self.stage = stage
        self.fleet = fleet
        self.aim = aim
        self.fast = FastProbe(stage.settings, LANES)
        self.probe = Probe(stage.settings)

    def close(self) -> None:
        self.fast.close()
        self.probe.close()

    def aim_and_freeze(self, victim: Worker, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """SIGSTOP the victim at a moment of ``aim``, confirmed after the stop (the transaction is still
        open with its locks); the victim's sessions inside a transaction then."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.fleet.check()
            sessions = self.fast.sessions(victim.app)
            if not any(_matches(self.aim, s) for s in sessions):
                time.sleep(0.002)
                continue
            self.fleet.pause(victim.name)
            time.sleep(0.3)  # a statement the server was running finishes; the client cannot commit
            after = self.fast.sessions(victim.app)
            aimed = {s["pid"] for s in sessions if _matches(self.aim, s)}
            if any(_matches(self.aim, s) and s["pid"] in aimed for s in after):
                return after
            self.fleet.resume(victim.name)  # it committed just before the stop: aim again
        raise CampaignError(f"no moment {self.aim!r} of {victim.name} within {timeout_s:.0f} s")

    def freeze_once(self, victim: Worker, other: Worker, pause_s: float) -> dict[str, Any]:
        failures_before = victim.metric(FAILURES[self.aim])
        records_before = victim.metric(RECORDS)
        sessions = self.aim_and_freeze(victim)
        frozen_at = time.monotonic()
        frozen_pids = {s["pid"] for s in sessions}
        lanes = sorted({lane for s in sessions for lane in s["lanes"]})
        progress: list[float] = []
        last_records = other.metric(RECORDS)
        ended_at: float | None = None
        oldest_outbox = 0.0

        def sample() -> None:
            nonlocal last_records, ended_at, oldest_outbox
            records = other.metric(RECORDS)
            if records > last_records:
                progress.append(time.monotonic())
                last_records = records
            if ended_at is None and not (frozen_pids & self.fast.pids(victim.app)):
                ended_at = time.monotonic()
            oldest_outbox = max(oldest_outbox, self._oldest_outbox_s())

        # frozen for pause_s, and until PostgreSQL has ended every session it had in a transaction
        while time.monotonic() - frozen_at < pause_s or ended_at is None:
            if time.monotonic() - frozen_at > pause_s + 60:
                left = [
                    {k: v for k, v in x.items() if k != "since"}
                    for x in self.fast.sessions(victim.app) + self.fast.all_sessions(victim.app)
                    if x["pid"] in frozen_pids
                ]
                raise CampaignError(
                    f"the frozen sessions {sorted(frozen_pids)} still exist after {pause_s + 60:.0f} s: {left}; "
                    f"at the freeze: {[{k: v for k, v in x.items() if k != 'since'} for x in sessions]}"
                )
            self.fleet.check()
            sample()
            time.sleep(0.2)
        resumed_at = time.monotonic()
        self.fleet.resume(victim.name)
        while not (progress and progress[-1] > resumed_at):
            if time.monotonic() - resumed_at > 90:
                raise CampaignError("the other worker made no progress within 90 s of the resume")
            self.fleet.check()
            sample()
            time.sleep(0.2)
        resumed_failed = eventually(lambda: victim.metric(FAILURES[self.aim]) > failures_before, 60)
        wait_for(lambda: victim.metric(RECORDS) > records_before, 90, "the resumed worker to apply records again")
        marks = [frozen_at, *(p for p in progress if p >= frozen_at)]
        blocked = max(b - a for a, b in itertools.pairwise(marks))
        return {
            "frozen_s": round(resumed_at - frozen_at, 1),
            "locks_held_s": round((ended_at or resumed_at) - frozen_at, 1),
            "other_blocked_s": round(blocked, 1),
            "oldest_outbox_s": round(oldest_outbox, 1),
            "lanes": lanes,
            "in_batch": any(s["batch"] for s in sessions),
            "stale_possible": False,  # every frozen transaction was ended by the server before the resume
            "resumed_round_failed": bool(resumed_failed),
        }

    def _oldest_outbox_s(self) -> float:
        from sqlalchemy import text

        try:
            age = self.probe.conn.execute(
                text("SELECT extract(epoch FROM clock_timestamp() - min(created_at)) FROM outbox")
            ).scalar()
        finally:
            self.probe.conn.rollback()
        return float(age or 0.0)


def run_aim(ctx: Context, aim: str) -> Row:
    size: Size = ctx.size(QUICK, FULL)
    name = f"freeze-{aim}"
    row = Row(name)
    rng = random.Random(ctx.seed)
    per_freeze: list[dict[str, Any]] = []
    for run_no in range(1, size.runs + 1):
        with ctx.stage(row, run_no) as stage:
            seconds = 15 + size.freezes * (size.pause_s[1] + 40)
            lines = spec_stream(ctx.seed + run_no, int(size.rate * seconds))
            fleet = stage.fleet()
            workers = fleet.start_all(("w1", "w2"))
            feed = Feed(stage.settings, numbered(lines), rate=size.rate).start()
            freezer = Freezer(stage, fleet, aim)
            try:
                for w in workers:
                    wait_for(lambda w=w: w.metric(RECORDS) > 0, 60, f"{w.name} to apply records", fleet=fleet)  # type: ignore[misc]
                for n in range(1, size.freezes + 1):
                    victim, other = workers if rng.random() < 0.5 else workers[::-1]
                    pause = rng.uniform(*size.pause_s)
                    say(f"{name} run {run_no}: freeze {n}/{size.freezes}: {victim.name} for {pause:.0f} s+, aimed")
                    figures = freezer.freeze_once(victim, other, pause)
                    per_freeze.append(figures)
                    row.faults[
                        f"SIGSTOP {'in a batch transaction' if aim == 'batch' else 'relay holding lane locks'}"
                    ] += 1
                    say(f"{name} run {run_no}: {figures}")
                ends = feed.stop()
                wait_idle(stage, ends, fleet, timeout_s=300, label=f"{name} run {run_no}: ")
                fleet.stop_all()
            finally:
                freezer.close()
                if not feed.done:
                    feed.stop()
            row.events += feed.sent
            verdict = judge(stage.settings, enumerate(lines[: feed.sent], start=1), AT)
            say(f"{name} run {run_no}: {summary(verdict)}")
            row.add_verdict(verdict)
            row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
    blocked = [f["other_blocked_s"] for f in per_freeze]
    row.check("no stale commit after the resume", all(not f["stale_possible"] for f in per_freeze))
    row.check("the resumed worker's transaction failed", all(f["resumed_round_failed"] for f in per_freeze))
    row.check(f"others blocked <= {BOUND_S:.0f} s", bool(blocked) and max(blocked) <= BOUND_S, timed=True)
    row.figures["frozen"] = f"{min(f['frozen_s'] for f in per_freeze)}-{max(f['frozen_s'] for f in per_freeze)} s"
    row.figures["bound"] = (
        f"{BOUND_S:.0f} s (idle_in_transaction_session_timeout {IDLE_IN_TRANSACTION_S} s + lock_timeout "
        f"{LOCK_S} s; session timeout {SESSION_TIMEOUT_S:.0f} s)"
    )
    row.figures["other worker's longest stall"] = f"{max(blocked)} s" if blocked else "n/a"
    row.figures["frozen sessions' locks held"] = f"{max(f['locks_held_s'] for f in per_freeze)} s max"
    if aim == "relay":
        row.figures["oldest outbox row"] = f"{max(f['oldest_outbox_s'] for f in per_freeze)} s max"
    row.figures["per freeze"] = [
        {k: f[k] for k in ("frozen_s", "locks_held_s", "other_blocked_s", "oldest_outbox_s")} for f in per_freeze
    ]
    return row


SCENARIOS = [
    Scenario(
        "freeze-batch",
        "SIGSTOP a worker inside a batch transaction past its session timeout, resume it",
        lambda ctx: run_aim(ctx, "batch"),
    ),
    Scenario(
        "freeze-relay",
        "SIGSTOP a worker while its relay holds lane locks past its session timeout, resume",
        lambda ctx: run_aim(ctx, "relay"),
    ),
]
