"""Bad messages (tests/campaign/fuzz.py) interleaved with a valid stream, through both input topics,
under two workers. The run is judged twice over:

- every bad message is on the rejected topic, once, with a reason of SPEC section 7, its key, value and
  headers kept exactly (the first 64 KiB of each, with their full sizes): a missing one counts as lost,
  a second rejection of one as duplicated, a byte that differs as altered;
- what the valid stream produced (tallies, statuses and its own rejections) equals ``replay`` of the
  valid stream alone (line numbers as published), and the usual version checks hold.

Bad messages with header names that are not UTF-8 are published by kcat (librdkafka), while the rest
of the stream is being published by aiokafka.
"""

from __future__ import annotations

import asyncio
import base64
import random
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from domain import reasons as R
from domain.engine import decode
from domain.events import Envelope
from session_tally.config import Settings
from tests.campaign.feed import Feed, Msg, numbered
from tests.campaign.fuzz import KCAT_KEY_DELIMITER, KCAT_VALUE_DELIMITER, BadMessages, kcat_batches
from tests.campaign.harness import AT, CampaignError, Context, Scenario, say, spec_stream, wait_idle
from tests.campaign.row import Row
from tests.campaign.verdict import judge, summary

NAME = "bad-input"
CUT = 64 * 1024  # storage/messages.py MAX_ORIGINAL_BYTES


@dataclass(frozen=True)
class Size:
    runs: int
    bad: int  # of which `kcat` through kcat
    valid: int
    kcat: int


QUICK = Size(runs=1, bad=3_000, valid=3_000, kcat=20)
FULL = Size(runs=1, bad=100_000, valid=50_000, kcat=500)


def _fingerprint(topic: str, key: bytes | None, value: bytes | None, size: int | None) -> tuple[Any, ...]:
    return (topic, None if key is None else key[:256], None if value is None else value[:1024], size)


def _raw(doc: dict[str, Any], text: str, name: str) -> bytes | None:
    if doc.get(text) is not None:
        return str(doc[text]).encode("utf-8")
    b64 = doc.get(f"{name}_base64")
    return None if b64 is None else base64.b64decode(b64)


@dataclass
class BadLedger:
    """The bad messages sent, matched against the rejected topic."""

    topics: dict[str, str]  # "admin"/"path" -> topic name
    sent: dict[tuple[Any, ...], list[Msg]] = field(default_factory=dict)
    matched: int = 0
    altered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # of altered ones, for the report

    def add(self, msg: Msg) -> None:
        topic = self.topics.get(msg.topic, msg.topic)
        size = None if msg.value is None else len(msg.value)
        self.sent.setdefault(_fingerprint(topic, msg.key, msg.value, size), []).append(msg)

    @property
    def missing(self) -> int:
        return sum(len(v) for v in self.sent.values())

    def claim(self, doc: dict[str, Any]) -> bool:
        """Is this rejection one of ours? (Then it is checked here and left out of the comparison.)"""
        key, value = _raw(doc, "key", "key"), _raw(doc, "original", "original")
        found = self.sent.get(_fingerprint(doc["source"]["topic"], key, value, doc.get("original_bytes")))
        if not found:
            return False
        # identical bodies under one key ("[]", the same cut): the one whose headers came back, if any
        msg = found.pop(next((i for i, m in enumerate(found) if _headers_kept(m, doc)), len(found) - 1))
        self.matched += 1
        self.reasons[doc["reason"]] += 1
        kept = {"value": _kept(msg.value, value), "key": _kept(msg.key, key), "headers": _headers_kept(msg, doc)}
        if not all(kept.values()):
            self.altered += 1
            if len(self.examples) < 5:
                self.examples.append(f"{kept}: sent key {msg.key!r:.80} headers {msg.headers!r:.200}; got {doc!r:.600}")
        return True


def _kept(sent: bytes | None, got: bytes | None) -> bool:
    if sent is None or got is None:
        return sent is got
    return sent.startswith(got) and len(got) >= min(len(sent), CUT) - 3


def _headers_kept(msg: Msg, doc: dict[str, Any]) -> bool:
    sent = [(k.encode("utf-8", "surrogateescape"), v) for k, v in msg.headers]
    if doc["headers_truncated"]:
        return bool(doc["headers_bytes"] == sum(len(k) + len(v or b"") for k, v in sent))
    if doc.get("headers_base64") is not None:
        got = [(base64.b64decode(k), None if v is None else base64.b64decode(v)) for k, v in doc["headers_base64"]]
    else:
        got = [(k.encode("utf-8"), None if v is None else v.encode("utf-8")) for k, v in doc["headers"]]
    return got == sent


