"""Crash safety (docs/adr/0001-exactly-once-effects.md): a worker is SIGKILLed again and again while it
works through a backlog, restarted each time, then allowed to finish; what the pipeline published must
equal `replay` of the stream, no tally or status version may go backwards (a lower version only ever
re-publishes an earlier message byte for byte), and no (path, version) or (meeting, version) pair may
carry two different contents.

The worker has no crash hooks (production code is not instrumented), so the kills are aimed by
watching the worker from outside, and each kill is classified by what is observed around it:

- ``in_batch_transaction``: a session of the worker (found by its PostgreSQL ``application_name``) held
  a lock on ``consumer_offsets`` (only an input-batch transaction takes one) just before the kill, and
  the applied offsets did not move: the kill landed before the DB commit, the transaction rolled back,
  and the whole batch must be done again (it is: equality with replay). Aimed: kill as soon as such a
  transaction is seen.
- ``db_ahead_of_kafka``: after the kill, for a partition this incarnation advanced, PostgreSQL's applied
  offset is ahead of the offset committed in Kafka (by the worker's consumer groups): the kill landed
  after the DB commit and before the Kafka commit (``ack``). The next incarnation starts every partition
  at PostgreSQL's applied offset, not at Kafka's committed one (consumers/subscriber.py
  ``seek_to_applied``): once it has applied batches, its ``/metrics`` count no record read twice.
  Aimed: kill on the NOTIFY a batch transaction sends at commit (filtered by the sender's pid); this
  lands before the ack about 2 times in 5, so the aim is retried.
- ``relay_publishing``: the relay's transaction held outbox lane locks with its rows selected and not
  yet deleted, AND, checked after the kill, rows of those lanes still in the outbox are already in an
  output topic byte for byte: published, not deleted. The next incarnation publishes them again (seen
  as exact repeats in the output topics, asserted > 0). Aimed: kill when such a relay transaction is
  seen while the output topics' end offsets grow.

Kills are either aimed at one of these points or at a random moment of an incarnation's work (a delay
after its first applied batch, from a seeded RNG). An aimed kill is retried (bounded) until its point
was observed, and the test asserts that every point was hit at least once.

Waiting events use a long park timeout while the worker is killed and restarted, and a finisher with a
short one at the end of the input (see test_pipeline_equivalence for why).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from domain.replay import replay
from domain.timefmt import parse_instant
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from session_tally.traffic import TrafficConfig, generate
from storage import outbox
from storage.messages import LANES
from storage.outbox import channel as notify_channel
from tests.integration.pipeline_helpers import (
    EndOffsets,
    FastProbe,
    Probe,
    applied_fraction,
    assert_same_document,
    check_rejected,
    check_versions,
    comparable,
    kafka_committed,
    kill_worker,
    metric_value,
    publish_lines,
    read_raw_topic,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 20000
STREAM = TrafficConfig(
    seed=4242, order_independent=True, bad_fraction=0.03, duplicate_fraction=0.02, early_fraction=0.02
)
AT = "2026-03-01T00:00:00Z"
BATCH = 100
PARK_WHILE_RUNNING_S = 120.0  # see test_pipeline_equivalence: nothing expires while the worker is down
PARK_FINISH_S = 0.5
SEED = 20260301
RANDOM_KILLS = 6
AIMED = ("in_batch_transaction", "db_ahead_of_kafka", "relay_publishing")
AIM_ATTEMPTS = 12  # a kill between the DB commit and the Kafka commit lands about 2 times in 5


@functools.cache
def stream() -> list[bytes]:
    return [r.value for r in generate(STREAM, EVENTS)]


def _batch_open(obs: dict[str, Any]) -> bool:
    return any(x["batch"] for x in obs["sessions"])


def _relay_sending(obs: dict[str, Any]) -> list[dict[str, Any]]:
    """Relay sessions that selected a lane's rows (lane lock held) and have not deleted them yet: their
    rows are being sent to Kafka."""
    return [
        x
        for x in obs["sessions"]
        if x["lanes"] and x["state"] == "idle in transaction" and x["query"].startswith(outbox.READ_ROWS[:40])
    ]


class CrashRig:
    """One worker (static membership, so a restart takes its partitions back at once) run, killed and
    restarted; probes on its schema and its sessions; what each kill hit."""

    def __init__(self, settings: Settings, tmp_path: Path, ends: dict[str, int]) -> None:
        self.settings = settings
        self.ends = ends
        self.tmp_path = tmp_path
        self.log = tmp_path / "worker-0.log"
        self.app = "st-crash-" + settings.db_schema
        self.probe = Probe(settings)
        # a batch transaction NOTIFYs this channel (to wake the relay) when it commits outbox rows
        self.fast = FastProbe(settings, LANES, channel=notify_channel(settings.db_schema))
        self.ends_probe = EndOffsets(settings.kafka_bootstrap_servers, settings.topics.outputs)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills: list[dict[str, Any]] = []
        self.db_at_start: dict[str, int] = {}

    def start(
        self, park_timeout_s: float = PARK_WHILE_RUNNING_S, check_redelivery: bool = False
    ) -> subprocess.Popen[bytes]:
        self.db_at_start = self.fast.offsets()
        self.starts += 1
        self.log = self.tmp_path / f"worker-{self.starts}.log"  # one per incarnation
        self.proc = start_worker_ex(
            self.settings,
            self.log,
            clock=AT,
            park_timeout_s=park_timeout_s,
            batch_size=BATCH,
            instance_id="crash-worker",
            db_application_name=self.app,
            http_port=0,
        )
        # no waiting for the ready line: under a backlog the worker applies batches before it prints it
        if check_redelivery:
            assert "db_ahead_of_kafka" in self.kills[-1]["hit"], self.kills[-1]
            http = ready_info(self.log, self.proc, timeout_s=60)["http"]
            # Kafka's committed offsets are behind PostgreSQL's: this incarnation must start at PostgreSQL's,
            # so that what was applied but not acknowledged is not read again
            at_start = self.db_at_start
            wait_until(
                lambda: self.fast.offsets() != at_start,
                30,
                "the next incarnation to apply batches",
                interval_s=0.1,
                procs=[self.proc],
            )
            self.kills[-1]["redelivered_next"] = metric_value(http, "session_tally_redelivered_records_total")
        return self.proc

    def observe(self) -> dict[str, Any]:
        return {"offsets": self.fast.offsets(), "sessions": self.fast.sessions(self.app)}

    def kill(self, aim: str, observed: dict[str, Any]) -> dict[str, Any]:
        """SIGKILL now; then classify with what was observed just before and what is left after."""
        assert self.proc is not None and self.proc.poll() is None, "the worker died on its own:\n" + self.tail()
        kill_worker(self.proc)
        after = self.fast.offsets()
        committed = asyncio.run(kafka_committed(self.settings.kafka_bootstrap_servers, self.settings.group_id))
        hit = set()
        if _batch_open(observed) and after == observed["offsets"]:
            hit.add("in_batch_transaction")
        # a partition this incarnation advanced in PostgreSQL whose Kafka commit is behind: the last
        # batch committed in PostgreSQL was not acknowledged to Kafka
        if any(committed.get(k, 0) < v and v > self.db_at_start.get(k, 0) for k, v in after.items()):
            hit.add("db_ahead_of_kafka")
        sending = _relay_sending(observed)
        if sending and self._published_not_deleted({lane for x in sending for lane in x["lanes"]}):
            hit.add("relay_publishing")
        record = {
            "aim": aim,
            "hit": sorted(hit),
            "applied": round(applied_fraction(after, self.ends), 3),
            "outbox": self.probe.state()["outbox"],
        }
        self.kills.append(record)
        return record

    def _published_not_deleted(self, lanes: set[int]) -> bool:
        """Are rows of these lanes still in the outbox AND already in an output topic (byte for byte)?"""
        remaining = {v for lane in lanes for v in self.fast.outbox_values(lane)}
        if not remaining:
            return False
        for topic in self.settings.topics.outputs:
            records = asyncio.run(read_raw_topic(self.settings.kafka_bootstrap_servers, topic))
            if any(r["value"] in remaining for r in records):
                return True
        return False

    def aimed_kill(self, aim: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """Watch for the moment of ``aim`` as fast as the probes allow; kill the worker then."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        start = self.fast.offsets()
        seen: dict[tuple[int, Any], int] = {}
        ours = self.fast.pids(self.app)
        while True:
            assert self.proc.poll() is None, "the worker died on its own:\n" + self.tail()
            assert time.monotonic() < deadline, f"no moment to kill for {aim} within {timeout_s}s; kills: {self.kills}"
            if aim == "db_ahead_of_kafka":
                # a transaction of this worker just committed outbox rows (it NOTIFYs the relay at commit):
                # with a frozen clock and a long park timeout that is an input batch, whose ack comes next
                pid = self.fast.wait_notify(0.05)
                if pid is None:
                    ours = self.fast.pids(self.app)  # the worker's pool may have opened connections
                    continue
                if pid in ours or self.fast.application_of(pid) == self.app:
                    return self.kill(aim, {"offsets": start, "sessions": []})
                continue  # another schema's worker on the same database
            if aim == "relay_publishing":
                # kill while the relay's round is between "some of its rows reached Kafka" and its DELETE:
                # a session seen sending, still sending after the output topics grew
                end_total = self.ends_probe.total()
                observed = self.observe()
                for x in _relay_sending(observed):
                    first = seen.setdefault((x["pid"], x["since"]), end_total)
                    if end_total > first:
                        return self.kill(aim, observed)
                continue
            observed = self.observe()
            if _batch_open(observed):
                return self.kill(aim, observed)

    def random_kill(self, delay_s: float) -> dict[str, Any]:
        """Kill ``delay_s`` after this incarnation applied its first batch (a random moment of its work)."""
        assert self.proc is not None
        wait_until(
            lambda: self.fast.offsets() != self.db_at_start,
            60,
            "the first batch applied",
            interval_s=0.005,
            procs=[self.proc],
        )
        until = time.monotonic() + delay_s
        wait_until(
            lambda: time.monotonic() >= until, delay_s + 5, "the random moment", interval_s=0.005, procs=[self.proc]
        )
        return self.kill("random", self.observe())

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.probe.close()
        self.fast.close()
        self.ends_probe.close()


