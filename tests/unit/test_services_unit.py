"""`session-tally services` pieces that need no running service."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from session_tally.cli import main
from session_tally.commands.services import env_lines, write_env_file
from session_tally.config import DEFAULT_DATABASE_URL, DEFAULT_KAFKA
from session_tally.localsvc.kafka import LocalKafka, new_cluster_id, server_properties
from session_tally.localsvc.proc import ServiceError


def test_env_lines_match_the_application_defaults() -> None:
    assert env_lines() == [f"KAFKA_BOOTSTRAP_SERVERS={DEFAULT_KAFKA}", f"DATABASE_URL={DEFAULT_DATABASE_URL}"]


def test_env_file_is_sourceable_by_bash(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    write_env_file(env_file)
    shown = subprocess.run(
        ["bash", "-c", f'. "{env_file}" && bash -c \'echo "$KAFKA_BOOTSTRAP_SERVERS $DATABASE_URL"\''],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == [DEFAULT_KAFKA, DEFAULT_DATABASE_URL]  # exported, so child processes see them


def test_cluster_ids_have_the_storage_tool_format() -> None:
    for _ in range(200):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_broker_listens_on_loopback_only(tmp_path: Path) -> None:
    props = dict(line.split("=", 1) for line in server_properties(tmp_path / "data").splitlines() if "=" in line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"


def test_a_broker_that_dies_during_start_up_fails_with_its_log(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    kafka.logs.mkdir(parents=True)
    kafka.server_log.write_text("".join(f"line {n}\n" for n in range(100)) + "ERROR the reason it died\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(ServiceError) as failure:
        kafka._wait_ready(dead.pid, time.monotonic(), 0)
    message = str(failure.value)
    assert "exited during start-up" in message
    assert "ERROR the reason it died" in message
    assert "line 71" in message and "line 70" not in message  # the last 30 lines


def test_status_exits_3_when_nothing_was_started_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import session_tally.localsvc.kafka as kafka_module
    import session_tally.localsvc.postgres as postgres_module

    monkeypatch.setenv("SESSION_TALLY_SERVICES_DIR", str(tmp_path / "services"))
    monkeypatch.setenv("SESSION_TALLY_SERVICES_MODE", "local")
    for module in (kafka_module, postgres_module):  # as if nothing listened on this machine
        monkeypatch.setattr(module, "port_open", lambda *_args, **_kw: False)
        monkeypatch.setattr(module, "find_process", lambda *_args: None)
    assert main(["services", "status"]) == 3
    assert capsys.readouterr().out == "kafka: stopped\npostgres: stopped\n"
