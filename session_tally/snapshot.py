"""Build the `replay`-shaped document from what the pipeline published (pure; no I/O).

- tallies: the highest ``version`` per path (a re-publication after a crash repeats a version with the
  same content), sorted by path_id;
- meetings: the highest ``version`` per meeting, with replay's fields, sorted by meeting_id;
- rejected: ``{"line", "event_id", "reason"}``; ``line`` comes from the ``session-tally-line`` header
  that `session-tally publish` sets (null otherwise); sorted like replay: rejections of events that
  waited for an unknown program/meeting after all the others, each group by line (then by source).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LINE_HEADER = "session-tally-line"
MEETING_FIELDS = ("meeting_id", "path_id", "status", "start", "end", "minutes", "disputed")
_WAITING_REASONS = ("unknown_program", "unknown_meeting")


def line_of(headers: Iterable[Iterable[Any]] | None) -> int | None:
    for key, value in headers or ():
        if key == LINE_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


def build_document(
    tallies: Iterable[dict[str, Any]], statuses: Iterable[dict[str, Any]], rejected: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    latest_tally: dict[str, dict[str, Any]] = {}
    for doc in tallies:
        current = latest_tally.get(doc["path_id"])
        if current is None or doc["version"] >= current["version"]:
            latest_tally[doc["path_id"]] = doc
    latest_status: dict[str, dict[str, Any]] = {}
    for doc in statuses:
        current = latest_status.get(doc["meeting_id"])
        if current is None or doc["version"] >= current["version"]:
            latest_status[doc["meeting_id"]] = doc
    seen: set[tuple[str, int, int]] = set()
    entries = []
    for doc in rejected:
        src = doc.get("source") or {}
        where = (src.get("topic", ""), src.get("partition", -1), src.get("offset", -1))
        if where in seen:  # the same input rejected twice can only be a re-publication
            continue
        seen.add(where)
        line = line_of(doc.get("headers"))
        waiting = doc["reason"] in _WAITING_REASONS
        order = (waiting, line is None, line or 0, where)
        entries.append((order, {"line": line, "event_id": doc.get("event_id"), "reason": doc["reason"]}))
    entries.sort(key=lambda e: e[0])
    return {
        "tallies": [latest_tally[k] for k in sorted(latest_tally)],
        "meetings": [{f: latest_status[k][f] for f in MEETING_FIELDS} for k in sorted(latest_status)],
        "rejected": [e[1] for e in entries],
    }
