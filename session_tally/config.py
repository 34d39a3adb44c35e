"""The product's settings: one pydantic-settings class, :class:`Settings`, read from the environment here
and handed down by the composition root (no module below session_tally reads the environment).

Invariants:

- every variable is a field (nested models for the topics, Kafka security, the worker and the web app)
  whose alias is the variable's name and whose description is its meaning; README's "Configuration"
  table is generated from these fields (``session-tally config table``), so the two cannot disagree;
- every variable keeps the name and meaning it had; unset or empty means the default;
- a bad value fails when the settings are read, with one line naming the variable
  (:class:`SettingsError`; the CLI prints it and exits 2), never later with a traceback;
- ``Settings.as_env()`` gives the variables that make ``Settings.from_env()`` in a child process equal
  these settings.

``Settings(...)`` is the defaults and what it is given; ``Settings.from_env()`` reads the environment
(with pydantic-settings, session_tally/settings_env.py) and raises the one-line error. The
local-services tooling's variables
(``services up``) are documented by :class:`LocalServices`, a class of their own, so that a typo there
never stops a worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from producers.kafka_access import KafkaAccess, KafkaSecurity, KafkaSettingsError
from session_tally.settings_fields import (
    BadSetting,
    SettingsError,
    as_env,
    explain,
    flag_overrides,
    read_model,
    variable,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_KAFKA",
    "KafkaSecuritySettings",
    "LocalServices",
    "Settings",
    "SettingsError",
    "Topics",
    "WebSettings",
    "WorkerSettings",
]

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg://session_tally:session_tally@127.0.0.1:54320/session_tally"
TOPIC_CHARS = r"^[A-Za-z0-9._-]*$"
TOPIC_RULE = "must be made of letters, digits, '.', '_' and '-'"

# defer_build: the validators are built when first used, not when the command line is built
_MODEL = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, extra="forbid", defer_build=True)


class Topics(BaseModel):
    """The five topic names: ``prefix`` + each name (``admin_events`` and the others are the full names)."""

    model_config = _MODEL

    prefix: str = variable(
        "SESSION_TALLY_TOPIC_PREFIX",
        "",
        "prefix added to every topic name",
        pattern=TOPIC_CHARS,
        rule=TOPIC_RULE,
    )
    admin_topic: str = variable(
        "SESSION_TALLY_ADMIN_TOPIC",
        "session-mgmt.admin-events",
        "input: org and program events",
        min_length=1,
        pattern=TOPIC_CHARS,
        rule=TOPIC_RULE,
    )
    path_topic: str = variable(
        "SESSION_TALLY_PATH_TOPIC",
        "session-mgmt.path-events",
        "input: path and meeting events",
        min_length=1,
        pattern=TOPIC_CHARS,
        rule=TOPIC_RULE,
    )
    tallies_topic: str = variable(
        "SESSION_TALLY_TALLIES_TOPIC",
        "session-mgmt.path-tallies",
        "output: path tallies (compacted)",
        min_length=1,
        pattern=TOPIC_CHARS,
        rule=TOPIC_RULE,
    )
    statuses_topic: str = variable(
        "SESSION_TALLY_STATUSES_TOPIC",
        "session-mgmt.meeting-statuses",
        "output: meeting statuses",
        min_length=1,
        pattern=TOPIC_CHARS,
        rule=TOPIC_RULE,
    )
    rejected_topic: str = variable(
        "SESSION_TALLY_REJECTED_TOPIC",
        "session-mgmt.rejected",
        "output: rejected inputs",
        min_length=1,
        pattern=TOPIC_CHARS,
        rule=TOPIC_RULE,
    )

    @property
    def admin_events(self) -> str:
        return self.prefix + self.admin_topic

    @property
    def path_events(self) -> str:
        return self.prefix + self.path_topic

    @property
    def path_tallies(self) -> str:
        return self.prefix + self.tallies_topic

    @property
    def meeting_statuses(self) -> str:
        return self.prefix + self.statuses_topic

    @property
    def rejected(self) -> str:
        return self.prefix + self.rejected_topic

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.admin_events, self.path_events)

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.path_tallies, self.meeting_statuses, self.rejected)

    @classmethod
    def from_env(cls, prefix: str | None = None, environ: Mapping[str, str] | None = None) -> Topics:
        """The names the environment gives, under ``prefix`` when given (else SESSION_TALLY_TOPIC_PREFIX)."""
        topics = read_model(cls, environ)
        return topics if prefix is None else cls(**{**dict(topics), "prefix": prefix})


class KafkaSecuritySettings(BaseModel):
    """TLS and SASL of every Kafka client; the rules across fields are KafkaSecurity.validate()'s."""

    model_config = _MODEL

    protocol: str = variable(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`, for every Kafka client of the project "
        "([docs/security.md](docs/security.md))",
    )
    sasl_mechanism: str | None = variable(
        "KAFKA_SASL_MECHANISM", None, "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a `SASL_*` protocol)"
    )
    sasl_username: str | None = variable("KAFKA_SASL_USERNAME", None, "SASL user name")
    sasl_password: str | None = variable("KAFKA_SASL_PASSWORD", None, "SASL password", secret=True)
    sasl_password_file: str | None = variable(
        "KAFKA_SASL_PASSWORD_FILE",
        None,
        "file holding the SASL password (read when `KAFKA_SASL_PASSWORD` is unset; a mounted secret)",
    )
    ssl_cafile: str | None = variable(
        "KAFKA_SSL_CAFILE", None, "PEM CA file that signed the brokers' certificates", shown="system CAs"
    )
    ssl_certfile: str | None = variable("KAFKA_SSL_CERTFILE", None, "client certificate, PEM (mutual TLS)")
    ssl_keyfile: str | None = variable("KAFKA_SSL_KEYFILE", None, "client key, PEM (mutual TLS)")
    ssl_key_password: str | None = variable("KAFKA_SSL_KEY_PASSWORD", None, "password of the client key", secret=True)
    ssl_check_hostname: bool = variable(
        "KAFKA_SSL_CHECK_HOSTNAME",
        True,
        "`false` skips the broker host name check (the certificate is still verified)",
    )

    _file_password: str | None = PrivateAttr(None)

    @field_validator("protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _from_security(cls, value: Any) -> Any:
        """A KafkaSecurity (what code and tests build) is taken field for field."""
        if isinstance(value, KafkaSecurity):
            return {name: getattr(value, name) for name in KafkaSecurity.__dataclass_fields__}
        return value

    @model_validator(mode="after")
    def _coherent(self) -> KafkaSecuritySettings:
        if self.sasl_password is None and self.sasl_password_file:
            try:
                with open(self.sasl_password_file, encoding="utf-8") as handle:
                    self._file_password = handle.read().rstrip("\r\n")
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise BadSetting(f"KAFKA_SASL_PASSWORD_FILE={self.sasl_password_file!r}: {reason}") from None
        try:
            self.security().validate()
        except KafkaSettingsError as exc:
            raise BadSetting(str(exc)) from None
        return self

    def security(self) -> KafkaSecurity:
        """The producers' view: the password from the variable, else from the file."""
        password = self.sasl_password if self.sasl_password is not None else self._file_password
        return KafkaSecurity(
            protocol=self.protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=password,
            ssl_cafile=self.ssl_cafile,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            ssl_key_password=self.ssl_key_password,
            ssl_check_hostname=self.ssl_check_hostname,
        )


class WorkerSettings(BaseModel):
    """`session-tally worker` (and the `producers` child it may start)."""

    model_config = _MODEL

    batch_size: int = variable(
        "SESSION_TALLY_BATCH_SIZE",
        5000,
        "max records per batch (one transaction)",
        flags=["worker --batch-size"],
        ge=1,
        le=100_000,
    )
    batch_timeout_ms: int = variable(
        "SESSION_TALLY_BATCH_TIMEOUT_MS",
        50,
        "max wait to fill a batch, in milliseconds",
        flags=["worker --batch-timeout-ms"],
        ge=0,
        le=60_000,
    )
    instance_id: str | None = variable(
        "SESSION_TALLY_INSTANCE_ID",
        None,
        "static group membership id, unique per worker (a restart within the session timeout causes no "
        "rebalance); e.g. the pod name",
        flags=["worker --instance-id"],
        pattern=r"^[A-Za-z0-9._-]+$",
        rule=TOPIC_RULE,
    )
    graceful_timeout_s: float = variable(
        "SESSION_TALLY_GRACEFUL_TIMEOUT_S",
        15.0,
        "on SIGTERM: seconds to finish the batch in flight, then as many to publish the outbox (stop within "
        "twice this)",
        flags=["worker --graceful-timeout", "producers --graceful-timeout"],
        gt=0,
        le=3600,
    )
    stall_timeout_s: float = variable(
        "SESSION_TALLY_STALL_TIMEOUT_S",
        120.0,
        "seconds records may wait on a partition (or in the outbox) without progress before the health check fails",
        flags=["worker --stall-timeout"],
        gt=0,
    )
    producers: Literal["in-process", "process"] = variable(
        "SESSION_TALLY_PRODUCERS",
        "in-process",
        "`in-process`: the relay, clock and janitor run in the worker's event loop (lowest latency); "
        "`process`: in a child process (spreads CPU over two processes)",
        flags=["worker --producers"],
    )
    http_host: str = variable(
        "SESSION_TALLY_HTTP_HOST",
        "127.0.0.1",
        "address of the worker's health and metrics endpoint (`0.0.0.0` in a container)",
        flags=["worker --http-host"],
        min_length=1,
    )
    http_port: int = variable(
        "SESSION_TALLY_HTTP_PORT",
        8085,
        "port of the health and metrics endpoint (`0`: any free port, `-1`: off); a port in use stops the "
        "worker, exit 2",
        flags=["worker --http-port"],
        ge=-1,
        le=65535,
    )
    log_format: Literal["text", "json"] = variable(
        "SESSION_TALLY_LOG_FORMAT",
        "text",
        "`text` (one line per record) or `json` (one JSON object per line, with the record's event id, topic, "
        "partition and offset where one applies)",
        flags=["worker --log-format", "producers --log-format"],
    )


class WebSettings(BaseModel):
    """`session-tally web`: where it listens, who may sign in, the key that signs its session cookies."""

    model_config = _MODEL

    host: str = variable(
        "SESSION_TALLY_WEB_HOST", "127.0.0.1", "address the web app listens on", flags=["web --host"], min_length=1
    )
    port: int = variable("SESSION_TALLY_WEB_PORT", 8000, "port of the web app", flags=["web --port"], ge=0, le=65535)
    users_file: str = variable(
        "SESSION_TALLY_WEB_USERS",
        "",
        "users file, TOML ([docs/web.md](docs/web.md))",
        flags=["web --users"],
        metavar="FILE",
        shown="the demo users (`web/demo_users.toml`)",
    )
    secret: str = variable(
        "SESSION_TALLY_WEB_SECRET",
        "",
        "key that signs the session cookies (unset: sessions end when the app restarts)",
        secret=True,
        shown="random per start",
    )


class Settings(BaseModel):
    """Everything a session-tally process is configured with (see the module docstring)."""

    model_config = _MODEL

    kafka_bootstrap_servers: str = variable(
        "KAFKA_BOOTSTRAP_SERVERS",
        DEFAULT_KAFKA,
        "Kafka brokers, `host:port[,host:port...]`",
        flags=["topics --bootstrap-servers"],
        metavar="HOST:PORT",
        min_length=1,
    )
    database_url: str = variable(
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        "PostgreSQL (SQLAlchemy URL, psycopg 3); TLS with `?sslmode=verify-full&sslrootcert=ca.pem`, several "
        "servers with `?host=h1,h2&port=p1,p2&target_session_attrs=read-write` "
        "([docs/security.md](docs/security.md), [docs/reliability.md](docs/reliability.md))",
        masked_url=True,
        min_length=1,
    )
    db_schema: str = variable(
        "SESSION_TALLY_DB_SCHEMA", "public", "schema holding the tables (tests use one per test)", min_length=1
    )
    group_id: str = variable(
        "SESSION_TALLY_GROUP_ID",
        "session-tally",
        "consumer group of the workers",
        flags=["worker --group"],
        min_length=1,
    )
    topics: Topics = Field(default_factory=Topics, description="topic names")
    input_partitions: int = variable(
        "SESSION_TALLY_INPUT_PARTITIONS",
        6,
        "partitions of the input topics created by `topics create` and the worker",
        flags=["topics --partitions"],
        ge=1,
    )
    replication_factor: int | None = variable(
        "SESSION_TALLY_REPLICATION_FACTOR",
        None,
        "replication factor of the topics created by `topics create` and the worker",
        flags=["topics --replication-factor"],
        shown="3, or the number of brokers when fewer",
        ge=1,
    )
    min_insync_replicas: int | None = variable(
        "SESSION_TALLY_MIN_INSYNC_REPLICAS",
        None,
        "`min.insync.replicas` set on the topics created",
        flags=["topics --min-insync-replicas"],
        shown="the cluster's",
        ge=1,
    )
    create_topics: bool = variable(
        "SESSION_TALLY_CREATE_TOPICS",
        True,
        "`false`: a worker never creates topics and stops, naming them, when one is missing",
        flags=["worker --create-topics"],
        flag_meaning="create missing topics at start-up as `topics create` does; --no-create-topics: never "
        "(stop with a message naming the missing ones)",
    )
    kafka_security: KafkaSecuritySettings = Field(default_factory=KafkaSecuritySettings)
    park_timeout_s: float = variable(
        "SESSION_TALLY_PARK_TIMEOUT_S",
        30.0,
        "how long an event may wait for an unknown program/meeting before it is rejected (and only once "
        "everything published meanwhile was applied: lag never rejects it)",
        flags=["worker --park-timeout"],
        gt=0,
    )
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of the environment (``os.environ`` unless given); :class:`SettingsError` (one line
        naming the variable) when a value cannot work."""
        from session_tally.settings_env import read

        try:
            return read(cls, environ)
        except ValidationError as exc:
            raise SettingsError(explain(exc, cls)) from None

    @classmethod
    def from_command_line(cls, args: Any) -> Settings:
        """The environment's settings with the flags of ``args`` applied (a flag wins over its variable;
        the flags are those :func:`~session_tally.settings_fields.add_setting_flags` added)."""
        settings = cls.from_env()
        changes = flag_overrides(args)
        return settings.replace(**changes) if changes else settings

    def replace(self, **changes: Any) -> Settings:
        """These settings with ``changes`` (field names; a nested model as a model or a dict of its
        changed fields), validated again."""
        values: dict[str, Any] = dict(self)
        for name, change in changes.items():
            current = values.get(name)
            if isinstance(change, dict) and isinstance(current, BaseModel):
                change = {**dict(current), **change}
            values[name] = change
        try:
            return type(self).model_validate(values)
        except ValidationError as exc:
            raise SettingsError(explain(exc, type(self))) from None

    @property
    def kafka(self) -> KafkaAccess:
        """Bootstrap servers and security together: what every Kafka client of the project is given."""
        return KafkaAccess(self.kafka_bootstrap_servers, self.kafka_security.security())

    def as_env(self) -> dict[str, str]:
        """The environment variables that make ``Settings.from_env()`` in a child process equal these
        settings (every variable, empty for "unset")."""
        return as_env(self)


class LocalServices(BaseModel):
    """The variables of the local-services tooling (`session-tally services`, `make up`), documented with
    the others; session_tally/localsvc reads them."""

    model_config = _MODEL

    services_dir: str = variable(
        "SESSION_TALLY_SERVICES_DIR", ".services", "data, logs, pids and `env` of `services up`"
    )
    services_mode: Literal["auto", "local", "docker"] = variable(
        "SESSION_TALLY_SERVICES_MODE", "auto", "`local` or `docker`: how `services up` runs Kafka and PostgreSQL"
    )
    kafka_version: str = variable(
        "SESSION_TALLY_KAFKA_VERSION",
        "4.4.0",
        "Kafka release `services up` resolves from Maven Central",
        pattern=r"^[0-9]+(\.[0-9]+)*$",
        rule="must be a release number such as 4.4.0",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalServices:
        from session_tally.settings_env import read

        try:
            return read(cls, environ)
        except ValidationError as exc:
            raise SettingsError(explain(exc, cls)) from None


# every settings class, in the order README's table lists them
SETTINGS_CLASSES: tuple[type[BaseModel], ...] = (Settings, LocalServices)
