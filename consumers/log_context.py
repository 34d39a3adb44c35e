"""Fields that every log line written while a batch is handled carries (topic, partition, offset), held
in a context variable so that the lines of the modules below (isolation, the unit of work) get them
too without passing them around. session_tally/logs.py copies them onto each record it formats; a
field given with ``extra=`` (one record's ``event_id``, say) wins over the context's.

Invariant: the context is set for the duration of one ``with batch_context(...)`` block, in the task
that handles the batch, and restored when it ends (context variables are per task, so two consumers of
one event loop never see each other's).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

LOG_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_fields", default=None)


class _Record(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def fields_of(records: Sequence[_Record]) -> dict[str, Any]:
    """The log fields of a batch: its topic; its partition and first offset when it has one partition
    (else ``partitions``: each one's offset range, ``"p:first-last"``); the number of records."""
    if not records:
        return {}
    ranges: dict[tuple[str, int], list[int]] = {}
    for r in records:
        span = ranges.setdefault((r.topic, r.partition), [r.offset, r.offset])
        span[0], span[1] = min(span[0], r.offset), max(span[1], r.offset)
    topics = sorted({t for t, _ in ranges})
    out: dict[str, Any] = {"topic": topics[0] if len(topics) == 1 else ",".join(topics), "records": len(records)}
    if len(ranges) == 1:
        ((_, partition), (first, last)) = next(iter(ranges.items()))
        out.update(partition=partition, offset=first, last_offset=last)
    else:
        out["partitions"] = ",".join(f"{p}:{a}-{b}" for (_, p), (a, b) in sorted(ranges.items()))
    return out


def record_fields(record: _Record, event_id: str | None = None) -> dict[str, Any]:
    """The log fields of one record (for ``extra=``)."""
    out: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if event_id is not None:
        out["event_id"] = event_id
    return out


@contextlib.contextmanager
def batch_context(records: Sequence[_Record]) -> Iterator[None]:
    token = LOG_FIELDS.set(fields_of(records))
    try:
        yield
    finally:
        LOG_FIELDS.reset(token)
