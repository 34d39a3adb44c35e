"""Re-driving a rejection (`session-tally rejected redrive`): its original, unchanged but for a new
``event_id``, back onto the input topic and key it came from (pure; no I/O).

Invariants:
- the new id is a function of the old one only (:func:`redrive_id`): re-driving one rejection twice
  sends the same id twice, which the pipeline counts as a duplicate, never as a second event; and the
  old id, remembered by the duplicate check when the event was rejected, does not swallow the new one;
- the new id is always well-formed (:func:`domain.events.dedup_event_id`): ``<old>.r1`` when that is,
  else a UUIDv5 of the old id in a fixed namespace;
- the bytes of the original are kept exactly except the value of its top-level ``event_id`` member
  (numbers, spacing and key order stay as the sender wrote them: the engine reads decimals exactly);
- an original that is not the message as sent (cut, removed), not a JSON object with a string
  ``event_id``, or from a topic that is not an input topic, is not re-driven, with the reason.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from domain.events import dedup_event_id
from session_tally.rejections import Rejection

SUFFIX = ".r1"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "session-tally/rejected-redrive")
REDRIVE_HEADER = "session-tally-redrive-of"  # topic:partition@offset of the record that was rejected
_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def redrive_id(old: str) -> str:
    """The event id a rejection of ``old`` is re-driven with."""
    candidate = old + SUFFIX
    if dedup_event_id(candidate) is not None:
        return candidate
    return str(uuid.uuid5(NAMESPACE, old))


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def event_id_spans(text: str) -> list[tuple[int, int]]:
    """Where the values of the top-level ``event_id`` members of a JSON object are (start, end); raises
    ValueError when ``text`` is not one JSON object."""
    i = _skip(text, 0)
    if i >= len(text) or text[i] != "{":
        raise ValueError("not a JSON object")
    spans: list[tuple[int, int]] = []
    i = _skip(text, i + 1)
    if i < len(text) and text[i] == "}":
        return spans
    while True:
        key, i = _DECODER.raw_decode(text, i)
        if not isinstance(key, str):
            raise ValueError("a member name is not a string")
        i = _skip(text, i)
        if i >= len(text) or text[i] != ":":
            raise ValueError("':' expected")
        start = _skip(text, i + 1)
        _value, end = _DECODER.raw_decode(text, start)
        if key == "event_id":
            spans.append((start, end))
        i = _skip(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip(text, i + 1)
            continue
        if i < len(text) and text[i] == "}":
            if _skip(text, i + 1) != len(text):
                raise ValueError("text after the object")
            return spans
        raise ValueError("',' or '}' expected")


def with_event_id(original: bytes, new_id: str) -> bytes:
    """``original`` (UTF-8 JSON) with the value of every top-level ``event_id`` member replaced."""
    text = original.decode("utf-8")
    spans = event_id_spans(text)
    if not spans:
        raise ValueError("no event_id")
    replacement = json.dumps(new_id, ensure_ascii=False)
    for start, end in reversed(spans):
        text = text[:start] + replacement + text[end:]
    return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Plan:
    """One rejection and what re-driving it sends (``problem`` set: it cannot be re-driven)."""

    rejection: Rejection
    kind: str | None = None  # "admin" | "path": the input topic it goes back to
    old_id: str | None = None
    new_id: str | None = None
    value: bytes | None = None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    problem: str | None = None


def plan(rejection: Rejection, admin_topic: str, path_topic: str) -> Plan:
    """What re-driving ``rejection`` sends, or why it cannot be re-driven."""
    topic = rejection.source_key[0]
    kinds = {admin_topic: "admin", path_topic: "path"}
    if topic not in kinds:
        return Plan(rejection, problem=f"it came from {topic}, not an input topic ({admin_topic}, {path_topic})")
    problem = rejection.original_problem()
    if problem is not None:
        return Plan(rejection, problem=problem)
    original = rejection.original()
    assert original is not None
    try:
        obj = json.loads(original)
    except ValueError:
        return Plan(rejection, problem="the original is not JSON (fix it and publish it with `session-tally publish`)")
    old = obj.get("event_id") if isinstance(obj, dict) else None
    if not isinstance(old, str):
        return Plan(rejection, problem="the original has no string event_id")
    new = redrive_id(old)
    value = with_event_id(original, new)
    headers = [h for h in rejection.headers() or () if h[0] != REDRIVE_HEADER]
    headers.append((REDRIVE_HEADER, rejection.where.encode("utf-8", "surrogateescape")))
    return Plan(rejection, kinds[topic], old, new, value, rejection.key(), tuple(headers))
