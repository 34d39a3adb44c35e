"""What a run ended with, measured rather than assumed: the three output topics read raw from their
beginning, the ``processed_events`` table, and ``replay`` of the same input at the same instant.

- **lost**: input lines that are neither remembered as processed (their event id is in
  ``processed_events``: applied, skipped, parked or a duplicate) nor on the rejected topic; plus tallies,
  meeting statuses and rejections that replay has and the topics do not;
- **duplicated**: an (entity, version) published with two different contents; a new content at a
  version below one already published (a version going backwards); an entity whose *last* record is not
  its highest version (a consumer that keeps the last message, or a compacted topic, which keeps the
  last record of a key, would end on an older state); an input rejected twice with different contents;
  rejections the topics have and replay does not;
- **repeats**: byte-identical re-publications of an (entity, version) (a relay that published rows and
  could not delete them sends them again). Those sent again after a higher version of the same entity
  (``repeats_out_of_order``: the relay re-sends the rest of a lane in order, so the entity's highest
  version follows again) are harmless to consumers that keep the highest version, as the contract asks;
  they are reported, and the last record of every entity must still be its highest version;
- **equal**: the document built from the topics (latest version per path and meeting, the rejections)
  equals replay's, without what legitimately differs (tally version and as_of).

Records are streamed partition by partition; per entity only the highest version, an 8-byte digest
per (entity, version) and the final document are kept, so a 30-minute soak's millions of outputs fit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.engine import decode, dedup_id
from domain.replay import Replay
from domain.timefmt import parse_instant
from session_tally.config import Settings
from session_tally.snapshot import MEETING_FIELDS, line_of
from storage.rows import event_key

_WELL_FORMED_ID = re.compile(rb'^\{"event_id":"([A-Za-z0-9._:-]{1,128})"')
_WAITING = ("unknown_program", "unknown_meeting")


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=8).digest()


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


async def scan_topic(bootstrap: str, topic: str, each: Callable[[Any], None], timeout_s: float = 600.0) -> int:
    """Call ``each(record)`` for every record of ``topic`` up to its end offsets now, partition by
    partition in offset order; returns how many."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from consumers.tolerant_records import install
    from session_tally.snapshot import topic_partitions

    install()  # header keys that are not UTF-8 are read too
    count = 0
    deadline = time.monotonic() + timeout_s
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        for partition in await topic_partitions(bootstrap, topic, 60):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} took longer than {timeout_s:.0f} s")
                for record in (await consumer.getmany(tp, timeout_ms=1000, max_records=20_000)).get(tp, []):
                    if record.offset < end:
                        each(record)
                        count += 1
    finally:
        await consumer.stop()
    return count


