"""A Kafka cluster of several KRaft nodes on loopback, for tests that take a broker away for real.

Every node is a :class:`~session_tally.localsvc.kafka.LocalKafka` (combined broker + controller, static
voters) with its own free ports and directory (``root/kafka-<id>``); they share one cluster id. New
topics and the internal topics get replication factor ``len(nodes)`` and ``min.insync.replicas`` one
less, so with three nodes any one may die without an acknowledged write being lost or writes stopping.

``kill(node_id)`` is a crash (SIGKILL: no controlled shutdown, so partition leadership moves only once
the controller fences the node, after ``broker.session.timeout.ms``); ``start_node`` brings it back
with its data. :func:`partition_leaders` says which node leads which partition.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from session_tally.localsvc.kafka import KAFKA_VERSION, Listener, LocalKafka, NodeConfig, new_cluster_id
from session_tally.localsvc.proc import ServiceError, free_port, say

CLUSTER_HEAP = ("-Xms128m", "-Xmx384m")  # three JVMs on a small machine


class LocalKafkaCluster:
    """``size`` nodes in ``root``; ``start()`` launches them all, then waits for each (a node is ready only
    once a majority of the controllers runs)."""

    def __init__(self, root: Path, size: int = 3, version: str = KAFKA_VERSION) -> None:
        ports = {node_id: (free_port(), free_port()) for node_id in range(1, size + 1)}
        voters = tuple((node_id, controller) for node_id, (_client, controller) in ports.items())
        cluster_id = new_cluster_id()
        self.root = root
        self.nodes = {
            node_id: LocalKafka(
                root,
                version,
                node=NodeConfig(
                    (Listener("PLAINTEXT", "PLAINTEXT", client),),
                    controller,
                    node_id=node_id,
                    voters=voters,
                    replication=size,
                ),
                name=f"kafka-{node_id}",
                cluster_id=cluster_id,
                heap=CLUSTER_HEAP,
            )
            for node_id, (client, controller) in ports.items()
        }
        self.bootstrap = ",".join(node.bootstrap for node in self.nodes.values())

    def start(self) -> float:
        """Launch every node that does not run, wait until all are ready; the seconds taken."""
        started = time.monotonic()
        launched = {node_id: node.launch() for node_id, node in self.nodes.items() if node.pid() is None}
        for node_id, handle in launched.items():
            self.nodes[node_id].wait_ready(handle)
        elapsed = time.monotonic() - started
        say(f"kafka cluster: {len(self.nodes)} nodes ready on {self.bootstrap} in {elapsed:.1f} s")
        return elapsed

    def start_node(self, node_id: int) -> float:
        """Start one node again (its data kept); it rejoins and catches up as a follower."""
        return self.nodes[node_id].wait_ready(self.nodes[node_id].launch())

    def kill(self, node_id: int) -> None:
        self.nodes[node_id].kill()

    def running(self) -> list[int]:
        return [node_id for node_id, node in self.nodes.items() if node.pid() is not None]

    def stop(self, deadline_s: float = 20.0) -> None:
        """Stop every node: SIGTERM to all at once (a node alone cannot finish a controlled shutdown
        without a controller majority), SIGKILL to what is left after ``deadline_s``."""
        import contextlib
        import os
        import signal

        pids = {node_id: node.pid() for node_id, node in self.nodes.items()}
        for pid in pids.values():
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + deadline_s
        for node_id, node in self.nodes.items():
            while pids[node_id] is not None and node.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            node.kill()  # a no-op when it stopped
            node.pid_file.unlink(missing_ok=True)
        say(f"kafka cluster: stopped {len([p for p in pids.values() if p])} nodes")


async def partition_leaders(kafka: Any, topic: str) -> dict[int, tuple[int, list[int]]]:
    """Per partition of ``topic``: (leader node id, in-sync replica ids); leader -1 while there is none.
    ``kafka`` is a bootstrap string or a ``KafkaAccess``."""
    from aiokafka.admin import AIOKafkaAdminClient

    from producers.kafka_access import kafka_options

    admin = AIOKafkaAdminClient(**kafka_options(kafka), request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    info = described[0]
    if info["error_code"] != 0:
        raise ServiceError(f"kafka cluster: cannot describe {topic}: error {info['error_code']}")
    return {p["partition"]: (p["leader"], list(p["isr"])) for p in info["partitions"]}


def wait_leader_elsewhere(kafka: Any, topic: str, partition: int, old: int, timeout_s: float = 60.0) -> float:
    """Wait until ``partition`` of ``topic`` is led by a node other than ``old``; the seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            leader = asyncio.run(partition_leaders(kafka, topic))[partition][0]
        except Exception:  # the node asked may be the dead one: ask again
            leader = -1
        if leader not in (-1, old):
            return time.monotonic() - started
        time.sleep(0.2)
    raise ServiceError(f"kafka cluster: {topic}[{partition}] still has no leader but {old} after {timeout_s} s")
