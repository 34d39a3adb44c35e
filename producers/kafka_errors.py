"""One line that says why a Kafka client could not connect, and what to change.

aiokafka raises a bare ``KafkaConnectionError("Unable to bootstrap from [...]")`` whatever went wrong and
only logs the reason (refused connection, TLS handshake, refused SASL credentials) as
``Unable connect to "host:port": <reason>`` on the ``aiokafka`` logger. :class:`BootstrapFailures`
keeps the last such reason (installed once by the CLI; its presence also keeps Python from printing
the raw log line on commands that configure no logging), and :func:`kafka_problem` turns the
exception plus that reason into the line a command prints before exiting with status 2.
"""

from __future__ import annotations

import logging
import threading

from producers.kafka_access import KafkaSettingsError, KafkaTarget, kafka_access

HINT_SERVICES = "start the services (`make up`, then `. .services/env`) or set KAFKA_BOOTSTRAP_SERVERS"


class BootstrapFailures(logging.Handler):
    """Remembers the reason of the latest failed bootstrap connection that aiokafka logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Unable connect to") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            self.last = str(args[-1])


_installed: BootstrapFailures | None = None
_lock = threading.Lock()


def install() -> BootstrapFailures:
    """Attach the one :class:`BootstrapFailures` handler to the ``aiokafka`` logger (idempotent)."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = BootstrapFailures()
            logging.getLogger("aiokafka").addHandler(_installed)
        return _installed


def kafka_problem(exc: BaseException, kafka: KafkaTarget | None = None) -> str | None:
    """The one-line explanation of ``exc`` when it means "cannot use Kafka" (else None)."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    if isinstance(exc, KafkaSettingsError):
        return str(exc)
    if not isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return None
    where = f" at {kafka_access(kafka)}" if kafka is not None else ""
    reason = _installed.last if _installed is not None else None
    if reason is None:
        return f"cannot reach Kafka{where}: {exc}; {HINT_SERVICES}"
    lowered = reason.lower()
    if "saslauthenticationfailed" in lowered or "authentication failed" in lowered:
        hint = "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
        return f"Kafka{where} refused the credentials: {_short(reason)}; {hint}"
    if "unsupportedsaslmechanism" in lowered:
        return f"Kafka{where} does not offer that SASL mechanism: {_short(reason)}; check KAFKA_SASL_MECHANISM"
    if "certificate" in lowered or "ssl" in lowered:
        hint = "check KAFKA_SSL_CAFILE (the CA that signed the brokers' certificates) and KAFKA_SSL_CHECK_HOSTNAME"
        return f"TLS with Kafka{where} failed: {_short(reason)}; {hint}"
    if "closed" in lowered:
        hint = (
            "does the listener expect another KAFKA_SECURITY_PROTOCOL, or a client certificate "
            "(KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE)?"
        )
        return f"Kafka{where} closed the connection: {_short(reason)}; {hint}"
    return f"cannot reach Kafka{where}: {_short(reason)}; {HINT_SERVICES}"


def _short(reason: str) -> str:
    return " ".join(reason.split())[:300]