@dataclass
class VersionLedger:
    """The raw records of the tallies (``entity='path_id'``) or statuses (``'meeting_id'``) topic."""

    entity: str
    highest: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)  # the version of each entity's last record
    digests: dict[tuple[str, int], bytes] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)  # entity -> canonical document of its highest version
    messages: int = 0
    repeats: int = 0  # an (entity, version) again with the same bytes
    out_of_order: int = 0  # of the repeats, those below the entity's highest version (a re-sent run)
    conflicts: int = 0  # an (entity, version) again with other bytes
    backwards: int = 0  # a version never seen, below the highest already published
    misrouted: int = 0  # keyed other than by its path
    examples: list[str] = field(default_factory=list)  # of conflicts and versions going backwards
    where: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # entity -> (version, partition, offset)

    def add(self, record: Any) -> None:
        self.messages += 1
        doc = json.loads(record.value)
        key, version = doc[self.entity], doc["version"]
        if record.key != doc["path_id"].encode():
            self.misrouted += 1
        digest = _digest(record.value)
        top = self.highest.get(key, 0)
        previous = self.digests.get((key, version))
        self.last[key] = version
        if previous is not None:
            if previous == digest:
                self.repeats += 1
                self.out_of_order += int(version < top)
            else:
                self.conflicts += 1
                self._example("two contents", key, version, record)
            return
        self.digests[(key, version)] = digest
        if version < top:
            self.backwards += 1
            self._example("a new content below the highest version", key, version, record)
            return
        self.highest[key] = version
        self.where[key] = (version, record.partition, record.offset)
        self.latest[key] = _canonical(self._comparable(doc))

    @property
    def stale_last(self) -> list[str]:
        """Entities whose last record is not their highest version: a consumer that keeps the last
        message (a compacted topic keeps the last record of a key) would end on an older state."""
        return [k for k, v in self.last.items() if v < self.highest.get(k, 0)]

    def _example(self, what: str, key: str, version: int, record: Any) -> None:
        if len(self.examples) < 5:
            top = self.where.get(key)
            self.examples.append(
                f"{self.entity} {key}: {what}: version {version} at {record.partition}@{record.offset} "
                f"(timestamp {record.timestamp}) after version {top[0]} at {top[1]}@{top[2]}"
                if top
                else f"{self.entity} {key}: {what}: version {version} at {record.partition}@{record.offset}"
            )

    def _comparable(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.entity == "meeting_id":
            return {f: doc[f] for f in MEETING_FIELDS}
        return {k: v for k, v in doc.items() if k not in ("schema_version", "version", "as_of")}


@dataclass
class RejectedLedger:
    """The raw records of the rejected topic. ``claim(doc)`` (optional) takes a rejection out of the
    comparison with replay (the bad-input scenario's own messages, checked by it)."""

    claim: Callable[[dict[str, Any]], bool] | None = None
    by_source: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    entries: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    lines: set[int] = field(default_factory=set)
    messages: int = 0
    repeats: int = 0
    conflicts: int = 0
    claimed: int = 0
    examples: list[str] = field(default_factory=list)  # of inputs rejected with two contents

    def add(self, record: Any) -> None:
        self.messages += 1
        doc = json.loads(record.value)
        src = doc["source"]
        where = (src["topic"], src["partition"], src["offset"])
        digest = _digest(record.value)
        previous = self.by_source.get(where)
        if previous is not None:
            if previous == digest:
                self.repeats += 1
            else:
                self.conflicts += 1
                if len(self.examples) < 5:
                    self.examples.append(f"input {where} rejected twice, the second time: {record.value[:300]!r}")
            return
        self.by_source[where] = digest
        if self.claim is not None and self.claim(doc):
            self.claimed += 1
            return
        line = line_of(doc.get("headers"))
        if line is not None:
            self.lines.add(line)
        self.entries[(line, doc.get("event_id"), doc["reason"])] += 1


@dataclass
class Verdict:
    equal: bool
    lost: int
    duplicated: int
    repeats: int
    details: dict[str, Any]


async def read_outputs(settings: Settings, claim: Callable[[dict[str, Any]], bool] | None = None) -> tuple[Any, ...]:
    bootstrap, t = settings.kafka_bootstrap_servers, settings.topics
    tallies, statuses, rejected = VersionLedger("path_id"), VersionLedger("meeting_id"), RejectedLedger(claim)
    await scan_topic(bootstrap, t.path_tallies, tallies.add)
    await scan_topic(bootstrap, t.meeting_statuses, statuses.add)
    await scan_topic(bootstrap, t.rejected, rejected.add)
    return tallies, statuses, rejected


def processed_keys(settings: Settings) -> set[str]:
    """Every ``event_key`` of ``processed_events`` (streamed)."""
    from sqlalchemy import text

    from storage.db import sync_engine

    engine = sync_engine(settings.database_url, settings.db_schema)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, max_row_buffer=50_000).execute(
                text("SELECT event_key FROM processed_events")
            )
            return {row[0] for row in result}
    finally:
        engine.dispose()


def _input_key(raw: bytes) -> str | None:
    """The ``processed_events`` key a line is remembered under, None when it has no well-formed id."""
    match = _WELL_FORMED_ID.match(raw)
    if match:
        return event_key(match.group(1).decode())
    event_id, decoded = decode(raw)
    if event_id is None and isinstance(decoded, dict):
        event_id = decoded.get("event_id")
    key = dedup_id(event_id, decoded)
    return None if key is None else event_key(key)


