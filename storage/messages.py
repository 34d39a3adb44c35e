"""The bytes session-tally publishes (docs/topics.md documents them for dashboard teams).

Every output message is written to the outbox in the same transaction as the state it reflects, and
carries a version so that a re-publication after a crash (same version, same content) is recognisable.
Admin-only text (path notes, dispute comments, resolution notes) is never part of a tally or status.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domain.outputs import SCHEMA_VERSION
from domain.timefmt import format_instant
from storage.codec import dumps_bytes

LANES = 16
MAX_ORIGINAL_BYTES = 64 * 1024  # key, value and headers of a rejected input are each kept up to this size
MAX_REJECTED_BYTES = 512 * 1024  # a rejected message above this keeps base64 forms only (never above ~400 KiB)
REMOVED_KEY_BYTES = 1024  # the Kafka key of a rejected message published without its original is cut to this
TALLIES = "tallies"
STATUSES = "statuses"
REJECTED = "rejected"
REASON_HEADER = "session-tally-reason"  # added to a rejected input's own headers


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where an input message came from (a Kafka record, or a parked copy of one)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()  # Kafka allows a header without a value
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    lane: int
    topic: str  # logical: tallies | statuses | rejected
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes | None], ...] | None = None  # Kafka headers of the message


def lane_of(key: bytes | None) -> int:
    return zlib.crc32(key or b"") % LANES


def _dumps(doc: dict[str, Any]) -> bytes:
    return dumps_bytes(doc)


def tally_row(path_id: str, message: dict[str, Any]) -> OutboxRow:
    """The path-tallies record of ``message`` (domain.publication.tally_message), keyed by path."""
    key = path_id.encode()
    return OutboxRow(lane_of(key), TALLIES, key, _dumps(message))


def status_row(path_id: str, message: dict[str, Any]) -> OutboxRow:
    """The meeting-statuses record of ``message`` (domain.publication.status_message), keyed by path."""
    key = path_id.encode()
    return OutboxRow(lane_of(key), STATUSES, key, _dumps(message))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _cut(raw: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes, without a UTF-8 sequence split at the end when the bytes are UTF-8."""
    if len(raw) <= limit:
        return raw
    cut = raw[:limit]
    for back in range(4):  # a UTF-8 character is at most 4 bytes: drop a partial one at the end
        if _utf8(cut[: len(cut) - back]) is not None:
            return cut[: len(cut) - back]
    return cut


def _key_bytes(key: str) -> bytes:
    """A header key's bytes (a key that was not UTF-8 was read ``surrogateescape``: its bytes come back)."""
    return key.encode("utf-8", "surrogateescape")