def build(ctx: Context, size: Size, settings: Settings, run_no: int) -> tuple[list[Msg], list[tuple[int, bytes]], Any]:
    """The interleaved stream: every message, the valid ones with their line numbers, the kcat batches."""
    seed = ctx.seed + run_no
    valid = spec_stream(seed, size.valid)
    templates = [raw for raw in valid if isinstance(decode(raw)[1], Envelope)]
    t = settings.topics
    bad = BadMessages(seed, templates, (t.admin_events, t.path_events))
    rng = random.Random(seed)
    slots = [True] * (size.bad - size.kcat) + [False] * size.valid
    rng.shuffle(slots)
    msgs: list[Msg] = []
    valid_lines: list[tuple[int, bytes]] = []
    kinds: Counter[str] = Counter()
    it = iter(valid)
    for line, is_bad in enumerate(slots, start=1):
        if is_bad:
            body, wrapper, msg = bad.make(line)
            kinds[body] += 1
            kinds[f"{wrapper} (wrapper)"] += 1
            msgs.append(msg)
        else:
            raw = next(it)
            valid_lines.append((line, raw))
            msgs.extend(numbered([raw], first=line))
    batches = kcat_batches(bad, size.kcat)
    kinds["header name not UTF-8 (kcat)"] += size.kcat
    return msgs, valid_lines, (batches, kinds)


def kcat_publish(settings: Settings, batches: list[tuple[list[bytes], list[Msg]]]) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        raise CampaignError("kcat is not installed (Debian: apt-get install kcat; .ci/run installs it)")
    for header_args, msgs in batches:
        for topic in sorted({m.topic for m in msgs}):
            body = b"".join(
                (m.key or b"") + KCAT_KEY_DELIMITER + (m.value or b"") + KCAT_VALUE_DELIMITER
                for m in msgs
                if m.topic == topic
            )
            args = [kcat, "-P", "-b", settings.kafka_bootstrap_servers, "-t", topic, "-K", "\\x1f", "-D", "\\x1e"]
            args += ["-X", "message.timeout.ms=60000", "-X", "enable.idempotence=true"]
            done = subprocess.run([*args, *header_args], input=body, capture_output=True, timeout=120, check=False)
            if done.returncode != 0 or b"failed" in done.stderr.lower():
                raise CampaignError(f"kcat failed: {done.stderr.decode(errors='replace')[-500:]}")


async def input_ends(settings: Settings) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from session_tally.snapshot import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in settings.topics.inputs
            for p in await topic_partitions(settings.kafka_bootstrap_servers, t)
        ]
        return {f"{tp.topic}:{tp.partition}": o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def run(ctx: Context) -> Row:
    size: Size = ctx.size(QUICK, FULL)
    row = Row(NAME)
    for run_no in range(1, size.runs + 1):
        with ctx.stage(row, run_no) as stage:
            settings = stage.settings
            msgs, valid_lines, (batches, kinds) = build(ctx, size, settings, run_no)
            ledger = BadLedger({"admin": settings.topics.admin_events, "path": settings.topics.path_events})
            for msg in msgs:
                if msg.topic not in ("admin", "path"):
                    ledger.add(msg)
            for _args, batch in batches:
                for msg in batch:
                    ledger.add(msg)
            row.faults.update(kinds)
            row.events += len(msgs) + size.kcat
            fleet = stage.fleet()
            fleet.start_all(("w1", "w2"))
            say(f"{NAME} run {run_no}: {size.bad:,} bad messages among {size.valid:,} valid ones, two workers")
            feed = Feed(settings, msgs).start()
            kcat_publish(settings, batches)
            feed.join()
            ends = asyncio.run(input_ends(settings))
            took = wait_idle(stage, ends, fleet, timeout_s=1800, label=f"{NAME} run {run_no}: ")
            fleet.stop_all()
            verdict = judge(settings, valid_lines, AT, claim=ledger.claim)
            verdict.lost += ledger.missing
            verdict.details["bad"] = {
                "sent": size.bad,
                "rejected": ledger.matched,
                "missing": ledger.missing,
                "altered": ledger.altered,
                "reasons": dict(ledger.reasons),
                "altered_examples": ledger.examples,
            }
            say(f"{NAME} run {run_no}: {summary(verdict)}; bad: {verdict.details['bad']}")
            row.add_verdict(verdict)
            row.check("every bad message rejected once", ledger.missing == 0 and ledger.matched == size.bad)
            row.check("bad messages kept byte for byte", ledger.altered == 0)
            row.check("every reason is one of SPEC section 7", set(ledger.reasons) <= set(R.ALL))
            row.check("workers exit 0 on SIGTERM", not fleet.unclean_exits, why=fleet.unclean_exits)
            row.figures["bad rejected"] = (
                f"{ledger.matched:,}/{size.bad:,} ({', '.join(f'{k} {v:,}' for k, v in ledger.reasons.most_common())})"
            )
            row.figures["idle after start"] = f"{took:.0f} s for {len(msgs) + size.kcat:,} messages"
    return row


SCENARIO = Scenario(
    NAME, "random, truncated, mutated, NUL, oversized, odd-keyed and odd-headed messages in a valid stream", run
)
