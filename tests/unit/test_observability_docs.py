"""What the monitoring documents and the call sites name exists: every metric a call site uses is
declared in session_tally/metrics.py with a matching type; the alert rules (docs/monitoring/alerts.yml)
and the Grafana dashboard (docs/monitoring/grafana-dashboard.json) are well formed, their PromQL parses
and names only metrics a worker exposes; docs/observability.md lists every declared metric. With
promtool installed (Debian's `prometheus` package), `promtool check rules` and the rule unit tests run too.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from session_tally.metrics import COUNTER, GAUGE, HISTOGRAM, SPECS, Metrics, declared
from tests.needs import tool

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"
CALL = re.compile(r"""\.(inc|set|observe|observe_many|replace)\(\s*["'](session_tally_[a-z0-9_]+)["']""")
KIND_OF_CALL = {"inc": COUNTER, "set": GAUGE, "replace": GAUGE, "observe": HISTOGRAM, "observe_many": HISTOGRAM}
SELECTOR = re.compile(r'VectorSelector \{\s*name: Some\(\s*"([^"]+)"')


def exposed_names() -> set[str]:
    """Every sample name a worker's /metrics can show (both processes), and Prometheus's own ``up``."""
    metrics = Metrics()
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    names |= {n.replace("process_", "session_tally_producers_process_", 1) for n in names if n.startswith("process_")}
    for spec in SPECS:
        if spec.kind == HISTOGRAM:
            names |= {spec.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(spec.name)
    return names | {"up"}


def promql_names(expr: str) -> set[str]:
    """The metric names an expression selects (it must parse); Grafana's variables replaced first."""
    plain = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
    return set(SELECTOR.findall(repr(promql_parser.parse(plain))))


def test_every_metric_a_call_site_uses_is_declared_with_its_type() -> None:
    uses = []
    for folder in ("consumers", "producers", "session_tally"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            uses += [(path.relative_to(ROOT), call, name) for call, name in CALL.findall(path.read_text())]
    assert len(uses) > 20, uses  # the pattern still finds the call sites
    wrong = [
        (str(p), name) for p, call, name in uses if (spec := declared(name)) is None or spec.kind != KIND_OF_CALL[call]
    ]
    assert not wrong, f"undeclared or of another type: {wrong}"


def test_declared_names_are_unique_prefixed_and_documented() -> None:
    names = [s.name for s in SPECS]
    assert len(names) == len(set(names))
    assert all(
        n.startswith("session_tally_") and (s.kind != COUNTER or n.endswith("_total"))
        for n, s in zip(names, SPECS, strict=True)
    )
    assert all(s.help.strip() for s in SPECS)
    doc = (ROOT / "docs" / "observability.md").read_text()
    missing = [n for n in names if f"`{n}" not in doc]
    assert not missing, f"docs/observability.md does not list {missing}"


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    (group,) = loaded["groups"]
    return list(group["rules"])


def test_alert_rules_are_well_formed_and_name_exposed_metrics() -> None:
    rules = _rules()
    known = exposed_names()
    names = {r["alert"] for r in rules}
    for wanted in ("WorkerDown", "ConsumerLagHigh", "ConsumerLagGrowing", "StalledConsumer", "RejectedRateHigh"):
        assert f"SessionTally{wanted}" in names, names
    assert {"SessionTallyOutboxOld", "SessionTallyBarrierWaitingLong"} <= names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        used = promql_names(rule["expr"])
        assert used and used <= known, (rule["alert"], used - known)


def test_dashboard_is_importable_and_shows_what_it_should() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    known = exposed_names()
    used: set[str] = set()
    ids = set()
    for panel in dash["panels"]:
        assert panel["title"] and panel["type"] in ("timeseries", "stat"), panel
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_names(target["expr"])
            assert names and names <= known, (panel["title"], names - known)
            used |= names
    for metric in (
        "session_tally_events_total",
        "session_tally_rejected_total",
        "session_tally_consumer_lag",
        "session_tally_stuck_partitions",
        "session_tally_batch_duration_seconds_bucket",
        "session_tally_event_commit_latency_seconds_bucket",
        "session_tally_commit_publish_latency_seconds_bucket",
        "session_tally_outbox_oldest_seconds",
        "process_resident_memory_bytes",
    ):
        assert metric in used, f"the dashboard shows no {metric}"


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    promtool = tool("promtool", "prometheus")  # fails under CI when missing, as every tool
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_worker_listens_beyond_its_container() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    env = {**compose["x-app"]["environment"], **(worker.get("environment") or {})}
    assert env["SESSION_TALLY_HTTP_HOST"] == "0.0.0.0"
    # compose's health gates `depends_on: service_healthy` (the web app waits for a migrated database):
    # readiness. Docker restarts nothing on it; the Kubernetes example uses /livez for restarts.
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])
