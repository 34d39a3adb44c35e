"""Where a record comes from (issue 9, points 2, 3 and 4), through a real worker, the real Kafka and
PostgreSQL:

- an admin event on the path topic (and a path event on the admin topic) is rejected, naming both
  topics, before the duplicate check: the same event published on its topic afterwards is applied;
- one path (one org) on two partitions (librdkafka's default CRC32 partitioner next to murmur2): the
  events on the second partition are rejected, naming the partitioner; a metric counts them and the log
  says it once per key and partition;
- Kafka's own offset tool (``kafka-consumer-groups --reset-offsets``) neither skips nor replays
  anything: a worker starts every partition at PostgreSQL's applied offset (``--to-latest`` once left a
  record unapplied until another arrived); ``session-tally offsets show|reset|skip|history`` are the
  tools that act, and they are audited.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from producers.publisher import LINE_HEADER
from session_tally.config import Settings
from session_tally.snapshot import read_snapshot
from tests.integration import kafka_tools
from tests.integration.pipeline_helpers import (
    Probe,
    assert_same_document,
    comparable,
    metric_value,
    read_raw_topic,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)
from tests.integration.robustness_helpers import (
    AT,
    ORG,
    PROGRAM,
    confirmed,
    event,
    expected_document,
    metric_series,
    routed,
    run_async,
    run_cli,
    scheduled,
    send_records,
    setup_lines,
)

pytestmark = pytest.mark.integration


def _merge(*ends: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in ends:
        for k, v in e.items():
            out[k] = max(out.get(k, 0), v)
    return out


def _applied(settings: Settings, ends: dict[str, int], procs: list[Any], what: str, timeout_s: float = 45) -> None:
    with Probe(settings) as probe:
        wait_until(lambda: all(probe.offsets().get(k, 0) >= v for k, v in ends.items()), timeout_s, what, procs=procs)


def _rejected(settings: Settings) -> dict[int, dict[str, Any]]:
    """Rejected documents by input line."""
    records = run_async(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.rejected, 30))
    docs = [json.loads(r["value"]) for r in records]
    return {int(dict(d["headers"])[LINE_HEADER]): d for d in docs}


def _stop(worker: Any, log: Path) -> None:
    assert stop_worker(worker) == 0, log.read_text(errors="replace")[-3000:]


def test_events_on_the_wrong_input_topic_are_rejected_then_applied_from_their_topic(
    settings: Settings, tmp_path: Path
) -> None:
    path = "path-wt"
    admin_t, path_t = settings.topics.admin_events, settings.topics.path_events
    wrong = [  # lines 4..7: each published on the other input topic
        event("wt-upd", "program.settings_updated", "2026-02-01T00:00:00Z", role="support",
              data={"late_cancel_window": "PT1H"}),
        event("wt-prog2", "program.created", "2026-02-01T00:00:00Z", program="prog-wt2", role="program_admin",
              data={"session_verification": True, "late_cancel_window": None, "auto_confirm_window": "P3D",
                    "authorized_hours": None}),
        event("wt-org-off", "organization.session_management_set", "2026-02-02T00:00:00Z", program=None,
              role="support", data={"enabled": False}),
        scheduled("wt-m2", path, "wt-m2", 3),
    ]  # fmt: skip
    lines = [
        *setup_lines(),
        scheduled("wt-m1", path, "wt-m1", 2),
        *wrong,
        *wrong,  # lines 8..11: the same events, on their own topics
        event("wt-cancel", "meeting.canceled", "2026-03-01T12:00:00Z", path=path, data={"meeting_id": "wt-m1"}),
        scheduled("wt-m3", "path-wt2", "wt-m3", 4, program="prog-wt2"),
    ]
    records = routed(settings, lines)
    for i in range(3, 7):  # to the other topic (keyed as the wrong topic would be)
        topic, key, value, headers = records[i]
        records[i] = (path_t if topic == admin_t else admin_t, key, value, headers)
    bootstrap = settings.kafka_bootstrap_servers
    first = run_async(send_records(bootstrap, records[:7]))
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT)
    try:
        _applied(settings, first, [worker], "the wrongly routed events to be judged")
        ends = _merge(first, run_async(send_records(bootstrap, records[7:])))
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
    finally:
        _stop(worker, log)

    snapshot = comparable(run_async(read_snapshot(bootstrap, settings.topics)))
    want = expected_document(lines, AT, {n: (json.loads(lines[n - 1])["event_id"], "schema_violation")
                                          for n in range(4, 8)})  # fmt: skip
    assert_same_document(snapshot, comparable(want))
    statuses = {m["meeting_id"]: m["status"] for m in snapshot["meetings"]}
    assert statuses["wt-m1"] == "canceled"  # the settings update (PT1H) applied: not a late cancel
    assert statuses["wt-m3"] == "auto_confirmed"  # prog-wt2 created from the admin topic, before the org went off
    rejected = _rejected(settings)
    for n in range(4, 8):
        detail = rejected[n]["detail"]
        assert admin_t in detail and path_t in detail, detail


def _confluent_default(bootstrap: str, topic: str, items: list[tuple[bytes, bytes, int]]) -> list[tuple[int, int]]:
    """Publish with confluent-kafka and librdkafka's default partitioner (CRC32 of the key), each message
    acknowledged before the next; returns (partition, offset) of each."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    placed: list[tuple[int, int]] = []
    for key, value, line in items:
        got: list[Any] = []

        def delivered(err: Any, msg: Any, got: list[Any] = got) -> None:
            got.append((err, msg))

        producer.produce(
            topic, value=value, key=key, headers=[(LINE_HEADER, str(line).encode())], on_delivery=delivered
        )
        assert producer.flush(30) == 0
        ((err, msg),) = got
        assert err is None, err
        placed.append((msg.partition(), msg.offset()))
    return placed


