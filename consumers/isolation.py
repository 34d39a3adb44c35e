"""No record can stop its partition: a batch whose transaction fails for a reason that is not an outage
is retried in halves, down to the record that fails alone, which is rejected with the failure as its
detail; the rest of the batch is applied around it.

Invariants:
- halves are applied in the batch's order, so every partition's records are still applied in partition
  order, and each half is its own transaction (offsets, state and outbox together, as always);
- an outage (PostgreSQL unreachable, a connection lost, the server shutting down) is never blamed on a
  record: the error goes up and the whole batch is handed back and retried later;
- a record rejected here changes no state and its event id is not remembered (the failure is ours, not
  the sender's): once the cause is fixed, the same event re-sent is applied.

Failing records should not exist (the checks of SPEC sections 3 and 7 keep out what PostgreSQL or Kafka
would refuse); this is the safety net for the bug nobody has found yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from consumers.log_context import record_fields
from domain import reasons as R
from storage.db import is_driver_connection_error, sqlstate_of
from storage.messages import SourceRecord
from storage.unit_of_work import OffsetGap, Report, UnitOfWork

log = logging.getLogger("session_tally.consumer")

# SQLSTATE classes of outages: connection exception, insufficient resources, operator intervention
# (admin/crash shutdown), system error
_OUTAGE_CLASSES = {"08", "53", "57", "58"}
_STATEMENT_TIMEOUT = "57014"  # operator intervention by class, but caused by the work itself


def is_outage(exc: BaseException) -> bool:
    """Does the failure come from the environment (worth retrying the same batch) rather than the data?"""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OSError | ConnectionError | asyncio.TimeoutError | PoolTimeout | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # wrapped by SQLAlchemy, or psycopg's own (the COPY of storage/rows.py runs on the driver's connection)
    sqlstate = sqlstate_of(exc) or ""
    if sqlstate == _STATEMENT_TIMEOUT:
        return False
    if sqlstate[:2] in _OUTAGE_CLASSES:
        return True
    return (isinstance(exc, OperationalError) and not sqlstate) or is_driver_connection_error(exc)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


async def apply_isolating(uow: UnitOfWork, batch: Sequence[SourceRecord], accept_gaps: bool) -> Report:
    """``uow.process_batch(batch)``; when it fails for a reason that is not an outage, in halves, and
    the record that fails alone is rejected. Raises what ``process_batch`` raises for an outage or an
    offset gap."""
    try:
        return await uow.process_batch(batch, accept_gaps=accept_gaps)
    except (asyncio.CancelledError, OffsetGap):
        raise
    except Exception as exc:
        if is_outage(exc):
            raise
        if len(batch) == 1:
            record = batch[0]
            log.error(
                "record %s:%d@%d cannot be processed (%s): rejected",
                *_where(record),
                describe(exc),
                extra=record_fields(record, _event_id(record)),
            )
            return await uow.reject_records(batch, R.SCHEMA_VIOLATION, f"could not be processed ({describe(exc)})")
        log.warning("batch of %d records failed (%s); retrying it in halves", len(batch), describe(exc))
    middle = len(batch) // 2
    first = await apply_isolating(uow, batch[:middle], accept_gaps)
    second = await apply_isolating(uow, batch[middle:], True)
    return merge(first, second)


def _where(record: SourceRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def _event_id(record: SourceRecord) -> str | None:
    """The record's event id when it can be read (for the log; the record failed once already)."""
    from domain.engine import decode

    try:
        return decode(record.value)[0]
    except Exception:
        return None


def merge(a: Report, b: Report) -> Report:
    out = Report()
    for name in ("records", "redelivered", "status_changes", "tallies", "outbox_rows"):
        setattr(out, name, getattr(a, name) + getattr(b, name))
    out.attempts = max(a.attempts, b.attempts) + 1
    out.outcomes = a.outcomes + b.outcomes
    out.reasons = a.reasons + b.reasons
    out.misrouted = a.misrouted + b.misrouted
    changes = [c for c in (a.next_change_at, b.next_change_at) if c is not None]
    out.next_change_at = min(changes, default=None)
    return out
