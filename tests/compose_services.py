"""Throwaway Kafka and PostgreSQL containers for the test suite, made from docker-compose.yml itself.

Used by tests/conftest.py only when KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are unset and a Docker engine
answers. Invariant: the containers run the image, the environment and the command of docker-compose.yml's
``kafka`` and ``postgres`` services (the deployed apache/kafka with its KRaft settings, not
testcontainers' default Confluent image), changed only where a throwaway container must differ: Kafka
advertises the host port Docker mapped, and the in-network listener names the container itself.

testcontainers' KafkaContainer drives Confluent's start scripts (/etc/confluent/docker/...), which the
apache/kafka image does not have; hence a generic container that waits for a start-up file holding the
advertised listeners (known only once the port is mapped), then runs the image's own /etc/kafka/docker/run.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
KAFKA_START_FILE = "/tmp/session-tally-advertised.env"
KAFKA_RUN = "/etc/kafka/docker/run"  # the apache/kafka image's CMD
KAFKA_READY_LOG = "Kafka Server started"
EXTERNAL = "EXTERNAL"  # the listener compose publishes to the host


def compose_service(name: str) -> dict[str, Any]:
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    service = services[name]
    assert isinstance(service, dict)
    return service


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def container_port(address: str) -> int:
    """9092 from ``0.0.0.0:9092``."""
    return int(address.rsplit(":", 1)[1])


def kafka_external_port() -> int:
    """The container port of compose's EXTERNAL listener (the one the host reaches)."""
    listeners = dict(
        item.split("://", 1) for item in service_env(compose_service("kafka"))["KAFKA_LISTENERS"].split(",")
    )
    return container_port(listeners[EXTERNAL])


def kafka_advertised(host: str, mapped_port: int) -> str:
    """compose's KAFKA_ADVERTISED_LISTENERS for a throwaway container: EXTERNAL at the port Docker mapped
    on ``host``, every other listener at ``localhost`` (no compose network gives it a name)."""
    env = service_env(compose_service("kafka"))
    out = []
    for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, address = item.split("://", 1)
        if name == EXTERNAL:
            out.append(f"{name}://{host}:{mapped_port}")
        else:
            out.append(f"{name}://localhost:{container_port(address)}")
    return ",".join(out)


def kafka_container_spec() -> tuple[str, dict[str, str], list[str]]:
    """The image, the environment (without the advertised listeners, written at start-up) and the command."""
    service = compose_service("kafka")
    env = service_env(service)
    env.pop("KAFKA_ADVERTISED_LISTENERS")
    command = [
        "sh",
        "-c",
        f"while [ ! -s {KAFKA_START_FILE} ]; do sleep 0.1; done; . {KAFKA_START_FILE}; exec {KAFKA_RUN}",
    ]
    return str(service["image"]), env, command


def kafka_start_file(host: str, mapped_port: int) -> bytes:
    return f"export KAFKA_ADVERTISED_LISTENERS='{kafka_advertised(host, mapped_port)}'\n".encode()


def _put_file(container: Any, path: str, content: bytes) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(name=path.lstrip("/"))
        info.size = len(content)
        info.mode = 0o644
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(content))
    archive.seek(0)
    container.get_wrapped_container().put_archive("/", archive.getvalue())


@contextmanager
def kafka_container(timeout_s: float = 120.0) -> Iterator[str]:
    """compose's Kafka in a throwaway container; yields its bootstrap address."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    image, env, command = kafka_container_spec()
    port = kafka_external_port()
    container = DockerContainer(image).with_exposed_ports(port).with_command(command)
    for key, value in env.items():
        container.with_env(key, value)
    with container:
        host = container.get_container_host_ip()
        mapped = int(container.get_exposed_port(port))
        _put_file(container, KAFKA_START_FILE, kafka_start_file(host, mapped))
        wait_for_logs(container, KAFKA_READY_LOG, timeout=timeout_s)
        yield f"{host}:{mapped}"


def postgres_container_spec() -> tuple[str, dict[str, str], list[str]]:
    service = compose_service("postgres")
    return str(service["image"]), service_env(service), [str(part) for part in service.get("command", [])]


@contextmanager
def postgres_container() -> Iterator[str]:
    """compose's PostgreSQL (image, user, database, server options) in a throwaway container; yields its
    SQLAlchemy URL."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.15
        from testcontainers.postgres import PostgresContainer

    image, env, command = postgres_container_spec()
    postgres = PostgresContainer(
        image,
        username=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        dbname=env["POSTGRES_DB"],
        driver="psycopg",
    )
    if command:
        postgres.with_command(command)
    with postgres:
        yield postgres.get_connection_url()
