"""PostgreSQL over TLS is configured in ``DATABASE_URL`` alone (docs/security.md): libpq's ``sslmode`` and
``sslrootcert`` pass through SQLAlchemy and psycopg unchanged, for the migrations, the worker's pool and
the relay's LISTEN connection alike. Checked against a private server with ``ssl=on`` and a certificate
signed by a test CA (made with openssl)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_tally.localsvc.postgres import DATABASE, PASSWORD, ROLE, LocalPostgres
from session_tally.localsvc.proc import HOST, ensure_command, free_port
from tests.integration.pipeline_helpers import ROOT

pytestmark = pytest.mark.integration


def _openssl(*args: str) -> None:
    openssl = ensure_command("openssl", "openssl", "tests: openssl")
    subprocess.run([openssl, *args], check=True, capture_output=True)


def make_ca_and_server(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1/localhost signed by it, server key)."""
    ca_key, ca = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-subj", f"/CN={name} test CA", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE")  # fmt: skip
    key, request, cert = directory / f"{name}-server.key", directory / f"{name}.csr", directory / f"{name}-server.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
             "-subj", "/CN=localhost")  # fmt: skip
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(extensions))  # fmt: skip
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[LocalPostgres, Path, Path]]:
    """A private server with ssl=on; yields it, the CA that signed its certificate and another CA."""
    import pwd

    base = Path(tempfile.mkdtemp(prefix="st-pgtls-"))
    base.chmod(0o755)
    try:
        ca, cert, key = make_ca_and_server(base, "good")
        other_ca, _c, _k = make_ca_and_server(base, "other")
        if os.geteuid() == 0:  # the server runs as postgres and insists on owning its key (mode 0600)
            entry = pwd.getpwnam("postgres")
            for path in (cert, key):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        key.chmod(0o600)
        server = LocalPostgres(
            base / "server",
            port=free_port(),
            settings={"ssl": "on", "ssl_cert_file": f"'{cert}'", "ssl_key_file": f"'{key}'"},
        )
        server.start()
        try:
            yield server, ca, other_ca
        finally:
            server.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def url(server: LocalPostgres, query: str) -> str:
    return f"postgresql+psycopg://{ROLE}:{PASSWORD}@{HOST}:{server.port}/{DATABASE}?{query}"


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=database_url, SESSION_TALLY_DB_SCHEMA="tls_check")
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_verify_full_in_the_url_gives_an_encrypted_verified_connection(
    tls_server: tuple[LocalPostgres, Path, Path],
) -> None:
    from sqlalchemy import text

    from storage.db import sync_engine

    server, ca, _other = tls_server
    verified = url(server, f"sslmode=verify-full&sslrootcert={ca}")
    engine = sync_engine(verified)
    try:
        with engine.connect() as conn:
            ssl, version = conn.execute(text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).one()
    finally:
        engine.dispose()
    assert ssl is True and version.startswith("TLSv1."), version
    migrated = cli(verified, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr


def test_a_server_certificate_from_another_ca_is_refused_in_one_line(
    tls_server: tuple[LocalPostgres, Path, Path],
) -> None:
    server, _ca, other = tls_server
    result = cli(url(server, f"sslmode=verify-full&sslrootcert={other}"), "db", "upgrade")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "cannot reach PostgreSQL" in lines[0] and "certificate verify failed" in lines[0], lines[0]
