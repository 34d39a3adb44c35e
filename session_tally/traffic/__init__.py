"""A deterministic, realistic stream of session-tally input events (SPEC.md section 3).

Pure: no I/O, no wall clock, no global randomness. Everything comes from one ``random.Random(seed)``, so
``generate(config, n)`` gives the same bytes every time for the same config and ``n``.

The stream reads like real traffic:

- a setup phase: the support desk switches session management on for most organizations (a few stay
  off, one is toggled off and on again), program admins and the support desk create programs (most with
  session verification on, some off, a few rejected because their org is switched off);
- then the bulk, in event-time order: each path schedules meetings (30-120 minutes, days ahead) and
  each meeting gets a fate: it happens and the participant answers "did it occur?" (or nobody answers
  and it auto-confirms), or it is canceled or rescheduled, sometimes inside the late-cancel window,
  followed by disputes and their resolutions; program admins set path authorized hours (with a note),
  the support desk changes program settings now and then (and program admins try to, and are refused);
- mixed in: exact duplicate deliveries, meeting events published before the ``meeting.scheduled`` they
  refer to (same path), and malformed or invalid messages of every kind in :data:`BAD_KINDS` (each with
  the rejection reason of SPEC section 7 it is meant to get, see :data:`BAD_KIND_REASONS`).

``order_independent=True`` restricts the stream so that its final result does not depend on how the
admin topic and the path topic interleave (see :class:`TrafficConfig`).

Memory stays bounded by the live per-path state (pending follow-ups of meetings not yet finished, a few
recent meetings per path, a small ring of recent records for duplicates), not by the stream length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from producers.routing import TopicKind
from session_tally.traffic.config import (
    ADMIN_TYPES,
    BAD_KIND_REASONS,
    BAD_KINDS,
    CROSS_PARTITION_BAD_KINDS,
    EVENT_TYPES,
    ORDER_DEPENDENT_BAD_KINDS,
    Record,
    Tagged,
    TrafficConfig,
)
from session_tally.traffic.sim import Simulation

__all__ = [
    "ADMIN_TYPES",
    "BAD_KINDS",
    "BAD_KIND_REASONS",
    "CROSS_PARTITION_BAD_KINDS",
    "EVENT_TYPES",
    "ORDER_DEPENDENT_BAD_KINDS",
    "Record",
    "Tagged",
    "TopicKind",
    "TrafficConfig",
    "generate",
    "generate_tagged",
    "write_jsonl",
]


def generate(config: TrafficConfig, events: int) -> Iterator[Record]:
    """Exactly ``events`` records (fewer only if ``events`` < 0), deterministic for ``config``."""
    for tagged in generate_tagged(config, events):
        yield tagged.record


def generate_tagged(config: TrafficConfig, events: int) -> Iterator[Tagged]:
    """Like :func:`generate`, with each record's stream time and kind."""
    return Simulation(config, events).run()


def write_jsonl(records: Iterable[Record], fh: BinaryIO) -> int:
    """Write one value per line; returns how many were written."""
    count = 0
    write = fh.write
    batch: list[bytes] = []
    for record in records:
        batch.append(record.value)
        count += 1
        if len(batch) >= 4096:
            batch.append(b"")
            write(b"\n".join(batch))
            batch.clear()
    if batch:
        batch.append(b"")
        write(b"\n".join(batch))
    return count
