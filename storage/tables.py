"""SQLAlchemy 2 Core tables. Instants are BIGINT microseconds since the epoch (as in the domain), so
that arithmetic and comparisons match the engine exactly and no timezone conversion is ever involved.

Invariants:
- ``meetings.status``/``disputed`` is the status last evaluated, counted in its path's
  ``counts``/``minutes`` (indexed like ``domain.model.STATUSES``) and published on the statuses topic;
- ``meetings.next_change_at`` is the next instant the clock alone changes that status (NULL: never);
- ``paths.last_tally`` is the content of the last tally published (without version/as_of);
- ``consumer_offsets.next_offset`` is the first offset of each input partition not yet applied; it is
  written in the same transaction as the state, so a redelivered record is recognised and skipped;
- ``outbox`` rows are published in ``id`` order per ``lane`` (lane = hash of the key), so every
  message of one path goes out in the order it was written.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

orgs = Table(
    "orgs",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("enabled", Boolean, nullable=False),
)

programs = Table(
    "programs",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("name", Text),
    Column("session_verification", Boolean, nullable=False),
    Column("late_cancel_window", BigInteger),
    Column("auto_confirm_window", BigInteger),
    Column("authorized_hours", Numeric(12, 2)),
    Column("created_at", BigInteger, nullable=False),
    Column("updates", JSONB, nullable=False, server_default="[]"),
)

paths = Table(
    "paths",
    metadata,
    Column("path_id", Text, primary_key=True),
    Column("program_id", Text, nullable=False, index=True),
    Column("org_id", Text, nullable=False),
    Column("override_hours", Numeric(12, 2)),
    Column("override_at", BigInteger),
    Column("changes", Integer, nullable=False, server_default="0"),
    Column("counts", ARRAY(Integer), nullable=False),
    Column("minutes", ARRAY(BigInteger), nullable=False),
    Column("tally_version", BigInteger, nullable=False, server_default="0"),
    Column("last_tally", JSONB),
)

meetings = Table(
    "meetings",
    metadata,
    Column("meeting_id", Text, primary_key=True),
    Column("path_id", Text, nullable=False, index=True),
    Column("program_id", Text, nullable=False, index=True),
    Column("start_at", BigInteger, nullable=False),
    Column("end_at", BigInteger, nullable=False),
    Column("cancel_kind", SmallInteger, nullable=False, server_default="0"),
    Column("cancel_at", BigInteger, nullable=False, server_default="0"),
    Column("answer", Boolean),
    Column("answer_at", BigInteger, nullable=False, server_default="0"),
    Column("dispute_open", Boolean, nullable=False, server_default="false"),
    Column("waived", Boolean, nullable=False, server_default="false"),
    Column("status", Text),
    Column("disputed", Boolean, nullable=False, server_default="false"),
    Column("status_version", BigInteger, nullable=False, server_default="0"),
    Column("next_change_at", BigInteger),
    Index("meetings_next_change_at", "next_change_at", postgresql_where="next_change_at IS NOT NULL"),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_key", Text, primary_key=True),
)

parked = Table(
    "parked",
    metadata,
    Column("seq", BigInteger, Identity(always=False), primary_key=True),  # arrival order
    Column("wait_kind", Text, nullable=False),
    Column("wait_key", Text, nullable=False),
    Column("event_id", Text),
    Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB),
    Index("parked_wait", "wait_kind", "wait_key"),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# the partition that the events of each path (path topic) or org (admin topic) arrive on: the first one
# seen; an event of the same path or org on another partition (two partitioners) is rejected
partition_keys = Table(
    "partition_keys",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("partition", Integer, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("lane", SmallInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("outbox_lane_id", "lane", "id"),
)

# outbox rows Kafka refused for good (never dropped silently; an operator decides)
outbox_dead = Table(
    "outbox_dead",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB),
    Column("error", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# what operators did with session-tally's commands (skipped offsets, re-driven rejections, resets)
operator_audit = Table(
    "operator_audit",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("action", Text, nullable=False),
    Column("detail", JSONB, nullable=False),
    Column("operator", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

admin_audit = Table(
    "admin_audit",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("path_id", Text, nullable=False, index=True),
    Column("meeting_id", Text),
    Column("actor_id", Text, nullable=False),
    Column("actor_role", Text, nullable=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("text", Text),
    Column("outcome", Text),
    Column("authorized_hours", Numeric(12, 2)),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
