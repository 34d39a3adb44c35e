"""`session-tally offsets show|skip|reset|history` against the real Kafka, PostgreSQL and a worker process:
the offsets shown are those PostgreSQL holds; a record skipped by hand is rejected with the operator's
reason and never applied; a reset is refused while a worker runs and applied once it stopped (what it
re-applies counts as duplicates); the history lists both."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from session_tally.config import Settings
from tests.integration.operator_helpers import cli, end_offsets, ok, query, topic_docs
from tests.integration.pipeline_helpers import (
    group_assignment,
    publish_lines,
    start_worker_ex,
    stop_worker,
    wait_group,
    wait_idle,
    wait_until,
)
from tests.integration.test_rejected_commands import envelope, program, scheduled

pytestmark = pytest.mark.integration

AT = "2026-03-10T09:00:00Z"
LINES = [
    envelope("org-on", "organization.session_management_set", {"enabled": True}),
    program("prog-1"),
    *(scheduled(f"s{i}", "prog-1", f"path-{i}", f"m{i}") for i in range(12)),
]


def _no_members(settings: Settings) -> bool:
    groups = (settings.group_id, f"{settings.group_id}.admin")
    return all(not asyncio.run(group_assignment(settings.kafka_bootstrap_servers, g))[1] for g in groups)


def test_show_skip_reset_and_history(settings: Settings, tmp_path: Path) -> None:
    path_topic = settings.topics.path_events
    ends = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, LINES))
    worker = start_worker_ex(settings, tmp_path / "worker.log", clock=AT)
    try:
        wait_idle(settings, ends, timeout_s=60, procs=[worker])
        # ---- show, against the running pipeline: every input partition, applied = end
        rows = json.loads(ok(cli(settings, "offsets", "show", "--json")))
        assert len(rows) == 12 and {r["topic"] for r in rows} == set(settings.topics.inputs)
        shown = {f"{r['topic']}:{r['partition']}": (r["end"], r["applied"], r["lag"]) for r in rows}
        assert all(shown[k] == (n, n, 0) for k, n in ends.items()), (shown, ends)
        assert "total lag: 0 records" in ok(cli(settings, "offsets", "show"))

        # ---- reset is refused while the worker is a member of the group
        wait_group(settings.kafka_bootstrap_servers, settings.group_id, 1, 60, procs=[worker])
        busy = max((k for k in ends if k.startswith(path_topic + ":")), key=lambda k: ends[k])
        partition = int(busy.rsplit(":", 1)[1])
        reset = ("offsets", "reset", "--topic", path_topic, "--partition", str(partition), "--to-offset", "0")
        refused = cli(settings, *reset, "--reason", "replay", "--operator", "ops-4")
        assert refused.returncode == 1 and b"stop the workers first" in refused.stderr, refused
        assert query(settings, "SELECT next_offset FROM consumer_offsets WHERE topic = :t AND partition = :p",
                     t=path_topic, p=partition) == [(ends[busy],)]  # fmt: skip
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]

    # ---- a record to skip: the next one its partition would apply (the worker is stopped)
    extra = scheduled("s-skip", "prog-1", "path-skip", "m-skip")
    more = asyncio.run(publish_lines(settings.kafka_bootstrap_servers, settings, [extra]))
    (where, next_offset), = more.items()  # fmt: skip
    topic, part = where.rsplit(":", 1)
    offset = next_offset - 1
    lag = {
        f"{r['topic']}:{r['partition']}": r["lag"] for r in json.loads(ok(cli(settings, "offsets", "show", "--json")))
    }
    assert lag[where] == 1 and sum(lag.values()) == 1
    skip = ("offsets", "skip", "--topic", topic, "--partition", part)
    wrong = cli(settings, *skip, "--offset", str(offset + 1), "--reason", "x")
    assert wrong.returncode == 1 and b"only that one can be skipped" in wrong.stderr, wrong
    ok(cli(settings, *skip, "--offset", str(offset), "--reason", "crashes the worker, OPS-12", "--operator", "ops-3"))
    assert query(settings, "SELECT next_offset FROM consumer_offsets WHERE topic = :t AND partition = :p",
                 t=topic, p=int(part)) == [(next_offset,)]  # fmt: skip

    # ---- the reset, now that no member is alive
    wait_until(lambda: _no_members(settings), 60, "the consumer groups empty", interval_s=0.5)
    statuses_before = len(topic_docs(settings, settings.topics.meeting_statuses))
    versions = query(settings, "SELECT meeting_id, status_version FROM meetings ORDER BY 1")
    out = ok(cli(settings, *reset, "--reason", "replay", "--operator", "ops-4"))
    assert "-> 0" in out, out
    assert query(settings, "SELECT next_offset FROM consumer_offsets WHERE topic = :t AND partition = :p",
                 t=path_topic, p=partition) == [(0,)]  # fmt: skip

    worker = start_worker_ex(settings, tmp_path / "worker2.log", clock=AT)
    try:
        wait_idle(settings, end_offsets(settings), timeout_s=60, procs=[worker])
        wait_until(lambda: topic_docs(settings, settings.topics.rejected), 30, "the skipped record's rejection",
                   procs=[worker])  # fmt: skip
    finally:
        assert stop_worker(worker) == 0, (tmp_path / "worker2.log").read_text(errors="replace")[-3000:]
    # the skipped record was rejected with the operator's reason, and never applied
    rejected = topic_docs(settings, settings.topics.rejected)
    assert [(d["event_id"], d["source"]["offset"]) for d in rejected] == [("s-skip", offset)]
    assert "ops-3" in rejected[0]["detail"] and "OPS-12" in rejected[0]["detail"]
    assert query(settings, "SELECT 1 FROM meetings WHERE meeting_id = 'm-skip'") == []
    # the re-applied partition counted duplicates: nothing changed, nothing new was published
    assert query(settings, "SELECT meeting_id, status_version FROM meetings ORDER BY 1") == versions
    assert len(topic_docs(settings, settings.topics.meeting_statuses)) == statuses_before
    assert query(settings, "SELECT next_offset FROM consumer_offsets WHERE topic = :t AND partition = :p",
                 t=path_topic, p=partition) == [(ends[busy],)]  # fmt: skip

    history = ok(cli(settings, "offsets", "history")).splitlines()
    assert len(history) == 2, history  # newest first; the refused reset left nothing
    assert "ops-4" in history[0] and "offsets reset" in history[0] and '"to": 0' in history[0]
    assert "ops-3" in history[1] and "offsets skip" in history[1] and f'"offset": {offset}' in history[1]
