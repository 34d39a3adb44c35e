"""Beyond one database server: the primary dies under a running worker and its standby is promoted.

A private PostgreSQL primary with a synchronous streaming standby (localsvc/pg_replication.py:
``synchronous_standby_names='*'``, ``synchronous_commit=on``: a commit returns once the standby has
flushed it). The worker's ``DATABASE_URL`` is the libpq multi-host URL of both servers with
``target_session_attrs=read-write``. While the stream is being published and processed, the primary is
stopped with ``-m immediate`` (a crash) and the standby promoted; the worker's failed batches are
redelivered and its new connections find the promoted server by themselves. Afterwards:

- the end state equals `replay` of the stream (nothing lost, nothing doubled);
- no batch ever started past the offsets the database had (the worker logs "offset gap" when
  PostgreSQL knows fewer applied offsets than Kafka delivered: what a lost committed transaction, e.g.
  under asynchronous replication, would cause);
- on the output topics, read raw, no (entity, version) carries two contents and no version goes back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from session_tally.config import Settings
from session_tally.localsvc.pg_replication import standby_pair
from tests.integration.pipeline_helpers import (
    BackgroundPublish,
    Probe,
    check_rejected,
    check_versions,
    metric_value,
    read_raw_topic,
    ready_info,
    wait_until,
)
from tests.integration.test_faults import health
from tests.integration.test_pipeline_equivalence import CHUNK_INTERVAL_S, CHUNKS, Group, _log, _midway, stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_standby_promoted_while_the_worker_runs_equal_replay(settings: Settings, tmp_path: Path) -> None:
    with standby_pair(synchronous=True) as pair:
        on_pair = settings.replace(database_url=pair.url())
        group = Group(on_pair, tmp_path)
        try:
            worker = group.start("w1", http_port=0)
            http = ready_info(_log(tmp_path, "w1"), worker)["http"]
            publish = BackgroundPublish(on_pair, stream()[0], chunks=CHUNKS, interval_s=CHUNK_INTERVAL_S)
            _midway(on_pair, publish, group, low=0.3)
            with Probe(on_pair) as probe:
                applied_before = sum(probe.offsets().values())
            records_before = metric_value(http, "session_tally_records_total")

            crashed_at = time.monotonic()
            failover_s = pair.fail_over()
            assert pair.standby.sql("SELECT pg_is_in_recovery()") == "f"

            with Probe(on_pair) as probe:  # a new connection: it lands on the promoted standby
                assert probe.conn.exec_driver_sql("SELECT inet_server_port()").scalar() == pair.standby.port
                probe.conn.rollback()
                wait_until(
                    lambda: sum(probe.offsets().values()) > applied_before,
                    60,
                    "the worker to commit batches on the promoted standby",
                    interval_s=0.1,
                    procs=group.running(),
                )
            resumed_s = time.monotonic() - crashed_at
            wait_until(lambda: health(http)["status"] == "ok", 60, "/healthz ok after the fail-over", procs=[worker])
            failures = metric_value(http, "session_tally_batch_failures_total")

            state = group.finish_and_compare(publish.join(timeout_s=120))

            log = _log(tmp_path, "w1").read_text(errors="replace")
            assert "offset gap" not in log, "a committed transaction was lost in the fail-over"
            reports = {
                "tallies": check_versions(
                    asyncio.run(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.path_tallies)),
                    "path_id",
                ),
                "statuses": check_versions(
                    asyncio.run(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.meeting_statuses)),
                    "meeting_id",
                ),
                "rejected": check_rejected(
                    asyncio.run(read_raw_topic(settings.kafka_bootstrap_servers, settings.topics.rejected))
                ),
            }
            print(
                f"\nprimary crashed at {applied_before} applied records ({records_before:.0f} by the worker); "
                f"standby promoted {failover_s:.2f} s after the crash; the worker committed on it "
                f"{resumed_s:.2f} s after the crash; {failures:.0f} batch failures; "
                f"{sum(state['offsets'].values())} records applied in all; outputs {reports}"
            )
        finally:
            group.kill_all()
