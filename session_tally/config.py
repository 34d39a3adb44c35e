"""The product's settings, read from the environment here and handed down by the composition root (no
module below session_tally reads the environment). The local-services tooling (session_tally/localsvc,
`services`) reads its own variables.

Every variable is documented in README.md ("Configuration").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from producers.kafka_access import KafkaAccess, KafkaSecurity, KafkaSettingsError

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg://session_tally:session_tally@127.0.0.1:54320/session_tally"


class SettingsError(ValueError):
    """A variable has a value that cannot work; the message names it (shown as one line by the CLI)."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={os.environ[name]!r}: expected true or false")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected a whole number") from None
    if number < 1:
        raise SettingsError(f"{name}={value!r}: expected 1 or more")
    return number


def kafka_security_from_env() -> KafkaSecurity:
    """The KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables, validated."""
    password = os.environ.get("KAFKA_SASL_PASSWORD") or None
    password_file = os.environ.get("KAFKA_SASL_PASSWORD_FILE", "")
    if password is None and password_file:
        try:
            password = open(password_file, encoding="utf-8").read().rstrip("\r\n")  # noqa: SIM115
        except OSError as exc:
            raise SettingsError(f"KAFKA_SASL_PASSWORD_FILE={password_file}: {exc.strerror or exc}") from None
    security = KafkaSecurity(
        protocol=_env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
        sasl_mechanism=(os.environ.get("KAFKA_SASL_MECHANISM") or "").upper() or None,
        sasl_username=os.environ.get("KAFKA_SASL_USERNAME") or None,
        sasl_password=password,
        ssl_cafile=os.environ.get("KAFKA_SSL_CAFILE") or None,
        ssl_certfile=os.environ.get("KAFKA_SSL_CERTFILE") or None,
        ssl_keyfile=os.environ.get("KAFKA_SSL_KEYFILE") or None,
        ssl_key_password=os.environ.get("KAFKA_SSL_KEY_PASSWORD") or None,
        ssl_check_hostname=_env_bool("KAFKA_SSL_CHECK_HOSTNAME", True),
    )
    try:
        return security.validate()
    except KafkaSettingsError as exc:
        raise SettingsError(str(exc)) from None


def kafka_security_env(security: KafkaSecurity) -> dict[str, str]:
    """The variables that make :func:`kafka_security_from_env` return ``security`` (empty = unset)."""
    return {
        "KAFKA_SECURITY_PROTOCOL": security.protocol,
        "KAFKA_SASL_MECHANISM": security.sasl_mechanism or "",
        "KAFKA_SASL_USERNAME": security.sasl_username or "",
        "KAFKA_SASL_PASSWORD": security.sasl_password or "",
        "KAFKA_SASL_PASSWORD_FILE": "",
        "KAFKA_SSL_CAFILE": security.ssl_cafile or "",
        "KAFKA_SSL_CERTFILE": security.ssl_certfile or "",
        "KAFKA_SSL_KEYFILE": security.ssl_keyfile or "",
        "KAFKA_SSL_KEY_PASSWORD": security.ssl_key_password or "",
        "KAFKA_SSL_CHECK_HOSTNAME": "true" if security.ssl_check_hostname else "false",
    }


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
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    replication_factor: int | None = None  # None: min(3, brokers in the cluster)
    min_insync_replicas: int | None = None  # None: the cluster's default (not set on the topics)
    create_topics: bool = True  # a worker creates missing topics at start-up

    @property
    def kafka(self) -> KafkaAccess:
        """Bootstrap servers and security together: what every Kafka client of the project is given."""
        return KafkaAccess(self.kafka_bootstrap_servers, self.kafka_security)

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
            "SESSION_TALLY_REPLICATION_FACTOR": str(self.replication_factor or ""),
            "SESSION_TALLY_MIN_INSYNC_REPLICAS": str(self.min_insync_replicas or ""),
            "SESSION_TALLY_CREATE_TOPICS": "true" if self.create_topics else "false",
            **kafka_security_env(self.kafka_security),
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
            kafka_security=kafka_security_from_env(),
            replication_factor=_env_int("SESSION_TALLY_REPLICATION_FACTOR"),
            min_insync_replicas=_env_int("SESSION_TALLY_MIN_INSYNC_REPLICAS"),
            create_topics=_env_bool("SESSION_TALLY_CREATE_TOPICS", True),
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
