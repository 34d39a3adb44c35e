"""A command that cannot reach PostgreSQL or Kafka says so in one line and how to fix it (exit 2),
instead of a traceback."""

from __future__ import annotations

import socket

import pytest

from session_tally.cli import main


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the with block ends


def test_worker_without_postgresql_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://u:p@127.0.0.1:{closed_port()}/db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    assert main(["worker", "--http-port", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("session-tally worker: cannot reach PostgreSQL: ") and "make up" in err, err


def test_db_upgrade_without_postgresql_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://u:p@127.0.0.1:{closed_port()}/db")
    assert main(["db", "upgrade"]) == 2
    assert "cannot reach PostgreSQL" in capsys.readouterr().err
