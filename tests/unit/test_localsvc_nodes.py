"""The broker configurations that localsvc writes for a cluster node and for a TLS/SASL-only broker
(no JVM started: the running brokers are tested in tests/integration/test_kafka_cluster_failover.py
and test_kafka_sasl_ssl.py)."""

from __future__ import annotations

from pathlib import Path

from session_tally.localsvc.kafka import Listener, LocalKafka, NodeConfig, server_properties
from session_tally.localsvc.kafka_cluster import LocalKafkaCluster


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_a_cluster_node_replicates_everything_three_times(tmp_path: Path) -> None:
    node = NodeConfig(
        (Listener("PLAINTEXT", "PLAINTEXT", 40001),),
        40002,
        node_id=2,
        voters=((1, 40012), (2, 40002), (3, 40022)),
        replication=3,
    )
    got = props(server_properties(tmp_path / "data", node=node))
    assert got["node.id"] == "2"
    assert got["controller.quorum.voters"] == "1@127.0.0.1:40012,2@127.0.0.1:40002,3@127.0.0.1:40022"
    assert got["listeners"] == "PLAINTEXT://127.0.0.1:40001,CONTROLLER://127.0.0.1:40002"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert got[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr"):
        assert got[key] == "2", key


def test_a_cluster_gets_distinct_ports_one_cluster_id_and_a_full_bootstrap_list(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster(tmp_path, size=3)
    nodes = list(cluster.nodes.values())
    ports = [n.port for n in nodes] + [n.controller_port for n in nodes]
    assert len(set(ports)) == 6
    assert {n.cluster_id for n in nodes} == {nodes[0].cluster_id} and nodes[0].cluster_id
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    assert [n.root.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]


def test_secure_listeners_map_to_their_protocols(tmp_path: Path) -> None:
    node = NodeConfig(
        (Listener("SASL_SSL", "SASL_SSL", 40101), Listener("MTLS", "SSL", 40102)),
        40103,
        extra={"sasl.enabled.mechanisms": "SCRAM-SHA-512"},
        format_args=("--add-scram", "SCRAM-SHA-512=[name=alice,password=x]"),
    )
    got = props(server_properties(tmp_path / "data", node=node))
    assert got["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL"
    assert got["advertised.listeners"] == "SASL_SSL://127.0.0.1:40101,MTLS://127.0.0.1:40102"
    assert got["inter.broker.listener.name"] == "SASL_SSL"
    assert got["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    broker = LocalKafka(tmp_path, node=node)
    assert broker.bootstrap == "127.0.0.1:40101" and broker.controller_port == 40103