def test_one_key_on_two_partitions_is_rejected_on_the_second(settings: Settings, tmp_path: Path) -> None:
    """Two publishers of one path (and one org), with different partitioners: what arrives on the
    partition the key was not first seen on is rejected; the log says so once per key and partition."""
    from aiokafka.partitioner import murmur2

    path = "path-split"  # murmur2 -> partition 0, CRC32 -> 5 (of 6); org-r: 5 and 4
    lines = [
        *setup_lines(),
        scheduled("sp-m1", path, "sp-m1", 2),
        scheduled("sp-m2", path, "sp-m2", 3),  # 4: CRC32
        confirmed("sp-c1", path, "sp-m1", 2),  # 5: CRC32
        scheduled("sp-m3", path, "sp-m3", 4),
        confirmed("sp-c3", path, "sp-m3", 4),
        event("sp-p2", "program.created", "2026-02-01T00:00:00Z", program="prog-sp2", role="program_admin",
              data={"session_verification": True, "late_cancel_window": None, "auto_confirm_window": "P3D",
                    "authorized_hours": None}),  # 8: CRC32, on the admin topic
    ]  # fmt: skip
    records = routed(settings, lines)
    bootstrap = settings.kafka_bootstrap_servers
    ends = run_async(send_records(bootstrap, records[:3]))
    log = tmp_path / "worker.log"
    worker = start_worker_ex(settings, log, clock=AT, http_port=0)
    try:
        http = ready_info(log, worker)["http"]
        _applied(settings, ends, [worker], "the path's first event (its partition recorded)")
        crc = {4, 5, 8}
        for number in range(4, 9):
            topic, key, value, headers = records[number - 1]
            assert key is not None and value is not None
            if number in crc:
                ((partition, offset),) = _confluent_default(bootstrap, topic, [(key, value, number)])
                assert partition != (murmur2(key) & 0x7FFFFFFF) % 6, "the partitioners agree on this key"
                ends = _merge(ends, {f"{topic}:{partition}": offset + 1})
            else:
                ends = _merge(ends, run_async(send_records(bootstrap, [(topic, key, value, headers)])))
        wait_idle(settings, ends, timeout_s=45, procs=[worker])
        snapshot = comparable(run_async(read_snapshot(bootstrap, settings.topics)))
        rejected_here = {n: (json.loads(lines[n - 1])["event_id"], "schema_violation") for n in crc}
        assert_same_document(snapshot, comparable(expected_document(lines, AT, rejected_here)))
        wait_until(lambda: metric_value(http, "session_tally_misrouted_records_total") == 3, 10,
                   "the misrouted records counted", procs=[worker])  # fmt: skip
        series = metric_series(http, "session_tally_misrouted_records_total")
        assert series == {
            f'{{topic="{settings.topics.path_events}"}}': 2.0,
            f'{{topic="{settings.topics.admin_events}"}}': 1.0,
        }, series
    finally:
        _stop(worker, log)

    rejected = _rejected(settings)
    for n in crc:
        assert "partitioner" in rejected[n]["detail"] and "murmur2" in rejected[n]["detail"], rejected[n]["detail"]
    said = re.findall(r"events of (\S+) arrive on partitions (\d+) and (\d+)", log.read_text(errors="replace"))
    assert sorted(said) == sorted([(path, "0", "5"), (ORG, "5", "4")]), said  # once per key and partition


