"""Bad messages for the bad-input scenario: deterministic (one seeded RNG), each one rejected on its own.

A message is a *body* (what the value is) in a *wrapper* (what Kafka carries around it):

- bodies: random bytes; a valid envelope (taken from the valid stream, with a fresh event id) truncated;
  one with a field mutated (a required field removed, a wrong type, a bad id, a naive timestamp, an
  unknown type or schema version, wrapped in an array, nested too deep, a lone surrogate); one with its
  bytes mutated (bits flipped, bytes inserted, deleted or repeated); one with a NUL character (escaped
  in a string or an object key, or a raw byte); one over 64 KiB;
- wrappers: the usual key and line header; an odd key (none, empty, not UTF-8, with a NUL, another
  path's); odd headers (none, null values, an empty or non-ASCII name, repeated names, a line header
  that is not a number, binary values); an oversized key (over 64 KiB); oversized headers (one large
  value, or a thousand headers). Header names that are not UTF-8 cannot be written from Python: those
  go through kcat (:func:`kcat_batches`).

Every body is checked with the engine's own stateless checks (``domain.engine.decode``) to be invalid
by itself, so it is rejected whatever state and order it meets, and changes nothing; its event id, when
it has a well-formed one, is unique among all messages (valid and bad), so no message is taken for a
duplicate of another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from domain import events as E
from domain.engine import decode, dedup_id
from tests.campaign.feed import Msg

LINE_HEADER = "session-tally-line"
# relative weights (the large ones are rare: 0.4 % each of 100,000 messages is already ~150 MB)
BODY_WEIGHTS = {
    "random bytes": 150,
    "truncated envelope": 150,
    "field mutated": 250,
    "bytes mutated": 200,
    "NUL character": 200,
    "over 64 KiB": 4,
}
WRAPPER_WEIGHTS = {"plain": 600, "odd key": 180, "odd headers": 200, "oversized key": 4, "oversized headers": 4}
KCAT_VALUE_DELIMITER, KCAT_KEY_DELIMITER = b"\x1e", b"\x1f"


class BadMessages:
    """``make(line)`` -> (body kind, wrapper kind, message); ``templates`` are valid envelopes."""

    def __init__(self, seed: int, templates: list[bytes], topics: tuple[str, str]) -> None:
        self.rng = random.Random(seed)
        self.templates = templates
        self.topics = topics
        self.used_ids = {i for i in (_dedup(t) for t in templates) if i is not None}
        self.n = 0
        self.path_keys = [k for k in (_path_key(t) for t in templates[:2000]) if k]

    # ------------------------------------------------------------------------------- bodies
    def _template(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.rng.choice(self.templates))
        self.n += 1
        doc["event_id"] = f"fz-{self.n}"
        return doc

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 2000))

    def truncated_envelope(self) -> bytes:
        raw = _dumps(self._template())
        return raw[: self.rng.randint(1, len(raw) - 1)]

    def field_mutated(self) -> bytes:
        doc = self._template()
        mutate = self.rng.choice(FIELD_MUTATIONS)
        out = mutate(self.rng, doc)
        return out if isinstance(out, bytes) else _dumps(out)

    def bytes_mutated(self) -> bytes:
        raw = bytearray(_dumps(self._template()))
        for _ in range(self.rng.randint(1, 4)):
            at = self.rng.randrange(len(raw))
            op = self.rng.randrange(4)
            if op == 0:
                raw[at] ^= 1 << self.rng.randrange(8)
            elif op == 1:
                raw[at:at] = self.rng.randbytes(self.rng.randint(1, 8))
            elif op == 2:
                del raw[at : at + self.rng.randint(1, 8)]
            else:
                raw[at:at] = raw[at : at + self.rng.randint(1, 16)]
        return bytes(raw)

    def nul_character(self) -> bytes:
        doc = self._template()
        where = self.rng.randrange(4)
        if where == 0:
            key = self.rng.choice([k for k, v in doc.items() if isinstance(v, str) and k != "event_id"])
            doc[key] = doc[key][:3] + "\u0000" + doc[key][3:]
        elif where == 1:
            doc["data"] = {**doc.get("data", {}), "x\u0000y": 1}
        elif where == 2:
            doc["note\u0000"] = "hidden"
        else:
            raw = _dumps(doc)
            at = self.rng.randrange(1, len(raw))
            return raw[:at] + b"\x00" + raw[at:]
        return _dumps(doc)

    def over_64_kib(self) -> bytes:
        doc = self._template()
        doc["padding"] = "x" * self.rng.randint(E.MAX_MESSAGE_BYTES, 4 * E.MAX_MESSAGE_BYTES)
        return _dumps(doc)

    # ------------------------------------------------------------------------------- wrappers
    def _key(self, kind: str) -> bytes | None:
        if kind == "odd key":
            return self.rng.choice(
                [None, b"", b"\xff\xfe\xfd", b"pa\x00th", self.rng.randbytes(16), self.rng.choice(self.path_keys)]
            )
        if kind == "oversized key":
            return self.rng.randbytes(self.rng.randint(E.MAX_MESSAGE_BYTES + 1, 3 * E.MAX_MESSAGE_BYTES))
        return self.rng.choice(self.path_keys)

    def _headers(self, kind: str, line: int) -> tuple[tuple[str, bytes | None], ...]:
        mine = (LINE_HEADER, str(line).encode())
        if kind == "odd headers":
            choices: list[list[tuple[str, bytes | None]]] = [
                [],
                [("trace", None), mine],
                [("", b"empty name"), mine],
                [("ключ-名前", "значение".encode()), mine],
                [("dup", b"1"), ("dup", b"2"), mine, ("dup", b"3")],
                [(LINE_HEADER, b"not-a-number")],
                [(LINE_HEADER, b"-7"), (LINE_HEADER, str(line).encode())],
                [("bin", self.rng.randbytes(32)), ("nul\x00name", b"v\x00v"), mine],
            ]
            return tuple(self.rng.choice(choices))
        if kind == "oversized headers":
            if self.rng.random() < 0.5:
                return (
                    mine,
                    ("big", self.rng.randbytes(self.rng.randint(E.MAX_MESSAGE_BYTES, 3 * E.MAX_MESSAGE_BYTES))),
                )
            return (mine, *((f"h{i}", b"v" * 64) for i in range(self.rng.randint(1000, 2000))))
        return (mine,)

    def make(self, line: int) -> tuple[str, str, Msg]:
        body_kind = _pick(self.rng, BODY_WEIGHTS)
        wrapper = _pick(self.rng, WRAPPER_WEIGHTS)
        build: Callable[[], bytes] = getattr(self, body_kind.replace(" ", "_").lower())
        value = self._checked(build)
        topic = self.rng.choice(self.topics)
        return body_kind, wrapper, Msg(topic, self._key(wrapper), value, self._headers(wrapper, line))

    def _checked(self, build: Callable[[], bytes]) -> bytes:
        """A body the engine rejects on its own, whose well-formed id (if any) no other message has."""
        for _ in range(100):
            value = build()
            event_id, decoded = decode(value)
            if isinstance(decoded, E.Envelope):
                continue  # the mutation left a valid event: try again
            if event_id is None and isinstance(decoded, dict):
                event_id = decoded.get("event_id")
            key = dedup_id(event_id, decoded)
            if key is not None and key in self.used_ids:
                continue
            if key is not None:
                self.used_ids.add(key)
            return value
        raise AssertionError("no rejected body in 100 attempts")

    def kcat_value(self) -> bytes:
        """A body kcat can carry between its delimiters (no 0x1e / 0x1f bytes)."""
        while True:
            value = self._checked(self.rng.choice([self.truncated_envelope, self.nul_character, self.field_mutated]))
            if KCAT_VALUE_DELIMITER not in value and KCAT_KEY_DELIMITER not in value and b"\n" not in value:
                return value


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _dedup(raw: bytes) -> str | None:
    event_id, decoded = decode(raw)
    return dedup_id(event_id, decoded)


def _path_key(raw: bytes) -> bytes | None:
    path = json.loads(raw).get("path_id")
    return path.encode() if isinstance(path, str) else None


def _without(field: str) -> Callable[[random.Random, dict[str, Any]], dict[str, Any]]:
    return lambda _rng, doc: {k: v for k, v in doc.items() if k != field}


def _set(field: str, *values: Any) -> Callable[[random.Random, dict[str, Any]], dict[str, Any]]:
    return lambda rng, doc: {**doc, field: rng.choice(values)}


def _nest(rng: random.Random, doc: dict[str, Any]) -> bytes:
    depth = rng.randint(E.MAX_NESTING + 1, E.MAX_NESTING + 200)
    return _dumps({**doc, "data": None})[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"


FIELD_MUTATIONS: list[Callable[[random.Random, dict[str, Any]], Any]] = [
    _without("type"),
    _without("schema_version"),
    _without("occurred_at"),
    _without("org_id"),
    _without("actor"),
    _without("data"),
    _without("event_id"),
    _set("event_id", "", "evt 1", "x" * 129, 42, None, ["fz"]),
    _set("schema_version", "1", 1.5, True, None, 2, -1, 10**30),
    _set("type", "meeting.Scheduled", "", None, ["meeting.scheduled"], "meeting.teleported"),
    _set("occurred_at", "2026-03-01T10:00:00", "yesterday", 1_700_000_000, "2026-02-30T10:00:00Z"),
    _set("org_id", "", "org 1", "o" * 129, 7, None),
    _set("actor", "bob", {"id": "", "role": "participant"}, {"id": "u", "role": "root"}, None, []),
    _set("data", [], "x", None, 3),
    lambda _rng, doc: [doc],
    lambda rng, doc: rng.choice([b'"just a string"', b"null", b"12345", b"[]", b"true"]),
    lambda _rng, doc: _dumps(doc)[:-1] + b',"schema_version":"1"}',  # a repeated key: the last one counts
    lambda _rng, doc: _dumps({**doc, "type": "x"}).replace(b'"type":"x"', b'"type":"\\ud800"'),  # lone surrogate
    _nest,
]


def kcat_batches(bad: BadMessages, count: int, per_batch: int = 100) -> list[tuple[list[bytes], list[Msg]]]:
    """Messages whose header names are not UTF-8, in batches for one kcat run each: (the -H arguments,
    the messages). Every message of a batch carries the batch's headers (kcat adds them to all)."""
    names = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"ok-\x80-name"]
    out: list[tuple[list[bytes], list[Msg]]] = []
    for first in range(0, count, per_batch):
        name = names[(first // per_batch) % len(names)]
        header_args = [b"-H", name + b"=v", b"-H", b"trace=abc"]
        headers = ((name.decode("utf-8", "surrogateescape"), b"v"), ("trace", b"abc"))
        msgs = [
            Msg(bad.rng.choice(bad.topics), bad.rng.choice(bad.path_keys), bad.kcat_value(), headers)
            for _ in range(min(per_batch, count - first))
        ]
        out.append((header_args, msgs))
    return out
