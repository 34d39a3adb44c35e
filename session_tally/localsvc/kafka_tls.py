"""A local Kafka broker that only speaks TLS: SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for clients,
plus an SSL listener that requires a client certificate (mutual TLS). For tests of the clients'
security settings; the certificates are made here with Java's keytool (and openssl, to give the Python
client its key in PEM).

What :func:`make_tls_material` writes to its directory (every store protected by one random password):

- ``ca.p12`` (the test CA, key and certificate) and ``ca.pem`` (its certificate, for ``KAFKA_SSL_CAFILE``);
- ``broker.p12``: the broker's key and a certificate signed by the CA for ``localhost`` and ``127.0.0.1``
  (subject alternative names, so host name checking passes), with the CA chain;
- ``truststore.p12``: the CA, which the broker trusts (its own inter-broker connections and client
  certificates);
- ``client.pem`` / ``client.key``: a client certificate signed by the CA and its unencrypted key.

The controller listener stays PLAINTEXT on loopback (brokers and controllers are this one process).
SCRAM credentials are written into the metadata log when the node is formatted
(``StorageTool format --add-scram``), PLAIN users are listed in the listener's JAAS configuration.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from producers.kafka_access import KafkaAccess, KafkaSecurity
from session_tally.localsvc.kafka import Listener, LocalKafka, NodeConfig
from session_tally.localsvc.proc import HOST, ServiceError, ensure_command, free_port, run

SAN = "SAN=dns:localhost,ip:127.0.0.1"
VALIDITY_DAYS = "30"


@dataclass(frozen=True)
class TlsMaterial:
    directory: Path
    store_password: str
    ca_pem: Path
    broker_keystore: Path
    truststore: Path
    client_cert: Path
    client_key: Path


def _keytool(*args: str) -> None:
    keytool = shutil.which("keytool") or ensure_command("keytool", "openjdk-17-jre-headless", "kafka tls: keytool")
    run([keytool, *args], what=f"keytool {args[0]}", timeout_s=120)


def _signed_key(directory: Path, alias: str, dname: str, extensions: list[str], password: str) -> Path:
    """A key pair in ``<alias>.p12`` whose certificate the CA signed (chain: CA, then the certificate)."""
    store = directory / f"{alias}.p12"
    common = ["-storetype", "PKCS12", "-storepass", password, "-keypass", password]
    _keytool(
        "-genkeypair", "-alias", alias, "-keyalg", "RSA", "-keysize", "2048", "-dname", dname,
        "-validity", VALIDITY_DAYS, "-keystore", str(store), *common,
    )  # fmt: skip
    request, signed = directory / f"{alias}.csr", directory / f"{alias}.crt"
    _keytool("-certreq", "-alias", alias, "-keystore", str(store), "-storepass", password, "-file", str(request))
    ext: list[str] = []
    for extension in extensions:
        ext += ["-ext", extension]
    _keytool(
        "-gencert", "-alias", "ca", "-keystore", str(directory / "ca.p12"), "-storepass", password,
        "-infile", str(request), "-outfile", str(signed), "-rfc", "-validity", VALIDITY_DAYS, *ext,
    )  # fmt: skip
    _keytool("-importcert", "-alias", "ca", "-file", str(directory / "ca.pem"), "-keystore", str(store),
             "-storepass", password, "-noprompt")  # fmt: skip
    _keytool("-importcert", "-alias", alias, "-file", str(signed), "-keystore", str(store), "-storepass", password)
    return store


def make_tls_material(directory: Path) -> TlsMaterial:
    """A CA, a broker key store and trust store, and a client certificate in PEM (see the module doc)."""
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    ca_store, ca_pem = directory / "ca.p12", directory / "ca.pem"
    _keytool(
        "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
        "-dname", "CN=session-tally test CA", "-ext", "bc:c", "-validity", VALIDITY_DAYS,
        "-keystore", str(ca_store), "-storetype", "PKCS12", "-storepass", password, "-keypass", password,
    )  # fmt: skip
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-storepass", password,
             "-file", str(ca_pem))  # fmt: skip
    broker = _signed_key(
        directory, "broker", "CN=localhost", [SAN, "ku:c=digitalSignature,keyEncipherment",
                                              "eku=serverAuth,clientAuth"], password,
    )  # fmt: skip
    truststore = directory / "truststore.p12"
    _keytool("-importcert", "-alias", "ca", "-file", str(ca_pem), "-keystore", str(truststore),
             "-storetype", "PKCS12", "-storepass", password, "-noprompt")  # fmt: skip
    client = _signed_key(directory, "client", "CN=session-tally-client", ["eku=clientAuth"], password)
    client_cert, client_key = directory / "client.pem", directory / "client.key"
    openssl = ensure_command("openssl", "openssl", "kafka tls: openssl (to export the client key as PEM)")
    for what, out in (("-nokeys", client_cert), ("-nocerts", client_key)):
        result = subprocess.run(
            [openssl, "pkcs12", "-in", str(client), "-passin", f"pass:{password}", what, "-nodes", "-out", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"openssl pkcs12 {what} failed: {result.stderr.strip()}")
    client_key.chmod(0o600)
    return TlsMaterial(directory, password, ca_pem, broker, truststore, client_cert, client_key)


class SecureKafka:
    """One KRaft node in ``root`` whose client listeners are SASL_SSL (``bootstrap``) and SSL with
    required client certificates (``mtls_bootstrap``). User ``username`` exists for PLAIN,
    SCRAM-SHA-256 and SCRAM-SHA-512 with one random ``password``."""

    def __init__(self, root: Path, username: str = "alice") -> None:
        self.material = make_tls_material(root / "tls")
        self.username = username
        self.password = secrets.token_hex(12)
        broker_password = secrets.token_hex(12)
        sasl_port, mtls_port, controller = free_port(), free_port(), free_port()
        m = self.material
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="broker" password="{broker_password}" '
            f'user_broker="{broker_password}" user_{username}="{self.password}";'
        )
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        extra = {
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(m.broker_keystore),
            "ssl.keystore.password": m.store_password,
            "ssl.key.password": m.store_password,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(m.truststore),
            "ssl.truststore.password": m.store_password,
            "listener.name.mtls.ssl.client.auth": "required",
        }
        scram_users = [
            f"{mechanism}=[name={username},password={self.password}]"
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        ]
        node = NodeConfig(
            (Listener("SASL_SSL", "SASL_SSL", sasl_port), Listener("MTLS", "SSL", mtls_port)),
            controller,
            extra=extra,
            format_args=tuple(arg for user in scram_users for arg in ("--add-scram", user)),
        )
        self.broker = LocalKafka(root, node=node)
        self.bootstrap = f"{HOST}:{sasl_port}"
        self.mtls_bootstrap = f"{HOST}:{mtls_port}"

    def start(self) -> float | None:
        return self.broker.start()

    def stop(self) -> None:
        self.broker.stop()

    def sasl(self, mechanism: str, password: str | None = None) -> KafkaAccess:
        """How a client reaches the SASL_SSL listener with ``mechanism`` (``password`` to try a wrong one)."""
        security = KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=self.username,
            sasl_password=self.password if password is None else password,
            ssl_cafile=str(self.material.ca_pem),
        )
        return KafkaAccess(self.bootstrap, security.validate())

    def mtls(self, with_certificate: bool = True) -> KafkaAccess:
        """How a client reaches the SSL listener (which refuses clients without a certificate)."""
        m = self.material
        security = KafkaSecurity(
            protocol="SSL",
            ssl_cafile=str(m.ca_pem),
            ssl_certfile=str(m.client_cert) if with_certificate else None,
            ssl_keyfile=str(m.client_key) if with_certificate else None,
        )
        return KafkaAccess(self.mtls_bootstrap, security.validate())
