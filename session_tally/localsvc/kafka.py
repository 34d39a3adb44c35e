"""A single-node Apache Kafka broker (KRaft, combined broker + controller) from Maven Central jars.

Layout (``S`` is the services directory, ``C`` the user cache):

- ``C/kafka-<version>/lib/``: the broker's classpath, resolved by Maven from ``session_tally/kafka/pom.xml``
  (``lib/.resolved`` lists the jars and the POM's hash; anything else means "resolve again").
- ``S/kafka/server.properties`` (rewritten on every start), ``S/kafka/cluster-id``, ``S/kafka/data/`` (the
  log directory, formatted once), ``S/kafka/logs/server.log`` (log4j), ``S/kafka/kafka.out`` (the JVM's
  own stdout/stderr) and ``S/kafka/kafka.pid``.

The broker listens on 127.0.0.1:9092 (clients) and 127.0.0.1:9093 (controller) only.

The same class runs the other local brokers the tests need, from a :class:`NodeConfig` (ports,
listeners, node id, voters, replication, extra properties) in ``S/<name>/``: a private single node on
free ports (tests/integration/faults.py), the nodes of a cluster (``kafka_cluster.py``) and a broker
with TLS/SASL listeners only (``kafka_tls.py``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from session_tally.localsvc.proc import (
    HOST,
    ServiceError,
    cache_dir,
    cmdline,
    ensure_command,
    file_lock,
    find_process,
    log_excerpt,
    pid_alive,
    port_open,
    read_pid,
    run,
    say,
    terminate,
    wait_until,
)

KAFKA_VERSION = os.environ.get("SESSION_TALLY_KAFKA_VERSION", "") or "4.4.0"
KAFKA_PORT = 9092
CONTROLLER_PORT = 9093
READY_DEADLINE_S = 90.0
STOP_DEADLINE_S = 60.0
HEAP_OPTS = ("-Xms128m", "-Xmx512m")
JVM_OPTS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
MAIN_CLASS = "kafka.Kafka"
READY_LINE = "Kafka Server started"

BOOTSTRAP = f"{HOST}:{KAFKA_PORT}"


def new_cluster_id() -> str:
    """22 characters of URL-safe base64 (a random UUID), never starting with '-' (StorageTool's rule)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


@dataclass(frozen=True)
class Listener:
    """A client listener: its name (``PLAINTEXT``, ``SASL_SSL``, ``MTLS``...), protocol and port."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class NodeConfig:
    """One KRaft node (combined broker + controller) on loopback, alone or in a cluster.

    ``listeners[0]`` is the listener that ``bootstrap`` names and that brokers use between themselves;
    ``voters`` lists ``(node id, controller port)`` of every controller (empty: this node alone);
    ``replication`` is the replication factor of new topics and internal topics (``min.insync.replicas``
    is one less, at least 1); ``extra`` adds broker properties (TLS, SASL) and ``format_args`` arguments
    of ``StorageTool format`` (SCRAM users)."""

    listeners: tuple[Listener, ...]
    controller_port: int
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    replication: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    format_args: tuple[str, ...] = ()

    @classmethod
    def single(cls, port: int = KAFKA_PORT, controller_port: int = CONTROLLER_PORT) -> NodeConfig:
        return cls((Listener("PLAINTEXT", "PLAINTEXT", port),), controller_port)

    @property
    def port(self) -> int:
        return self.listeners[0].port

    @property
    def min_insync_replicas(self) -> int:
        return max(1, self.replication - 1)


def server_properties(
    data_dir: Path, port: int = KAFKA_PORT, controller_port: int = CONTROLLER_PORT, node: NodeConfig | None = None
) -> str:
    """The broker configuration: Kafka's defaults except what a local node (or cluster) needs."""
    node = node or NodeConfig.single(port, controller_port)
    voters = node.voters or ((node.node_id, node.controller_port),)
    replicas, min_isr = str(node.replication), str(node.min_insync_replicas)
    protocols = {"CONTROLLER": "PLAINTEXT"} | {listener.name: listener.protocol for listener in node.listeners}
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{n}@{HOST}:{p}" for n, p in voters),
        "listeners": ",".join(
            [f"{listener.name}://{HOST}:{listener.port}" for listener in node.listeners]
            + [f"CONTROLLER://{HOST}:{node.controller_port}"]
        ),
        "advertised.listeners": ",".join(f"{listener.name}://{HOST}:{listener.port}" for listener in node.listeners),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": node.listeners[0].name,
        "listener.security.protocol.map": ",".join(f"{name}:{protocol}" for name, protocol in protocols.items()),
        "log.dirs": str(data_dir),
        # internal topics replicated like the others (one replica on a single node)
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        # tests start consumer groups all the time: no 3 s wait before the first assignment
        "group.initial.rebalance.delay.ms": "0",
        # the cleaner (compacted topics) would otherwise take 128 MB of the 512 MB heap
        "log.cleaner.dedupe.buffer.size": "2097152",
        # topics are created by `session-tally topics create`, never by a typo in a producer
        "auto.create.topics.enable": "false",
        "num.partitions": "6",
        **node.extra,
    }
    lines = ["# Written by `session-tally services up` on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


class LocalKafka:
    """The broker of ``services`` (a state directory). Other ports than 9092/9093 give a second, private
    broker (the fault tests restart one without disturbing the shared one); a ``node`` configuration
    makes it one node of a cluster (``kafka_cluster.py``) or a broker with TLS/SASL (``kafka_tls.py``),
    in ``services/<name>``."""

    def __init__(
        self,
        services: Path,
        version: str = KAFKA_VERSION,
        port: int = KAFKA_PORT,
        controller_port: int = CONTROLLER_PORT,
        *,
        node: NodeConfig | None = None,
        name: str = "kafka",
        cluster_id: str | None = None,
        heap: tuple[str, ...] = HEAP_OPTS,
    ) -> None:
        self.node = node or NodeConfig.single(port, controller_port)
        self.version = version
        self.port = self.node.port
        self.controller_port = self.node.controller_port
        self.node_id = self.node.node_id
        self.bootstrap = f"{HOST}:{self.port}"
        self.heap = heap
        self.cluster_id = cluster_id
        self.root = services / name
        self.data = self.root / "data"
        self.logs = self.root / "logs"
        self.server_log = self.logs / "server.log"
        self.stdout_log = self.root / "kafka.out"
        self.pid_file = self.root / "kafka.pid"
        self.properties = self.root / "server.properties"
        self.log4j = self.root / "log4j2.properties"
        self.cluster_id_file = self.root / "cluster-id"
        self.home = cache_dir() / f"kafka-{version}"
        self.lib = self.home / "lib"

    # --- state -------------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The recorded pid, when that process is alive and is our broker."""
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        if MAIN_CLASS not in cmdline(pid) or str(self.properties) not in cmdline(pid):
            return None  # the pid was reused by an unrelated process
        return pid

    def ready(self) -> bool:
        return port_open(self.port)

    def foreign(self) -> tuple[int, str] | None:
        """A broker that `session-tally services` started from another directory: (pid, its state dir)."""
        found = find_process(MAIN_CLASS, "/kafka/server.properties")
        if found is None or found[0] == self.pid():
            return None
        properties = next((arg for arg in found[1].split() if arg.endswith("/kafka/server.properties")), "")
        return found[0], str(Path(properties).parent.parent)

    def describe(self) -> tuple[bool, str]:
        pid = self.pid()
        if pid is None:
            if port_open(self.port):
                other = self.foreign()
                if other is not None:
                    return True, f"running (pid {other[0]}) on {self.bootstrap}, started from {other[1]}, not here"
                return False, f"not started from {self.root}, but something else listens on {self.bootstrap}"
            return False, "stopped"
        if self.ready():
            return True, f"running (pid {pid}) on {self.bootstrap}, Kafka {self.version}"
        return False, f"process {pid} runs but {self.bootstrap} does not answer"

    # --- install ----------------------------------------------------------------------------------

    def _java(self) -> str:
        java = ensure_command("java", "openjdk-17-jre-headless", "kafka: no java on PATH")
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
        match = re.search(r'version "(\d+)', out)
        if match and int(match.group(1)) < 17:
            raise ServiceError(f"kafka: Kafka 4.x needs Java 17 or newer; {java} is {match.group(0)}")
        return java

    def _mvn(self) -> str:
        return ensure_command("mvn", "maven", "kafka: no mvn on PATH (needed once to resolve the broker's jars)")

    @staticmethod
    def _packaged(name: str) -> bytes:
        return (resources.files("session_tally") / "kafka" / name).read_bytes()

    def _lib_complete(self, pom_hash: str) -> bool:
        marker = self.lib / ".resolved"
        try:
            lines = marker.read_text().splitlines()
        except OSError:
            return False
        if not lines or lines[0] != f"pom-sha256={pom_hash}":
            return False
        jars = lines[1:]
        return bool(jars) and all((self.lib / jar).is_file() for jar in jars)

    def ensure_jars(self) -> None:
        """Resolve the broker's jars into the cache once; again only when missing or incomplete."""
        pom = self._packaged("pom.xml")
        pom_hash = hashlib.sha256(pom + self.version.encode()).hexdigest()
        if self._lib_complete(pom_hash):
            return
        with file_lock(self.home / ".lock"):
            if self._lib_complete(pom_hash):  # another process resolved it meanwhile
                return
            mvn = self._mvn()
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "pom.xml").write_bytes(pom)
            staging = self.home / "lib.partial"
            shutil.rmtree(staging, ignore_errors=True)
            say(
                f"kafka: resolving Apache Kafka {self.version} jars from Maven Central into {self.lib} "
                "(first time only; ~15 s with a cold ~/.m2)"
            )
            started = time.monotonic()
            run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(self.home / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={staging}",
                    f"-Dkafka.version={self.version}",
                ],
                what="kafka: mvn dependency:copy-dependencies",
                cwd=self.home,
                timeout_s=900,
            )
            jars = sorted(p.name for p in staging.glob("*.jar"))
            if not any(j.startswith(f"kafka_2.13-{self.version}") for j in jars):
                raise ServiceError(f"kafka: Maven resolved no kafka_2.13-{self.version} jar into {staging}")
            (staging / ".resolved").write_text("\n".join([f"pom-sha256={pom_hash}", *jars]) + "\n")
            shutil.rmtree(self.lib, ignore_errors=True)  # never mix two versions in one classpath
            staging.rename(self.lib)
            say(f"kafka: resolved {len(jars)} jars in {time.monotonic() - started:.1f} s")

    # --- start / stop -------------------------------------------------------------------------------

    def _classpath(self) -> str:
        return str(self.lib / "*")

    def _java_cmd(self, java: str, main: str, *args: str) -> list[str]:
        return [
            java,
            *self.heap,
            *JVM_OPTS,
            f"-Dkafka.logs.dir={self.logs}",
            f"-Dlog4j2.configurationFile={self.log4j}",
            "-cp",
            self._classpath(),
            main,
            *args,
        ]

    def _configure(self) -> None:
        for directory in (self.root, self.data, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(server_properties(self.data, node=self.node))
        self.log4j.write_bytes(self._packaged("log4j2.properties"))

    def _format_once(self, java: str) -> None:
        if (self.data / "meta.properties").exists():
            return
        if self.cluster_id_file.exists():
            cluster_id = self.cluster_id_file.read_text().strip()
        else:
            cluster_id = self.cluster_id or new_cluster_id()
            self.cluster_id_file.write_text(cluster_id + "\n")
        say(f"kafka: formatting {self.data} (cluster id {cluster_id})")
        run(
            self._java_cmd(
                java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties),
                "--ignore-formatted",
                *self.node.format_args,
            ),
            what="kafka: StorageTool format",
            timeout_s=120,
        )

    def start(self) -> float | None:
        """Start the broker unless it runs; return the start-up time in seconds (None: was running)."""
        if (pid := self.pid()) is not None:
            if self.ready():
                say(f"kafka: already running (pid {pid}) on {self.bootstrap}")
                return None
            say(f"kafka: process {pid} is starting; waiting for {self.bootstrap}")
            return self._wait_ready(pid, time.monotonic(), 0)
        other = self.foreign()
        if other is not None and self.ready():
            say(
                f"kafka: {self.bootstrap} is served by the broker that `session-tally services` started from "
                f"{other[1]} (pid {other[0]}); using it (`services down` here leaves it alone)"
            )
            return None
        return self.wait_ready(self.launch())

    def launch(self) -> tuple[int, float, int]:
        """Configure, format once and spawn the broker without waiting for it: (pid, start time, log offset)
        for :meth:`wait_ready`. The nodes of a cluster are all launched before any is waited for (a node
        is ready only once a majority of the controllers runs)."""
        ports = [listener.port for listener in self.node.listeners] + [self.controller_port]
        if any(port_open(port) for port in ports):
            raise ServiceError(
                f"kafka: one of the ports {', '.join(map(str, ports))} on {HOST} is taken by a process that "
                f"`session-tally services` did not start from {self.root}; stop it first"
            )
        self.ensure_jars()
        java = self._java()
        self._configure()
        self._format_once(java)
        offset = self.server_log.stat().st_size if self.server_log.exists() else 0
        say(f"kafka: starting Apache Kafka {self.version} (KRaft node {self.node_id}) on {self.bootstrap}")
        started = time.monotonic()
        with self.stdout_log.open("ab") as out:
            process = subprocess.Popen(
                self._java_cmd(java, MAIN_CLASS, str(self.properties)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,  # survives this command; not killed by a Ctrl-C in the shell
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid, started, offset

    def wait_ready(self, launched: tuple[int, float, int]) -> float:
        """Wait for a launched broker to log that it started and to accept connections; the seconds taken."""
        return self._wait_ready(*launched)

    def _started_line_seen(self, offset: int) -> bool:
        try:
            with self.server_log.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(offset if offset <= size else 0)  # after a rollover, read the new file whole
                return READY_LINE.encode() in log.read()
        except OSError:
            return False

    def _wait_ready(self, pid: int, started: float, offset: int) -> float:
        deadline = started + READY_DEADLINE_S
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(f"kafka: the broker (pid {pid}) exited during start-up\n" + self._logs())
            if self._started_line_seen(offset) and self.ready():
                elapsed = time.monotonic() - started
                say(f"kafka: ready on {self.bootstrap} in {elapsed:.1f} s (pid {pid})")
                return elapsed
            time.sleep(0.1)
        raise ServiceError(
            f"kafka: not ready after {READY_DEADLINE_S:.0f} s (pid {pid} left running; "
            "`session-tally services down` stops it)\n" + self._logs()
        )

    def _logs(self) -> str:
        parts = [log_excerpt("broker log", self.server_log)]
        if self.stdout_log.exists() and self.stdout_log.stat().st_size:
            parts.append(log_excerpt("JVM output", self.stdout_log))
        return "\n".join(parts)

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            other = self.foreign()
            say(f"kafka: not started from {self.root}" + (f"; leaving pid {other[0]} alone" if other else ""))
            return
        say(f"kafka: stopping pid {pid} (SIGTERM, controlled shutdown)")
        terminate(pid, "kafka", deadline_s)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker (a crash: no controlled shutdown, no flush) and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        say(f"kafka: node {self.node_id}: SIGKILL to pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_until(lambda: not pid_alive(pid), 10.0, 0.05):
            raise ServiceError(f"kafka: pid {pid} still alive 10 s after SIGKILL")
        self.pid_file.unlink(missing_ok=True)
