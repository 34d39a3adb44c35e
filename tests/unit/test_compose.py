"""docker-compose.yml, the Dockerfile and constraints.txt, checked without a Docker engine.

Always (offline): the compose file against the Compose Specification's JSON Schema
(tests/data/compose/compose-spec.json), then what issue 11 asks of the stack: the worker bound to 0.0.0.0
inside its container and published on 127.0.0.1 only, its health check, a stop grace period above twice the
graceful timeout, ``pg_isready -h``, the monitoring profile and the repository files it mounts, the same
images in the tests' throwaway containers as in compose; the Dockerfile's constrained install, non-root user,
health check and port; constraints.txt pinning every dependency. When a compose CLI is installed (`docker
compose` v2, or Debian's `docker-compose` v1), it must accept the file too. Nothing here starts a container.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from session_tally.config import DEFAULT_DATABASE_URL, Settings, WorkerSettings
from session_tally.config_report import all_leaves
from session_tally.localsvc.kafka import KAFKA_VERSION
from tests.needs import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_services_present(compose: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "worker", "topics", "simulator"} <= set(compose["services"])


def test_every_published_port_is_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for host_ip, host_port, target in _published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port}->{target} beyond 127.0.0.1"
    assert _published({"ports": ["8085:8085"]}) == [("", 8085, 8085)]  # what the check refuses


def test_kafka_has_a_complete_kraft_config_and_two_client_listeners(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"  # the version `services up` runs locally
    assert "127.0.0.1:9092:9092" in kafka["ports"]
    assert kafka["healthcheck"]["test"]
    env = _env(kafka)
    # any KAFKA_* variable replaces the image's defaults, so the whole KRaft config must be there
    for key in (
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_LOG_DIRS",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert env.get(key), f"kafka: {key} missing"
    assert len(env["CLUSTER_ID"]) == 22 and not env["CLUSTER_ID"].startswith("-")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert "127.0.0.1:9092" in advertised.values(), "the host must be told to use the published port"
    in_network = [address for address in advertised.values() if address.startswith("kafka:")]
    assert in_network, "containers need an advertised kafka:<port> listener"

    for name in ("worker", "topics", "simulator"):
        app_env = _env(compose["services"][name])
        assert app_env["KAFKA_BOOTSTRAP_SERVERS"] in in_network, name


def test_postgres_matches_the_application_defaults(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "127.0.0.1:54320:5432" in postgres["ports"]
    assert postgres["healthcheck"]["test"]
    env = _env(postgres)
    assert env["POSTGRES_USER"] == env["POSTGRES_PASSWORD"] == env["POSTGRES_DB"] == "session_tally"
    # from the host the compose database is the same URL as the local one
    assert DEFAULT_DATABASE_URL.endswith("@127.0.0.1:54320/session_tally")
    worker_url = _env(compose["services"]["worker"])["DATABASE_URL"]
    assert worker_url == DEFAULT_DATABASE_URL.replace("127.0.0.1:54320", "postgres:5432")


def test_application_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("worker", "topics", "simulator"):
        assert services[name]["build"] in (".", {"context": "."}), name
    assert services["worker"]["command"] == ["worker"]
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["simulator"]["command"] == ["simulate", "--rate", "200"]
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["kafka"]["condition"] == "service_healthy"
    assert worker_deps["postgres"]["condition"] == "service_healthy"
    assert worker_deps["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "FROM python:3.11-slim" in lines
    # reproducible: the exact versions of constraints.txt, copied in before the install that uses them
    copies = [line for line in lines if line.startswith("COPY ")]
    assert any("constraints.txt" in line.split()[1:-1] for line in copies), "constraints.txt is not copied in"
    for line in copies:
        for source in line.split()[1:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    install = [line for line in lines if "pip install" in line]
    assert install and all("-c constraints.txt" in line for line in install), install
    # a non-root user, set after the install
    users = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER: the application would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    assert lines.index(f"USER {users[-1]}") > max(lines.index(line) for line in install)
    # the worker's port, and a health check on it
    exposed = {int(port) for line in lines if line.startswith("EXPOSE ") for port in line.split()[1:]}
    assert WorkerSettings().http_port in exposed
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert "/healthz" in dockerfile and "SESSION_TALLY_HTTP_PORT" in dockerfile
    assert 'ENTRYPOINT ["session-tally"]' in lines


def test_the_compose_file_is_valid_for_the_compose_specification(compose: dict[str, Any]) -> None:
    """Offline, against the schema Docker Compose itself validates with (tests/data/compose/README.md)."""
    schema = json.loads((ROOT / "tests" / "data" / "compose" / "compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors)
    # the check can fail: a misspelt key is refused
    broken = {**compose, "services": {**compose["services"], "worker": {**compose["services"]["worker"], "comand": []}}}
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def _duration_s(text: str) -> float:
    """Seconds of a compose duration: ``45s``, ``1m30s``, ``500ms``, ``1h``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(number + unit for number, unit in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of every published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), int(port.get("published", 0)), int(port["target"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
        else:
            out.append(("", int(parts[0]) if len(parts) == 2 else 0, int(parts[-1].split("/")[0])))
    return out


def _worker_settings(compose: dict[str, Any]) -> Settings:
    """The settings the worker container runs with (its environment, read by the settings class)."""
    return Settings.from_env(_env(compose["services"]["worker"]))


def test_worker_is_reachable_healthy_and_stopped_gracefully(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    settings = _worker_settings(compose).worker
    # inside its container the endpoint listens on every interface, else the published port leads nowhere
    assert _env(worker)["SESSION_TALLY_HTTP_HOST"] == "0.0.0.0"
    assert settings.http_host == "0.0.0.0"
    # ... and the host reaches it on 127.0.0.1 only
    assert _published(worker) == [("127.0.0.1", settings.http_port, settings.http_port)]
    assert settings.http_port == 8085
    # a health check of the worker's own endpoint
    check = worker["healthcheck"]
    assert not check.get("disable", False)
    command = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
    assert f"127.0.0.1:{settings.http_port}/" in command
    assert _duration_s(check["start_period"]) >= _duration_s(check["interval"])
    # SIGTERM: up to the graceful timeout for the batch in flight, as long again for the outbox
    grace = _duration_s(worker["stop_grace_period"])
    assert grace > 2 * settings.graceful_timeout_s, (grace, settings.graceful_timeout_s)
    assert grace > 2 * WorkerSettings().graceful_timeout_s  # also without the compose file's value


def test_every_application_variable_is_one_the_settings_know(compose: dict[str, Any]) -> None:
    known = {leaf.name for leaf in all_leaves()}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        Settings.from_env(_env(service))  # every value is valid
        ours = [key for key in _env(service) if key.startswith(("SESSION_TALLY_", "KAFKA_")) or key == "DATABASE_URL"]
        assert set(ours) <= known, f"{name}: {sorted(set(ours) - known)} unknown to the settings class"


def test_postgres_health_check_goes_over_tcp(compose: dict[str, Any]) -> None:
    check = compose["services"]["postgres"]["healthcheck"]["test"]
    command = " ".join(check) if isinstance(check, list) else check
    # without -h pg_isready asks the Unix socket, where the image's init server answers before the real one
    assert re.search(r"\bpg_isready\b.*\s-h\s+\S+", command), command


def test_monitoring_profile_and_its_mounted_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    monitoring = {name for name, service in services.items() if "monitoring" in service.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name, service in services.items():  # the default `up` starts no monitoring
        if name not in monitoring:
            assert "profiles" not in service, name
    mounted: set[str] = set()
    for name in monitoring:
        for volume in services[name].get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            assert source.startswith("./"), f"{name}: {source} is not a file of the repository"
            path = ROOT / source
            assert path.exists(), f"{name} mounts {source}, which does not exist"
            mounted.add(path.relative_to(ROOT).as_posix())
    assert {"compose/prometheus.yml", "compose/grafana/datasources.yml", "compose/grafana/dashboards.yml"} <= mounted
    assert "docs/monitoring" in mounted
    assert (ROOT / "docs" / "monitoring" / "grafana-dashboard.json").is_file()
    json.loads((ROOT / "docs" / "monitoring" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    for grafana_file in sorted((ROOT / "compose" / "grafana").glob("*.yml")):
        assert isinstance(yaml.safe_load(grafana_file.read_text(encoding="utf-8")), dict), grafana_file
    # Prometheus scrapes the worker at the port the worker listens on
    prometheus = yaml.safe_load((ROOT / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [sd for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", [])]
    port = _worker_settings(compose).worker.http_port
    assert any(target["names"] == ["worker"] and target["port"] == port for target in targets), targets


def test_tests_run_the_images_compose_runs(compose: dict[str, Any]) -> None:
    """tests/compose_services.py (the throwaway containers of tests/conftest.py) takes compose's images,
    environment and command, not testcontainers' defaults (Confluent's cp-kafka)."""
    from tests import compose_services

    image, env, _command = compose_services.kafka_container_spec()
    assert image == compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert env == {k: v for k, v in _env(compose["services"]["kafka"]).items() if k != "KAFKA_ADVERTISED_LISTENERS"}
    assert compose_services.kafka_external_port() == 9092
    advertised = compose_services.kafka_advertised("127.0.0.1", 49153)
    assert "EXTERNAL://127.0.0.1:49153" in advertised.split(",")
    image, env, command = compose_services.postgres_container_spec()
    assert image == compose["services"]["postgres"]["image"]
    assert env == _env(compose["services"]["postgres"])
    assert command == compose["services"]["postgres"]["command"]
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert "from tests.compose_services import kafka_container" in conftest
    assert "KafkaContainer" not in conftest


def test_compose_cli_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        unavailable("no compose CLI (Debian: apt-get install --no-install-recommends docker-compose)")
        return
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def test_constraints_pin_every_dependency_and_what_it_needs() -> None:
    """constraints.txt (the Dockerfile's and `make venv`'s install) pins every runtime and test dependency
    of pyproject.toml and, transitively, what they require here, each to a version pyproject allows."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and "[" not in name, f"constraints.txt: not name==version: {line!r}"
            pins[_name(name)] = Version(version)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    direct = [Requirement(text) for text in project["dependencies"]]
    direct += [Requirement(text) for extra in project["optional-dependencies"].values() for text in extra]
    for requirement in direct:
        assert _name(requirement.name) in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[_name(requirement.name)], prereleases=True), requirement
    # then what those need, as installed here: (requirement, extras of the package that asked for it)
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, frozenset[str]]] = [(requirement, frozenset()) for requirement in direct]
    while todo:
        requirement, asked_with = todo.pop()
        marker = requirement.marker
        if marker and not any(marker.evaluate({"extra": extra}) for extra in (*asked_with, "")):
            continue
        name, extras = _name(requirement.name), frozenset(requirement.extras)
        assert name in pins, f"{requirement.name} (needed by a dependency) is not pinned in constraints.txt"
        if (name, extras) not in seen:
            seen.add((name, extras))
            todo += [(Requirement(text), extras) for text in metadata.distribution(name).requires or []]
    # main's runtime dependencies since the observability work (its pyproject.toml), pinned ahead of the merge
    assert {"prometheus-client", "python-json-logger", "orjson"} <= set(pins)