def _compare(got: dict[str, str], want: dict[str, str]) -> tuple[int, int, int, str | None]:
    """(missing, extra, differing, first difference) between two entity -> canonical document maps."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    differ = [k for k in want if k in got and got[k] != want[k]]
    first = None
    if differ:
        first = f"{differ[0]}: got {got[differ[0]]} want {want[differ[0]]}"
    elif missing or extra:
        first = f"missing {missing[:3]}, unexpected {extra[:3]}"
    return len(missing), len(extra), len(differ), first


def judge(
    settings: Settings,
    lines: Iterable[tuple[int, bytes]],
    at: str,
    claim: Callable[[dict[str, Any]], bool] | None = None,
) -> Verdict:
    """The verdict of a run whose input was ``lines`` ((line number, bytes) in published order; the
    numbers are the line headers the messages carried)."""
    tallies, statuses, rejected = asyncio.run(read_outputs(settings, claim))
    processed = processed_keys(settings)
    replay = Replay()
    lost_inputs = inputs = 0
    for number, raw in lines:
        if not raw.strip():
            continue
        inputs += 1
        replay.feed(raw, number)
        if number in rejected.lines:
            continue
        key = _input_key(raw)
        if key is None or key not in processed:
            lost_inputs += 1
    expected = replay.document(parse_instant(at))
    want_tallies = {
        t["path_id"]: _canonical({k: v for k, v in t.items() if k not in ("version", "as_of")})
        for t in expected["tallies"]
    }
    want_meetings = {m["meeting_id"]: _canonical(m) for m in expected["meetings"]}
    want_rejected = Counter((r["line"], r["event_id"], r["reason"]) for r in expected["rejected"])
    t_missing, t_extra, t_differ, t_first = _compare(tallies.latest, want_tallies)
    m_missing, m_extra, m_differ, m_first = _compare(statuses.latest, want_meetings)
    r_missing = sum((want_rejected - rejected.entries).values())
    r_extra = sum((rejected.entries - want_rejected).values())
    conflicts = tallies.conflicts + statuses.conflicts + rejected.conflicts
    backwards = tallies.backwards + statuses.backwards
    stale = tallies.stale_last + statuses.stale_last
    lost = lost_inputs + t_missing + m_missing + r_missing
    duplicated = conflicts + backwards + len(stale) + r_extra
    equal = not (t_missing or t_extra or t_differ or m_missing or m_extra or m_differ or r_missing or r_extra)
    details = {
        "inputs": inputs,
        "lost_inputs": lost_inputs,
        "outputs": {"tallies": tallies.messages, "statuses": statuses.messages, "rejected": rejected.messages},
        "expected": {
            "tallies": len(want_tallies),
            "meetings": len(want_meetings),
            "rejected": len(expected["rejected"]),
        },
        "missing": {"tallies": t_missing, "meetings": m_missing, "rejected": r_missing},
        "unexpected": {"tallies": t_extra, "meetings": m_extra, "rejected": r_extra},
        "differing": {"tallies": t_differ, "meetings": m_differ},
        "conflicting_versions": conflicts,
        "new_content_below_highest": backwards,
        "last_record_not_highest": len(stale),
        "last_record_not_highest_examples": stale[:5],
        "repeats_out_of_order": tallies.out_of_order + statuses.out_of_order,
        "repeats": {"tallies": tallies.repeats, "statuses": statuses.repeats, "rejected": rejected.repeats},
        "misrouted_outputs": tallies.misrouted + statuses.misrouted,
        "version_examples": tallies.examples + statuses.examples + rejected.examples,
        "claimed_rejections": rejected.claimed,
        "first_difference": t_first or m_first or _first_rejection_difference(rejected.entries, want_rejected),
    }
    repeats = tallies.repeats + statuses.repeats + rejected.repeats
    return Verdict(equal, lost, duplicated, repeats, details)


def _first_rejection_difference(got: Counter[tuple[Any, ...]], want: Counter[tuple[Any, ...]]) -> str | None:
    if got == want:
        return None
    only_replay, only_topics = sorted(want - got, key=str)[:3], sorted(got - want, key=str)[:3]
    return f"rejections only in replay {only_replay}, only in the topics {only_topics}"


def summary(verdict: Verdict) -> str:
    d = verdict.details
    text = (
        f"{'equal to replay' if verdict.equal else 'DIFFERS from replay'}; lost {verdict.lost}, duplicated "
        f"{verdict.duplicated}, repeats {verdict.repeats} ({d['outputs']['tallies']:,} tallies, "
        f"{d['outputs']['statuses']:,} statuses, {d['outputs']['rejected']:,} rejected published)"
    )
    if d["first_difference"]:
        text += f"; first difference: {d['first_difference'][:300]}"
    return text
