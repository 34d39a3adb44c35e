"""Kafka TLS/SASL settings: read from the environment, validated, carried to child processes, and turned
into the same options for aiokafka and FastStream (producers/kafka_access.py). No broker needed: the
connections themselves are tested in tests/integration/test_kafka_sasl_ssl.py."""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
from pathlib import Path

import pytest

from producers.kafka_access import (
    KafkaAccess,
    KafkaSecurity,
    KafkaSettingsError,
    faststream_security,
    kafka_options,
)
from session_tally.cli import main
from session_tally.config import Settings, SettingsError


@pytest.fixture(scope="module")
def pem_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate and its key in PEM (openssl), usable as a CA file and as a client pair."""
    from session_tally.localsvc.proc import ensure_command

    directory = tmp_path_factory.mktemp("pem")
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = ensure_command("openssl", "openssl", "tests: openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=session-tally-test", "-days", "1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
def ca_file(pem_pair: tuple[str, str]) -> str:
    return pem_pair[0]


def scram(ca: str | None = None, **changes: object) -> KafkaSecurity:
    fields: dict[str, object] = {
        "protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alice",
        "sasl_password": "s3cret",
        "ssl_cafile": ca,
    }
    fields.update(changes)
    return KafkaSecurity(**fields)  # type: ignore[arg-type]


def test_plaintext_is_just_the_bootstrap_servers() -> None:
    assert kafka_options("127.0.0.1:9092") == {"bootstrap_servers": "127.0.0.1:9092"}
    assert kafka_options(KafkaAccess("a:1,b:2")) == {"bootstrap_servers": "a:1,b:2"}
    assert faststream_security("a:1") is None
    assert KafkaAccess("a:1, b:2,").servers() == ["a:1", "b:2"]


def test_sasl_ssl_options_for_aiokafka_and_faststream_agree(ca_file: str) -> None:
    from faststream.security import SASLScram512

    options = kafka_options(KafkaAccess("h:9093", scram(ca_file)))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("alice", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED

    security = faststream_security(KafkaAccess("h:9093", scram(ca_file)))
    assert isinstance(security, SASLScram512)
    assert security.use_ssl and security.username == "alice" and security.password == "s3cret"
    assert isinstance(security.ssl_context, ssl.SSLContext)


def test_other_protocols_map_to_their_faststream_objects(ca_file: str) -> None:
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256

    plain = faststream_security(KafkaAccess("h:1", KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "alice", "pw").validate()))
    assert isinstance(plain, SASLPlaintext) and not plain.use_ssl and plain.ssl_context is None
    assert (
        kafka_options(KafkaAccess("h:1", KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "alice", "pw"))).get("ssl_context")
        is None
    )
    s256 = faststream_security(KafkaAccess("h:1", scram(ca_file, sasl_mechanism="SCRAM-SHA-256")))
    assert isinstance(s256, SASLScram256) and s256.use_ssl
    tls = faststream_security(KafkaAccess("h:1", KafkaSecurity("SSL", ssl_cafile=ca_file)))
    assert type(tls) is BaseSecurity and tls.use_ssl and tls.ssl_context is not None


def test_a_client_certificate_is_loaded(pem_pair: tuple[str, str]) -> None:
    cert, key = pem_pair
    security = KafkaSecurity("SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key).validate()
    assert isinstance(kafka_options(KafkaAccess("h:1", security))["ssl_context"], ssl.SSLContext)
    with pytest.raises(KafkaSettingsError, match="cannot load the Kafka TLS files"):
        kafka_options(KafkaAccess("h:1", KafkaSecurity("SSL", ssl_certfile=key, ssl_keyfile=key)))


def test_host_name_checking_can_be_turned_off_but_not_verification(ca_file: str) -> None:
    context = kafka_options(KafkaAccess("h:1", scram(ca_file, ssl_check_hostname=False)))["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (KafkaSecurity(protocol="SASL_TLS"), "KAFKA_SECURITY_PROTOCOL='SASL_TLS': must be one of"),
        (KafkaSecurity("SASL_SSL", None, "alice", "pw"), "KAFKA_SASL_MECHANISM='': with KAFKA_SECURITY"),
        (KafkaSecurity("SASL_SSL", "GSSAPI", "alice", "pw"), "KAFKA_SASL_MECHANISM='GSSAPI': with"),
        (KafkaSecurity("SASL_SSL", "PLAIN", "alice", None), "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        (KafkaSecurity("SSL", ssl_cafile="/nonexistent/ca.pem"), "KAFKA_SSL_CAFILE='/nonexistent/ca.pem': no such"),
    ],
)
def test_settings_that_cannot_work_are_refused(security: KafkaSecurity, message: str) -> None:
    with pytest.raises(KafkaSettingsError, match=re.escape(message)):
        security.validate()


def test_a_key_without_its_certificate_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("not used")
    with pytest.raises(KafkaSettingsError, match=r"KAFKA_SSL_KEYFILE='.*': needs KAFKA_SSL_CERTFILE"):
        KafkaSecurity("SSL", ssl_keyfile=str(key)).validate()


def test_an_unreadable_ca_file_fails_with_a_settings_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("this is not a certificate")
    with pytest.raises(KafkaSettingsError, match="cannot load the Kafka TLS files"):
        kafka_options(KafkaAccess("h:1", KafkaSecurity("SSL", ssl_cafile=str(bogus))))


def test_the_password_never_shows_in_repr(ca_file: str) -> None:
    shown = repr(Settings(kafka_security=scram(ca_file, ssl_key_password="keypw")))
    assert "s3cret" not in shown and "keypw" not in shown and "alice" in shown


def _clear_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("KAFKA_", "SESSION_TALLY_")):
            monkeypatch.delenv(name)


def test_child_processes_get_the_same_settings(monkeypatch: pytest.MonkeyPatch, ca_file: str) -> None:
    _clear_kafka_env(monkeypatch)
    settings = Settings(
        kafka_bootstrap_servers="a:1,b:2",
        kafka_security=scram(ca_file, ssl_check_hostname=False),
        replication_factor=3,
        min_insync_replicas=2,
        create_topics=False,
    )
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == settings
    assert Settings.from_env().kafka == KafkaAccess("a:1,b:2", settings.kafka_security.security())


def test_defaults_round_trip_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_kafka_env(monkeypatch)
    for name, value in Settings().as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == Settings()


def test_the_password_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clear_kafka_env(monkeypatch)
    secret = tmp_path / "kafka-password"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(secret))
    security = Settings.from_env().kafka.security  # the password read from the file
    assert (security.protocol, security.sasl_mechanism, security.sasl_password) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
        "from-a-file",
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SESSION_TALLY_CREATE_TOPICS", "maybe", "SESSION_TALLY_CREATE_TOPICS='maybe': must be true or false"),
        ("SESSION_TALLY_REPLICATION_FACTOR", "three", "='three': must be a whole number >= 1"),
        ("SESSION_TALLY_MIN_INSYNC_REPLICAS", "0", "='0': must be a whole number >= 1"),
        ("KAFKA_SASL_PASSWORD_FILE", "/nonexistent/secret", "KAFKA_SASL_PASSWORD_FILE='/nonexistent/secret': No such"),
    ],
)
def test_bad_variables_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    _clear_kafka_env(monkeypatch)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()


def test_the_cli_says_what_to_fix_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clear_kafka_env(monkeypatch)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    for command in (["topics", "check"], ["snapshot"], ["worker", "--http-port", "-1"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in err[0], (command, err)


def test_kafka_problem_names_the_cause_that_aiokafka_only_logged() -> None:
    from aiokafka.errors import KafkaConnectionError

    from producers import kafka_errors

    memory = kafka_errors.install()
    log = logging.getLogger("aiokafka")
    exc = KafkaConnectionError("Unable to bootstrap from [('h', 1, 2)]")
    cases = {
        "[Error 58] SaslAuthenticationFailed: Authentication failed: Invalid username or password": "refused the "
        "credentials",
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed": "TLS with Kafka at h:1 failed",
        "KafkaConnectionError: Connection at h:1 closed": "closed the connection",
        "[Errno 111] Connect call failed ('h', 1)": "cannot reach Kafka at h:1",
    }
    for reason, expected in cases.items():
        log.error('Unable connect to "%s:%s": %s', "h", 1, reason)
        assert memory.last == reason
        problem = kafka_errors.kafka_problem(exc, "h:1")
        assert problem is not None and expected in problem and "\n" not in problem, problem
    assert kafka_errors.kafka_problem(ValueError("other"), "h:1") is None