def test_kafka_offset_tools_change_nothing_and_session_tally_offsets_act(settings: Settings, tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    path_t, group = settings.topics.path_events, settings.group_id
    kafka_tools.tools_classpath()  # resolved before any worker runs (first use only)
    path = "path-ofs"
    lines = [
        *setup_lines(),
        scheduled("ofs-m1", path, "ofs-m1", 2),
        scheduled("ofs-m2", path, "ofs-m2", 3),
        confirmed("ofs-c1", path, "ofs-m1", 2),  # 5
        confirmed("ofs-c2", path, "ofs-m2", 3),  # 6: published while the workers are stopped
        scheduled("ofs-m3", path, "ofs-m3", 4),  # 7
        confirmed("ofs-c3", path, "ofs-m3", 4),  # 8: skipped by an operator
    ]
    records = routed(settings, lines)
    ends = run_async(send_records(bootstrap, records[:5]))
    (partition,) = {int(k.rsplit(":", 1)[1]) for k in ends if k.startswith(path_t + ":")}

    def run_worker(
        name: str, ends: dict[str, int], redelivered: int | None = None, duplicates: int | None = None
    ) -> None:
        """A worker applies everything published; then its /metrics count what it re-read (redelivered:
        records below PostgreSQL's offsets) and re-applied (duplicates)."""
        log = tmp_path / f"{name}.log"
        worker = start_worker_ex(settings, log, clock=AT, http_port=0)
        try:
            http = ready_info(log, worker)["http"]
            _applied(settings, ends, [worker], f"{name}: every published record applied")
            wait_idle(settings, ends, timeout_s=30, procs=[worker])
            if redelivered is not None:
                assert metric_value(http, "session_tally_redelivered_records_total") == redelivered, name
            if duplicates is not None:
                events = metric_series(http, "session_tally_events_total")
                assert events.get('{outcome="duplicate"}', 0) == duplicates, (name, events)
        finally:
            _stop(worker, log)

    run_worker("w1", ends)
    # a record arrives while the workers are stopped; an operator moves Kafka's committed offset past it
    ends = _merge(ends, run_async(send_records(bootstrap, records[5:6])))
    table = kafka_tools.reset_offsets(bootstrap, group, path_t, "--to-latest")
    assert kafka_tools.committed(table)[partition] == ends[f"{path_t}:{partition}"]
    run_worker("w2", ends, redelivered=0)  # the record is applied at once, nothing re-read

    # Kafka's --to-earliest on both groups: nothing is re-read or re-applied; session-tally's own reset
    # of the path partition to line 5's offset re-applies lines 5 and 6 (duplicates: no change)
    for g, topic in ((group, path_t), (f"{group}.admin", settings.topics.admin_events)):
        assert set(kafka_tools.committed(kafka_tools.reset_offsets(bootstrap, g, topic, "--to-earliest")).values()) == {
            0
        }
    line5 = ends[f"{path_t}:{partition}"] - 2
    run_cli(settings, "offsets", "reset", "--topic", path_t, "--partition", str(partition), "--to-offset", str(line5),
            "--reason", "re-apply from line 5", "--operator", "ops-a")  # fmt: skip
    ends = _merge(ends, run_async(send_records(bootstrap, records[6:7])))
    run_worker("w3", ends, redelivered=0, duplicates=2)

    # line 8 is skipped by an operator while the workers are stopped: rejected with the reason given
    ends = _merge(ends, run_async(send_records(bootstrap, records[7:8])))
    offset8 = ends[f"{path_t}:{partition}"] - 1
    shown = {(r["topic"], r["partition"]): r for r in json.loads(run_cli(settings, "offsets", "show", "--json").stdout)}
    assert (shown[(path_t, partition)]["applied"], shown[(path_t, partition)]["lag"]) == (offset8, 1)
    refused = run_cli(settings, "offsets", "skip", "--topic", path_t, "--partition", str(partition), "--offset",
                      str(offset8 - 1), "--reason", "wrong offset", check=False)  # fmt: skip
    assert refused.returncode == 1 and f"at offset {offset8}" in refused.stderr
    run_cli(settings, "offsets", "skip", "--topic", path_t, "--partition", str(partition), "--offset", str(offset8),
            "--reason", "ticket OPS-12", "--operator", "ops-b")  # fmt: skip
    history = run_cli(settings, "offsets", "history").stdout
    assert "ops-a" in history and "re-apply from line 5" in history and "ops-b" in history and "OPS-12" in history
    run_worker("w4", ends)

    snapshot = comparable(run_async(read_snapshot(bootstrap, settings.topics)))
    assert_same_document(snapshot, comparable(expected_document(lines, AT, {8: ("ofs-c3", "schema_violation")})))
    assert "skipped by an operator (ops-b): ticket OPS-12" in _rejected(settings)[8]["detail"]
    assert {m["meeting_id"]: m["status"] for m in snapshot["meetings"]}["ofs-m2"] == "confirmed"  # line 6 applied
    assert PROGRAM in {t["program_id"] for t in snapshot["tallies"]}
