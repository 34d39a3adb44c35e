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

from domain.model import Meeting
from domain.outputs import SCHEMA_VERSION
from domain.tally import meeting_document
from domain.timefmt import format_instant

LANES = 16
MAX_ORIGINAL_BYTES = 64 * 1024  # a too_large original is kept up to this size (and flagged truncated)
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
    headers: list[list[str | None]] | None = None

    def as_params(self) -> dict[str, Any]:
        return {"lane": self.lane, "topic": self.topic, "key": self.key, "value": self.value, "headers": self.headers}


def lane_of(key: bytes | None) -> int:
    return zlib.crc32(key or b"") % LANES


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def tally_row(path_id: str, tally: dict[str, Any]) -> OutboxRow:
    key = path_id.encode()
    return OutboxRow(lane_of(key), TALLIES, key, _dumps({"schema_version": SCHEMA_VERSION, **tally}))


def status_row(
    meeting: Meeting, program_id: str, org_id: str, status: str, disputed: bool, version: int, as_of: int
) -> OutboxRow:
    doc = {"schema_version": SCHEMA_VERSION, **meeting_document(meeting, status, disputed)}
    doc["program_id"] = program_id
    doc["org_id"] = org_id
    doc["version"] = version
    doc["as_of"] = format_instant(as_of)
    key = meeting.path_id.encode()
    return OutboxRow(lane_of(key), STATUSES, key, _dumps(doc))


def _text_or_base64(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(raw).decode("ascii")


def rejected_row(source: SourceRecord, event_id: str | None, reason: str, detail: str, at: int) -> OutboxRow:
    """A rejected input: reason, detail, the original bytes, key and headers, and where it came from."""
    value = source.value
    truncated = value is not None and len(value) > MAX_ORIGINAL_BYTES
    if truncated:
        assert value is not None
        original, original_b64 = None, base64.b64encode(value[:MAX_ORIGINAL_BYTES]).decode("ascii")
    else:
        original, original_b64 = _text_or_base64(value)
    key_text, key_b64 = _text_or_base64(source.key)
    headers = headers_doc(source.headers)
    doc = {
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
        "key": key_text,
        "key_base64": key_b64,
        "headers": headers,
        "original": original,
        "original_base64": original_b64,
        "original_bytes": None if value is None else len(value),
        "original_truncated": truncated,
    }
    out_headers = [*headers, [REASON_HEADER, reason]]
    return OutboxRow(lane_of(source.key), REJECTED, source.key, _dumps(doc), out_headers)


def headers_doc(headers: Sequence[tuple[str, bytes | None]]) -> list[list[str | None]]:
    """Kafka headers as JSON: ``[[key, value-as-text or null], ...]`` (bytes that are not UTF-8 escaped)."""
    return [[k, None if v is None else v.decode("utf-8", "backslashreplace")] for k, v in headers]


def decode_headers(headers: Sequence[Sequence[str | None]] | None) -> list[tuple[str, bytes | None]]:
    """The inverse of :func:`headers_doc` (for parked copies and outbox rows)."""
    return [(str(k), None if v is None else v.encode("utf-8")) for k, v in headers or ()]