def _headers_fields(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    """The rejected message's header fields: as text, exactly in base64 when any is not UTF-8, their full
    size, and cut to :data:`MAX_ORIGINAL_BYTES` in all (whole headers in order, the last one cut)."""
    raw = [(_key_bytes(k), v) for k, v in headers]
    total = sum(len(k) + len(v or b"") for k, v in raw)
    kept: list[tuple[bytes, bytes | None]] = []
    budget = MAX_ORIGINAL_BYTES
    for k, v in raw:
        if budget <= 0:
            break
        k = _cut(k, budget)
        budget -= len(k)
        if v is not None:
            v = _cut(v, max(budget, 0))
            budget -= len(v)
        kept.append((k, v))
    texts = [[_utf8(k), None if v is None else _utf8(v)] for k, v in kept]
    exact = all(t[0] is not None and (v is None or t[1] is not None) for t, (_k, v) in zip(texts, kept, strict=True))
    return {
        "headers": [
            [t[0] if t[0] is not None else k.decode("utf-8", "backslashreplace"), t[1] if v is None or t[1] is not None
             else v.decode("utf-8", "backslashreplace")]
            for t, (k, v) in zip(texts, kept, strict=True)
        ],
        "headers_base64": None if exact else [[_b64(k), None if v is None else _b64(v)] for k, v in kept],
        "headers_bytes": total,
        "headers_truncated": len(kept) < len(raw) or total > MAX_ORIGINAL_BYTES,
    }  # fmt: skip


def _bytes_fields(name: str, raw: bytes | None, text_name: str, size_name: str) -> dict[str, Any]:
    """``text_name`` (UTF-8 text, else null), ``<name>_base64`` (when not UTF-8), the full size and whether
    it was cut to :data:`MAX_ORIGINAL_BYTES`."""
    if raw is None:
        return {text_name: None, f"{name}_base64": None, size_name: None, f"{name}_truncated": False}
    cut = _cut(raw, MAX_ORIGINAL_BYTES)
    text = _utf8(cut)
    return {
        text_name: text,
        f"{name}_base64": None if text is not None else _b64(cut),
        size_name: len(raw),
        f"{name}_truncated": len(cut) < len(raw),
    }


def rejected_row(source: SourceRecord, event_id: str | None, reason: str, detail: str, at: int) -> OutboxRow:
    """A rejected input: reason, detail, the original key, value and headers, and where it came from.

    Bytes are kept exactly: as text when they are UTF-8, else in base64. Key, value and headers are each
    cut to their first 64 KiB (with their full sizes), so that a rejection always fits the topic
    (SPEC section 3). The Kafka record carries the original headers (when they are UTF-8 and fit) and a
    ``session-tally-reason`` header."""
    headers = _headers_fields(source.headers)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "reason": reason,
        "detail": detail,
        "event_id": event_id,
        "rejected_at": format_instant(at),
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
        },
        **_bytes_fields("key", source.key, "key", "key_bytes"),
        **headers,
        **_bytes_fields("original", source.value, "original", "original_bytes"),
    }
    value = _dumps(doc)
    if len(value) > MAX_REJECTED_BYTES:  # text escaped as \uXXXX can grow 6-fold: keep the base64 forms
        for name, text_name in (("original", "original"), ("key", "key")):
            if doc[text_name] is not None:
                doc[f"{name}_base64"] = _b64(doc[text_name].encode("utf-8"))
                doc[text_name] = None
        value = _dumps(doc)
    key = None if source.key is None else _cut(source.key, MAX_ORIGINAL_BYTES)
    exact = headers["headers_base64"] is None and not headers["headers_truncated"]
    out_headers = [*(source.headers if exact else ()), (REASON_HEADER, reason.encode())]
    return OutboxRow(lane_of(key), REJECTED, key, value, tuple(out_headers))


def removed_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a rejected message published without its original: the key's first
    :data:`REMOVED_KEY_BYTES` (a 64 KiB key alone would not fit a topic that refused the message)."""
    return None if key is None else _cut(key, REMOVED_KEY_BYTES)


def without_original(value: bytes, error: BaseException) -> bytes:
    """A rejected message that the topic refused (smaller ``max.message.bytes`` than the 1 MB default,
    say), again without the original's key, value and headers: what it was and why stays, with the
    sizes, and ``original_removed`` says why the rest is gone. The relay publishes it with
    :func:`removed_key` as its Kafka key and :func:`removed_headers`."""
    doc = json.loads(value)
    for field in ("key", "key_base64", "headers_base64", "original", "original_base64"):
        if field in doc:
            doc[field] = None
    doc["headers"] = []
    doc["original_removed"] = f"the rejected message was refused by Kafka ({type(error).__name__})"
    return _dumps(doc)


def removed_headers(value: bytes) -> dict[str, Any]:
    """The stored Kafka headers of a rejected message published without its original: only the
    ``session-tally-reason`` header (every rejected record carries it)."""
    return store_headers([(REASON_HEADER, str(json.loads(value)["reason"]).encode())])


def store_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Kafka headers as a JSON document PostgreSQL can store whatever their bytes (base64 pairs)."""
    return {"b64": [[_b64(_key_bytes(k)), None if v is None else _b64(v)] for k, v in headers]}


def load_headers(doc: Any) -> list[tuple[str, bytes | None]]:
    """The inverse of :func:`store_headers`; also reads the older ``[[key, text], ...]`` rows."""
    if not doc:
        return []
    if isinstance(doc, dict):
        return [
            (base64.b64decode(k).decode("utf-8", "surrogateescape"), None if v is None else base64.b64decode(v))
            for k, v in doc["b64"]
        ]
    return [(str(k), None if v is None else str(v).encode("utf-8")) for k, v in doc]
