"""Settings read from the environment (the only place that reads it).

Every variable is documented in README.md ("Configuration").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg://session_tally:session_tally@127.0.0.1:54320/session_tally"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value else default


@dataclass(frozen=True)
class Topics:
    admin_events: str = "session-mgmt.admin-events"
    path_events: str = "session-mgmt.path-events"
    path_tallies: str = "session-mgmt.path-tallies"
    meeting_statuses: str = "session-mgmt.meeting-statuses"
    rejected: str = "session-mgmt.rejected"

    @classmethod
    def from_env(cls, prefix: str | None = None) -> Topics:
        p = _env("SESSION_TALLY_TOPIC_PREFIX", "") if prefix is None else prefix
        return cls(
            admin_events=p + _env("SESSION_TALLY_ADMIN_TOPIC", cls.admin_events),
            path_events=p + _env("SESSION_TALLY_PATH_TOPIC", cls.path_events),
            path_tallies=p + _env("SESSION_TALLY_TALLIES_TOPIC", cls.path_tallies),
            meeting_statuses=p + _env("SESSION_TALLY_STATUSES_TOPIC", cls.meeting_statuses),
            rejected=p + _env("SESSION_TALLY_REJECTED_TOPIC", cls.rejected),
        )

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.admin_events, self.path_events)

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.path_tallies, self.meeting_statuses, self.rejected)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = DEFAULT_KAFKA
    database_url: str = DEFAULT_DATABASE_URL
    db_schema: str = "public"
    group_id: str = "session-tally"
    topics: Topics = field(default_factory=Topics)
    input_partitions: int = 6
    park_timeout_s: float = 30.0

    def as_env(self) -> dict[str, str]:
        """The environment variables that make ``Settings.from_env()`` in a child process equal these
        settings (topic names spelled out, no prefix)."""
        t = self.topics
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "DATABASE_URL": self.database_url,
            "SESSION_TALLY_DB_SCHEMA": self.db_schema,
            "SESSION_TALLY_GROUP_ID": self.group_id,
            "SESSION_TALLY_TOPIC_PREFIX": "",
            "SESSION_TALLY_ADMIN_TOPIC": t.admin_events,
            "SESSION_TALLY_PATH_TOPIC": t.path_events,
            "SESSION_TALLY_TALLIES_TOPIC": t.path_tallies,
            "SESSION_TALLY_STATUSES_TOPIC": t.meeting_statuses,
            "SESSION_TALLY_REJECTED_TOPIC": t.rejected,
            "SESSION_TALLY_INPUT_PARTITIONS": str(self.input_partitions),
            "SESSION_TALLY_PARK_TIMEOUT_S": str(self.park_timeout_s),
        }

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA),
            database_url=_env("DATABASE_URL", DEFAULT_DATABASE_URL),
            db_schema=_env("SESSION_TALLY_DB_SCHEMA", "public"),
            group_id=_env("SESSION_TALLY_GROUP_ID", "session-tally"),
            topics=Topics.from_env(),
            input_partitions=int(_env("SESSION_TALLY_INPUT_PARTITIONS", "6")),
            park_timeout_s=float(_env("SESSION_TALLY_PARK_TIMEOUT_S", "30")),
        )


@dataclass(frozen=True)
class WebSettings:
    """`session-tally web`: where it listens, who may sign in, the key that signs its session cookies."""

    host: str = "127.0.0.1"
    port: int = 8000
    users_file: str = ""  # empty: the demo users shipped with the package (web/demo_users.toml)
    secret: str = ""  # empty: a random key per start (sessions end when the app restarts)

    @classmethod
    def from_env(cls) -> WebSettings:
        return cls(
            host=_env("SESSION_TALLY_WEB_HOST", "127.0.0.1"),
            port=int(_env("SESSION_TALLY_WEB_PORT", "8000")),
            users_file=_env("SESSION_TALLY_WEB_USERS", ""),
            secret=_env("SESSION_TALLY_WEB_SECRET", ""),
        )
