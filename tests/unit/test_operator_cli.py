"""The operator commands' command line: --help with examples and exit statuses, refusals that need no
service, and one line with status 2 when PostgreSQL or Kafka cannot be reached."""

from __future__ import annotations

import pytest

from session_tally.cli import main
from tests.unit.test_cli_errors import closed_port

COMMANDS = [["rejected", "list"], ["rejected", "redrive"], ["tallies", "republish"], ["audit"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_examples_and_exit_statuses(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "Exit status" in out and f"session-tally {' '.join(command)}" in out, out


def test_redrive_needs_a_filter(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    assert main(["rejected", "redrive", "--yes"]) == 1
    assert "choose the rejections" in capsys.readouterr().err


def test_a_bad_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rejected", "list", "--since", "yesterday"])
    assert exited.value.code == 2
    assert "neither an RFC 3339 instant nor a duration" in capsys.readouterr().err


def test_rejected_list_without_kafka_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    assert main(["rejected", "list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("session-tally rejected: cannot reach Kafka"), err


@pytest.mark.parametrize("command", [["audit", "--program", "p"], ["tallies", "republish"]], ids=" ".join)
def test_without_postgresql_says_so(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://u:p@127.0.0.1:{closed_port()}/db")
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"session-tally {command[0]}: cannot reach PostgreSQL"), err
