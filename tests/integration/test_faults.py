"""Outages of the services under a running worker: the worker rides them out, reports them on /healthz
and /metrics, and once the service is back it catches up; the final outputs equal `replay`'s.

- PostgreSQL: the worker reaches the database through a TCP proxy that the test cuts twice while the
  stream is being published and processed (every connection reset, new ones refused: a restart, a
  fail-over or a partition, seen from the worker).
- Kafka: the worker runs against a private broker, which the test stops (controlled shutdown) and
  starts again while the worker has work in flight; the rest of the stream is published afterwards.

Same stream, clock and comparison as the equivalence tests (test_pipeline_equivalence.py).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from session_tally.config import Settings
from session_tally.topics import ensure_topics
from tests.integration.faults import TcpProxy, private_broker
from tests.integration.pipeline_helpers import (
    BackgroundPublish,
    Probe,
    metric_value,
    publish_lines,
    ready_info,
    wait_until,
)
from tests.integration.test_pipeline_equivalence import (
    CHUNK_INTERVAL_S,
    CHUNKS,
    Group,
    _log,
    _midway,
    stream,
)

pytestmark = pytest.mark.integration


def health(http: str) -> dict[str, Any]:
    """The worker's /healthz document (its body on a 503 too)."""
    try:
        with urllib.request.urlopen(http + "/healthz", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as err:
        return json.loads(err.read())  # type: ignore[no-any-return]


def test_database_outages_midstream_equal_replay(settings: Settings, tmp_path: Path) -> None:
    url = make_url(settings.database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = settings.replace(database_url=url.set(port=proxy.port).render_as_string(hide_password=False))
        group = Group(settings, tmp_path, worker_settings=through_proxy)
        try:
            worker = group.start("w1", http_port=0)
            http = ready_info(_log(tmp_path, "w1"), worker)["http"]
            publish = BackgroundPublish(settings, stream()[0], chunks=CHUNKS, interval_s=CHUNK_INTERVAL_S)
            for n, low in enumerate((0.25, 0.5), start=1):
                _midway(settings, publish, group, low)
                failures_before = metric_value(http, "session_tally_batch_failures_total")
                proxy.cut()
                # the worker notices: its health check fails on PostgreSQL, and batches fail (redelivered)
                wait_until(lambda: health(http)["checks"]["postgres"] is False, 30, "/healthz to fail", procs=[worker])
                wait_until(
                    lambda before=failures_before: metric_value(http, "session_tally_batch_failures_total") > before,  # type: ignore[misc]
                    30,
                    f"a batch to fail during outage {n}",
                    procs=[worker],
                )
                proxy.restore()
                wait_until(
                    lambda: health(http)["status"] == "ok", 30, "/healthz ok again after the outage", procs=[worker]
                )
            assert proxy.dropped >= 2 and proxy.refused >= 2, (proxy.dropped, proxy.refused)
            group.finish_and_compare(publish.join())
        finally:
            group.kill_all()


def test_broker_restart_midstream_equal_replay(settings: Settings, tmp_path: Path) -> None:
    lines = stream()[0]
    half = len(lines) // 2
    with private_broker(tmp_path / "kafka-state") as broker:
        on_private = settings.replace(kafka_bootstrap_servers=broker.bootstrap)
        assert asyncio.run(ensure_topics(broker.bootstrap, on_private.topics)) == []
        first = asyncio.run(publish_lines(broker.bootstrap, on_private, lines[:half]))
        group = Group(on_private, tmp_path)
        try:
            worker = group.start("w1", http_port=0)
            http = ready_info(_log(tmp_path, "w1"), worker)["http"]
            with Probe(on_private) as probe:
                wait_until(lambda: sum(probe.offsets().values()) > 0, 60, "the worker to apply records", procs=[worker])
            broker.stop()
            wait_until(
                lambda: health(http)["checks"]["kafka"] is False, 30, "/healthz to fail on kafka", procs=[worker]
            )
            broker.start()
            wait_until(lambda: health(http)["status"] == "ok", 60, "/healthz ok after the restart", procs=[worker])
            # the rest of the stream, published after the restart, must be consumed and published as well
            numbered = [b"" if i < half else raw for i, raw in enumerate(lines)]  # keep line numbers
            rest = asyncio.run(publish_lines(broker.bootstrap, on_private, numbered))
            ends = {k: max(first.get(k, 0), rest.get(k, 0)) for k in first.keys() | rest.keys()}
            group.finish_and_compare(ends)
            # the outage reads as a few lines (aiokafka's producer once spun here: ~8,000 lines a second)
            lines = _log(tmp_path, "w1").read_text(errors="replace").count("\n")
            assert lines < 500, f"{lines} log lines for one broker restart"
        finally:
            group.kill_all()