def test_sigkill_at_random_and_aimed_moments_equals_replay(settings: Settings, tmp_path: Path) -> None:
    lines = stream()
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, lines))  # one big backlog
    rng = random.Random(SEED)
    rig = CrashRig(settings, tmp_path, ends)
    try:
        hits: Counter[str] = Counter()
        # random kills and two aims in a seeded order; the aim between DB commit and Kafka commit last,
        # so that the incarnation after it (which must not read those records again) is the one that
        # finishes the input
        plan = ["in_batch_transaction", "relay_publishing"] + ["random"] * RANDOM_KILLS
        rng.shuffle(plan)
        plan.append("db_ahead_of_kafka")
        for aim in plan:
            for _ in range(1 if aim == "random" else AIM_ATTEMPTS):
                rig.start()
                record = rig.random_kill(rng.uniform(0.0, 0.5)) if aim == "random" else rig.aimed_kill(aim)
                hits.update(record["hit"])
                assert record["applied"] < 1.0, f"the backlog ran out before kill {len(rig.kills)}: {rig.kills}"
                if aim == "random" or aim in record["hit"]:
                    break
        print("kills:", json.dumps(rig.kills, indent=None))
        missing = [a for a in AIMED if hits[a] == 0]
        assert not missing, f"crash points never hit: {missing}; kills: {rig.kills}"

        # let it finish (the last kill left PostgreSQL ahead of Kafka: the next incarnation starts at
        # PostgreSQL's offsets and reads nothing twice), then the end of the input as in
        # test_pipeline_equivalence
        final = rig.start(check_redelivery=True)
        assert rig.kills[-1].get("redelivered_next") == 0, rig.kills[-1]
        wait_until(
            lambda: (s := rig.probe.state())["outbox"] == 0 and applied_fraction(s["offsets"], ends) == 1.0,
            90,
            "every input offset applied and the outbox empty",
            interval_s=0.2,
            procs=[final],
        )
        assert stop_worker(final) == 0, rig.tail()
        finisher = rig.start(park_timeout_s=PARK_FINISH_S)
        wait_idle(settings, ends, timeout_s=45, procs=[finisher])
        assert stop_worker(finisher) == 0, rig.tail()
    finally:
        rig.close()

    bootstrap = settings.kafka_bootstrap_servers
    tallies = asyncio.run(read_raw_topic(bootstrap, settings.topics.path_tallies))
    statuses = asyncio.run(read_raw_topic(bootstrap, settings.topics.meeting_statuses))
    rejected = asyncio.run(read_raw_topic(bootstrap, settings.topics.rejected))
    tally_counts = check_versions(tallies, "path_id")
    rejected_counts = check_rejected(rejected)
    status_counts = check_versions(statuses, "meeting_id")
    print("tallies:", tally_counts, "statuses:", status_counts, "rejected:", rejected_counts)
    # the relay was killed with rows sent and not deleted: they went out again, byte for byte
    repeats = tally_counts["repeats"] + status_counts["repeats"] + rejected_counts["repeats"]
    assert repeats > 0, (tally_counts, status_counts, rejected_counts)

    snapshot = asyncio.run(read_snapshot(bootstrap, settings.topics))
    assert_same_document(comparable(snapshot), comparable(replay(lines, parse_instant(AT))))
