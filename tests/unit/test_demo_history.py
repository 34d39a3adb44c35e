"""The demo history is accepted whole by the pipeline's engine and shows what the demo promises."""

from __future__ import annotations

import json
from collections import Counter

from domain.replay import replay
from domain.timefmt import DAY, format_instant, parse_instant
from session_tally.demo_history import ORG, PATHS, history

NOW = parse_instant("2026-03-04T09:30:00Z")


def test_replay_of_the_history_rejects_nothing_and_shows_every_kind_of_figure() -> None:
    lines = history(NOW)
    doc = replay(lines, NOW)
    assert doc["rejected"] == []
    tallies = {t["path_id"]: t for t in doc["tallies"]}
    assert set(tallies) == set(PATHS)  # the program with verification off has no tally
    statuses: Counter[str] = Counter()
    for t in tallies.values():
        statuses.update({k: v for k, v in t["meetings_by_status"].items() if v})
    for status in ("confirmed", "auto_confirmed", "did_not_occur", "late_canceled", "late_canceled_pending",
                   "late_cancel_waived", "unconfirmed", "upcoming", "canceled", "rescheduled"):  # fmt: skip
        assert statuses[status] > 0, status
    assert all(t["used_minutes"] > 0 for t in tallies.values())
    assert tallies["path-ada"]["authorized_source"] == "path" and tallies["path-ada"]["remaining_hours"] < 0
    assert tallies["path-grace"]["authorized_hours"] == 24  # the support desk raised the program's hours
    assert tallies["path-hopper"]["authorized_hours"] is None  # not applicable
    assert any(m["disputed"] for m in doc["meetings"])  # a dispute stays open for the admin
    ada = [m for m in doc["meetings"] if m["path_id"] == "path-ada"]
    assert any(m["status"] == "unconfirmed" for m in ada)  # "Did this meeting occur?" for pat


def test_the_history_spans_months_up_to_now() -> None:
    lines = history(NOW)
    docs = [json.loads(line) for line in lines]
    times = [parse_instant(d["occurred_at"]) for d in docs]
    assert times == sorted(times) and max(times) <= NOW and NOW - min(times) > 90 * DAY
    assert {d["org_id"] for d in docs} == {ORG}
    assert len({d["event_id"] for d in docs}) == len(docs)
    starts = [d["data"]["start"] for d in docs if d["type"] == "meeting.scheduled"]
    assert any(format_instant(NOW) < s < format_instant(NOW + 3600 * 10**6) for s in starts)  # live changes
