"""How every Kafka client of session-tally reaches the cluster: bootstrap servers plus TLS and SASL.

One rule, one place: :func:`kafka_options` turns a :class:`KafkaAccess` into the keyword arguments of
aiokafka's ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``, and
:func:`faststream_security` into the ``security=`` object of FastStream's ``KafkaBroker`` (built from
the same options, so the worker's subscribers and health ping connect exactly like the relay, the
publisher, ``topics``, ``snapshot`` and the benchmarks).

- ``PLAINTEXT``: no TLS, no authentication (the local broker of ``services up``);
- ``SSL``: TLS; the broker's certificate is checked against ``ssl_cafile`` (else the system's CAs) and,
  unless ``ssl_check_hostname`` is off, its name against the bootstrap host; ``ssl_certfile`` /
  ``ssl_keyfile`` give a client certificate when the broker asks for one (mutual TLS);
- ``SASL_PLAINTEXT`` / ``SASL_SSL``: the same, plus SASL ``PLAIN``, ``SCRAM-SHA-256`` or
  ``SCRAM-SHA-512`` with ``sasl_username`` / ``sasl_password`` (``SASL_PLAINTEXT`` sends the password in
  clear for PLAIN: only on a trusted network).

A plain ``str`` wherever a :data:`KafkaTarget` is accepted means "these bootstrap servers, PLAINTEXT".
Settings are validated when they are read (:meth:`KafkaSecurity.validate`), so a typo fails at start-up
with one line, not at the first connection. Nothing here imports aiokafka or FastStream at module level.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSettingsError(ValueError):
    """The Kafka security settings cannot work (unknown protocol, missing password, unreadable file)."""


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings of a client (the password is never shown by ``repr``)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def validate(self) -> KafkaSecurity:
        """``self`` when the settings are coherent; else :class:`KafkaSettingsError` saying what to fix, as
        ``VARIABLE='value': the rule`` (session_tally.config prints it after "bad setting")."""
        if self.protocol not in PROTOCOLS:
            raise KafkaSettingsError(
                f"KAFKA_SECURITY_PROTOCOL={self.protocol!r}: must be one of {', '.join(PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise KafkaSettingsError(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism or ''!r}: with KAFKA_SECURITY_PROTOCOL={self.protocol} "
                    f"it must be one of {', '.join(MECHANISMS)}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise KafkaSettingsError(
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol!r}: needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
                    "(or KAFKA_SASL_PASSWORD_FILE)"
                )
        if self.uses_ssl:
            for variable, path in (
                ("KAFKA_SSL_CAFILE", self.ssl_cafile),
                ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
                ("KAFKA_SSL_KEYFILE", self.ssl_keyfile),
            ):
                if path and not Path(path).is_file():
                    raise KafkaSettingsError(f"{variable}={path!r}: no such file")
            if self.ssl_keyfile and not self.ssl_certfile:
                raise KafkaSettingsError(f"KAFKA_SSL_KEYFILE={self.ssl_keyfile!r}: needs KAFKA_SSL_CERTFILE as well")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (None without TLS): the CA file or the system's CAs, the client
        certificate when given, host name checking unless turned off (the certificate is checked anyway)."""
        if not self.uses_ssl:
            return None
        from aiokafka.helpers import create_ssl_context

        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
                password=self.ssl_key_password or None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSettingsError(f"cannot load the Kafka TLS files: {exc}") from exc
        if not self.ssl_check_hostname:
            context.check_hostname = False  # still verifies the chain: CERT_REQUIRED stays
        return context


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class KafkaAccess:
    """Where the cluster is and how to talk to it. ``str()`` is the bootstrap list (for messages)."""

    bootstrap_servers: str
    security: KafkaSecurity = PLAINTEXT

    def __str__(self) -> str:
        return self.bootstrap_servers

    def servers(self) -> list[str]:
        """The bootstrap list as a list (FastStream's ``KafkaBroker`` takes one string as one host)."""
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]


KafkaTarget = KafkaAccess | str


def kafka_access(target: KafkaTarget) -> KafkaAccess:
    return target if isinstance(target, KafkaAccess) else KafkaAccess(target)


def kafka_options(target: KafkaTarget) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin) to reach ``target``."""
    access = kafka_access(target)
    security = access.security
    options: dict[str, Any] = {"bootstrap_servers": access.bootstrap_servers}
    if security.protocol == "PLAINTEXT":
        return options
    options["security_protocol"] = security.protocol
    context = security.ssl_context()
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


def faststream_security(target: KafkaTarget) -> Any:
    """The ``security=`` argument of FastStream's ``KafkaBroker`` for ``target`` (None for PLAINTEXT),
    made from :func:`kafka_options` so that it cannot disagree with the aiokafka clients."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    options = kafka_options(target)
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    context = options.get("ssl_context")
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    sasl = kind[options["sasl_mechanism"]]
    return sasl(
        options["sasl_plain_username"],
        options["sasl_plain_password"],
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )
