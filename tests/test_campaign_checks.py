"""The fault campaign's own logic, without services: how the verdict classifies what a topic holds
(tests/campaign/verdict.py) and that every bad message of the fuzzer is rejected on its own
(tests/campaign/fuzz.py)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import NamedTuple

from domain.engine import decode
from domain.events import ID_PATTERN, Envelope
from domain.replay import replay
from domain.timefmt import parse_instant
from tests.campaign.fuzz import BODY_WEIGHTS, BadMessages, kcat_batches
from tests.campaign.harness import AT, spec_stream
from tests.campaign.verdict import VersionLedger


class Rec(NamedTuple):
    key: bytes
    value: bytes
    partition: int = 0
    offset: int = 0
    timestamp: int = 0


def tally(version: int, used: int = 0) -> Rec:
    doc = {"path_id": "p1", "version": version, "used_minutes": used, "as_of": "2026-03-01T00:00:00Z"}
    return Rec(b"p1", json.dumps(doc).encode(), offset=version)


def ledger(*records: Rec) -> VersionLedger:
    out = VersionLedger("path_id")
    for r in records:
        out.add(r)
    return out


def test_repeats_in_order_are_harmless() -> None:
    seen = ledger(tally(1), tally(2), tally(2))
    assert (seen.repeats, seen.out_of_order, seen.conflicts, seen.backwards, seen.stale_last) == (1, 0, 0, 0, [])


def test_a_re_sent_run_is_out_of_order_but_ends_on_the_highest_version() -> None:
    seen = ledger(tally(1), tally(2), tally(1), tally(2))
    assert (seen.repeats, seen.out_of_order, seen.stale_last) == (2, 1, [])


def test_a_stale_last_record_is_caught() -> None:
    assert ledger(tally(1), tally(2), tally(1)).stale_last == ["p1"]


def test_two_contents_for_one_version_and_new_content_below_the_highest() -> None:
    assert ledger(tally(1, used=30), tally(1, used=60)).conflicts == 1
    assert ledger(tally(2), tally(1)).backwards == 1


def test_every_bad_message_is_rejected_on_its_own_and_every_kind_is_made() -> None:
    valid = spec_stream(7, 2000)
    bad = BadMessages(7, [v for v in valid if isinstance(decode(v)[1], Envelope)], ("admin", "path"))
    kinds: Counter[str] = Counter()
    values = []
    for line in range(1, 1501):
        body, wrapper, msg = bad.make(line)
        kinds[body] += 1
        kinds[wrapper] += 1
        assert msg.value is not None
        values.append(msg.value)
    values += [m.value for _args, batch in kcat_batches(bad, 30) for m in batch if m.value is not None]
    doc = replay(values, parse_instant(AT))
    assert len(doc["rejected"]) == len(values), Counter(r["reason"] for r in doc["rejected"])
    assert doc["tallies"] == [] and doc["meetings"] == []
    assert set(BODY_WEIGHTS) - {"over 64 KiB"} <= set(kinds), kinds
    # a well-formed id is remembered even when its message is rejected: no two bad messages may share one
    ids = [r["event_id"] for r in doc["rejected"] if r["event_id"] and re.fullmatch(ID_PATTERN, r["event_id"])]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
