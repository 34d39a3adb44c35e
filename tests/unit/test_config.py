"""The settings class (session_tally/config.py): every variable documented in README's generated table,
bad values refused in one line naming the variable (by every command), flags that agree with their
variables, child processes configured identically, and `config show` that never prints a secret."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from session_tally.cli import build_parser, main
from session_tally.config import LocalServices, Settings, SettingsError, Topics
from session_tally.config_report import BEGIN, END, all_leaves, markdown_table, show, with_table
from session_tally.settings_fields import MASK

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ["domain", "storage", "consumers", "producers", "session_tally", "web"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable of the developer's shell (or of the shared services' env file) leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("KAFKA_", "SESSION_TALLY_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SESSION_TALLY_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean | (env or {}),
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------------------------ the documentation


def test_readme_table_is_what_the_settings_class_generates() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert BEGIN in readme and END in readme
    assert with_table(readme) == readme, "run `session-tally config table --write README.md`"
    done = _cli("config", "table", "--check", "README.md")
    assert done.returncode == 0, done.stdout + done.stderr


def test_table_check_reports_drift_and_write_repairs_it(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\n| stale |\n{END}\n\nmore\n", encoding="utf-8")
    done = _cli("config", "table", "--check", str(readme))
    assert done.returncode == 1 and "config table --write" in done.stderr
    assert _cli("config", "table", "--write", str(readme)).returncode == 0
    assert readme.read_text(encoding="utf-8") == f"# x\n\n{BEGIN}\n{markdown_table()}{END}\n\nmore\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    assert _cli("config", "table", "--check", str(tmp_path / "plain.md")).returncode == 2


def test_every_variable_has_a_row_with_a_meaning() -> None:
    table = markdown_table()
    names = [leaf.name for leaf in all_leaves()]
    assert len(names) == len(set(names)), "a variable declared twice"
    for leaf in all_leaves():
        assert leaf.field.description, f"{leaf.name} has no meaning"
        assert f"| `{leaf.name}` |" in table
    for new in (
        "SESSION_TALLY_BATCH_SIZE",
        "SESSION_TALLY_BATCH_TIMEOUT_MS",
        "SESSION_TALLY_INSTANCE_ID",
        "SESSION_TALLY_GRACEFUL_TIMEOUT_S",
        "SESSION_TALLY_STALL_TIMEOUT_S",
        "SESSION_TALLY_PRODUCERS",
        "SESSION_TALLY_HTTP_HOST",
        "SESSION_TALLY_HTTP_PORT",
        "SESSION_TALLY_LOG_FORMAT",
    ):
        assert new in names


def test_every_variable_the_code_reads_is_documented() -> None:
    """A variable read straight from os.environ anywhere in the product must be a documented setting."""
    documented = {leaf.name for leaf in all_leaves()}
    read = set()
    for package in PRODUCT:
        for path in (REPO / package).rglob("*.py"):
            read |= set(re.findall(r"environ(?:\.get)?[\[(]\"([A-Z][A-Z0-9_]+)\"", path.read_text(encoding="utf-8")))
    read -= {"XDG_CACHE_HOME"}  # the standard cache location, not ours
    assert read, "the scan found nothing: the pattern is broken"
    assert read <= documented, f"read but not documented: {sorted(read - documented)}"


# ------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("SESSION_TALLY_INPUT_PARTITIONS", "x", "SESSION_TALLY_INPUT_PARTITIONS='x': must be a whole number >= 1"),
        ("SESSION_TALLY_INPUT_PARTITIONS", "0", "SESSION_TALLY_INPUT_PARTITIONS='0': must be a whole number >= 1"),
        ("SESSION_TALLY_PARK_TIMEOUT_S", "0", "SESSION_TALLY_PARK_TIMEOUT_S='0': must be a number > 0"),
        (
            "SESSION_TALLY_BATCH_SIZE",
            "100001",
            "SESSION_TALLY_BATCH_SIZE='100001': must be a whole number from 1 to 100000",
        ),
        (
            "SESSION_TALLY_HTTP_PORT",
            "65536",
            "SESSION_TALLY_HTTP_PORT='65536': must be a whole number from -1 to 65535",
        ),
        ("SESSION_TALLY_GRACEFUL_TIMEOUT_S", "soon", "SESSION_TALLY_GRACEFUL_TIMEOUT_S='soon': must be a number > 0"),
        ("SESSION_TALLY_PRODUCERS", "thread", "SESSION_TALLY_PRODUCERS='thread': must be one of in-process, process"),
        ("SESSION_TALLY_LOG_FORMAT", "xml", "SESSION_TALLY_LOG_FORMAT='xml': must be one of text, json"),
        ("SESSION_TALLY_CREATE_TOPICS", "maybe", "SESSION_TALLY_CREATE_TOPICS='maybe': must be true or false"),
        ("SESSION_TALLY_ADMIN_TOPIC", "a b", "SESSION_TALLY_ADMIN_TOPIC='a b': must be made of letters, digits"),
        ("SESSION_TALLY_WEB_PORT", "http", "SESSION_TALLY_WEB_PORT='http': must be a whole number from 0 to 65535"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "KAFKA_SECURITY_PROTOCOL='TLS': must be one of PLAINTEXT, SSL"),
        ("SESSION_TALLY_SERVICES_MODE", "k8s", "SESSION_TALLY_SERVICES_MODE='k8s': must be one of auto, local, docker"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, line: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        LocalServices.from_env() if name.startswith("SESSION_TALLY_SERVICES") else Settings.from_env()
    assert str(caught.value).startswith("bad setting " + line), caught.value
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("session-tally: bad setting " + line), err


def test_every_command_that_reads_settings_stops_with_that_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSION_TALLY_INPUT_PARTITIONS", "x")
    expected = "session-tally: bad setting SESSION_TALLY_INPUT_PARTITIONS='x': must be a whole number >= 1"
    commands = [
        ["worker"],
        ["producers"],
        ["topics", "check"],
        ["db", "upgrade"],
        ["snapshot"],
        ["offsets", "show"],
        ["web"],
        ["publish", "-"],
        ["config", "show"],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [expected], (command, err)


def test_a_secret_is_masked_in_the_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert "needs KAFKA_SASL_USERNAME" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_subprocess_gets_no_traceback() -> None:
    done = _cli("worker", env={"SESSION_TALLY_BATCH_SIZE": "0"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "session-tally: bad setting SESSION_TALLY_BATCH_SIZE='0': must be a whole number from 1 to 100000"
    )


# --------------------------------------------------------------------------------------- flags


def _parse(*argv: str) -> Settings:
    return Settings.from_command_line(build_parser().parse_args(list(argv)))


def test_flags_override_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_TALLY_BATCH_SIZE", "2000")
    monkeypatch.setenv("SESSION_TALLY_GROUP_ID", "from-env")
    monkeypatch.setenv("SESSION_TALLY_PRODUCERS", "process")
    assert _parse("worker").worker.batch_size == 2000
    settings = _parse("worker", "--batch-size", "500", "--no-create-topics", "--producers", "in-process")
    assert (settings.worker.batch_size, settings.create_topics, settings.worker.producers) == (500, False, "in-process")
    assert settings.group_id == "from-env"  # not given: the variable holds
    assert _parse("worker", "--group", "g2").group_id == "g2"
    assert _parse("producers", "--graceful-timeout", "3").worker.graceful_timeout_s == 3.0
    assert _parse("topics", "check", "--partitions", "12").input_partitions == 12
    web = _parse("web", "--port", "8081", "--users", "u.toml").web
    assert (web.port, web.users_file, web.host) == (8081, "u.toml", "127.0.0.1")


def test_a_bad_flag_is_refused_with_the_rule_of_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["worker", "--batch-size", "0"])
    assert caught.value.code == 2
    assert "argument --batch-size: '0': must be a whole number from 1 to 100000" in capsys.readouterr().err


def test_every_declared_flag_exists_and_names_its_variable() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    for leaf in all_leaves():
        for spec in leaf.flags:
            command, flag = spec.split(" ", 1)
            actions = {option: action for action in commands[command]._actions for option in action.option_strings}
            assert flag in actions, spec
            assert f"${leaf.name}" in (actions[flag].help or ""), spec


def test_no_flag_help_names_a_variable_that_does_not_exist() -> None:
    known = {leaf.name for leaf in all_leaves()}
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert commands is not None
    for name, sub in commands.items():
        for action in sub._actions:
            for variable in re.findall(r"\$((?:SESSION_TALLY|KAFKA)_[A-Z_]+)", action.help or ""):
                assert variable in known, (name, action.option_strings, variable)


# --------------------------------------------------------------------------- child processes


def test_child_processes_get_equal_settings_for_every_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    password = tmp_path / "kafka-password"
    password.write_text("from-a-file\n")
    settings = Settings(
        kafka_bootstrap_servers="a:1,b:2",
        topics=Topics(prefix="t1.", admin_topic="adm"),
        kafka_security={
            "protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "alice",
            "sasl_password_file": str(password),
        },
        park_timeout_s=2.5,
        worker={"batch_size": 123, "instance_id": "w-1", "producers": "process", "http_host": "0.0.0.0"},
        web={"port": 8001, "secret": "s"},
    )
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    child = Settings.from_env()
    assert child == settings
    assert child.kafka.security.sasl_password == "from-a-file"
    assert "from-a-file" not in settings.as_env().values()  # the child reads the file itself
    assert child.topics.admin_events == "t1.adm" and child.topics.path_events == "t1.session-mgmt.path-events"


def test_unset_and_empty_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_TALLY_BATCH_SIZE", "")
    monkeypatch.setenv("SESSION_TALLY_REPLICATION_FACTOR", "")
    assert Settings.from_env() == Settings() == Settings.from_env({})
    assert Settings.from_env().worker.batch_size == 5000 and Settings.from_env().replication_factor is None


def test_replace_validates_again() -> None:
    settings = Settings()
    assert settings.replace(worker={"batch_size": 7}).worker.batch_size == 7
    assert settings.replace(worker={"batch_size": 7}).worker.http_port == 8085
    with pytest.raises(SettingsError, match="SESSION_TALLY_BATCH_SIZE='0': must be"):
        settings.replace(worker={"batch_size": 0})


# -------------------------------------------------------------------------------------- show


def test_show_masks_secrets_and_says_where_each_value_came_from() -> None:
    env = {
        "DATABASE_URL": "postgresql+psycopg://svc:pg-secret@db:5432/st?sslpassword=key-secret",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": "kafka-secret",
        "SESSION_TALLY_WEB_SECRET": "cookie-secret",
        "SESSION_TALLY_BATCHSIZE": "3",
    }
    rows, unknown = show(env)
    by_name = {row.variable: row for row in rows}
    assert by_name["KAFKA_SASL_PASSWORD"].value == MASK and by_name["SESSION_TALLY_WEB_SECRET"].value == MASK
    assert by_name["DATABASE_URL"].value == f"postgresql+psycopg://svc:{MASK}@db:5432/st?sslpassword={MASK}"
    assert by_name["KAFKA_SASL_USERNAME"].value == "svc" and by_name["KAFKA_SASL_USERNAME"].source == "environment"
    assert by_name["SESSION_TALLY_BATCH_SIZE"].source == "default"
    assert unknown == ["SESSION_TALLY_BATCHSIZE"]
    done = _cli("config", "show", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert not any(secret in done.stdout for secret in ("pg-secret", "key-secret", "kafka-secret", "cookie-secret"))
    document = json.loads(done.stdout)
    assert document["unknown"] == ["SESSION_TALLY_BATCHSIZE"]
    assert {row["variable"] for row in document["settings"]} == {leaf.name for leaf in all_leaves()}
    assert "SESSION_TALLY_BATCHSIZE is set but is not a session-tally setting" in done.stderr


def test_repr_never_shows_a_secret() -> None:
    settings = Settings(web={"secret": "cookie-secret"}, kafka_security={"ssl_key_password": "key-secret"})
    assert "cookie-secret" not in repr(settings) and "key-secret" not in repr(settings)
