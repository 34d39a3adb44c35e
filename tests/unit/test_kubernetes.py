"""docs/kubernetes/session-tally.yaml, the example manifest, checked offline (no cluster answers here).

What it must keep: the worker's probes on /livez and /readyz of its HTTP port, bound to 0.0.0.0; a
termination grace period above twice the graceful timeout; requests and limits on every container, the
worker's memory sized for its measured RSS; credentials from a Secret, never written in the manifest;
a Job for `topics create` and a Deployment + Service for `web`; Prometheus scrape annotations on the
workers; and every variable the manifest sets is one the settings class knows, with a value it accepts.
Each object is also validated against the Kubernetes API models of the official Python client (field
names, required fields, types). What a cluster would decide beyond that is not checked here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from session_tally.config import DEFAULT_DATABASE_URL, Settings, WorkerSettings
from session_tally.config_report import all_leaves

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "docs" / "kubernetes" / "session-tally.yaml"
WORKER_RSS_MIB = 200  # a worker's resident set, measured (docs/performance.md: 165-175 MB peak)
SECRET_VARIABLES = {"DATABASE_URL", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "SESSION_TALLY_WEB_SECRET"}
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    loaded = [doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if doc is not None]
    assert all(isinstance(doc, dict) for doc in loaded)
    return loaded


def _one(documents: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [
        doc
        for doc in documents
        if doc["kind"] == kind and doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"{kind} {component}: {len(found)} found"
    return found[0]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = _pod(workload)["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert isinstance(container, dict)
    return container


def _bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", quantity)
    assert match, f"not a memory quantity: {quantity!r}"
    return int(match[1]) * UNITS[match[2]]


def _plain_env(documents: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets with a value written in the manifest (its env and its ConfigMaps)."""
    config_maps = {doc["metadata"]["name"]: doc["data"] for doc in documents if doc["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, source  # a whole Secret as envFrom would hide which names it sets
        env.update(config_maps[source["configMapRef"]["name"]])
    env.update({item["name"]: str(item["value"]) for item in container.get("env", []) if "value" in item})
    return env


def _all_env_names(documents: list[dict[str, Any]], container: dict[str, Any]) -> set[str]:
    return set(_plain_env(documents, container)) | {item["name"] for item in container.get("env", [])}


def _settings(documents: list[dict[str, Any]], container: dict[str, Any]) -> Settings:
    """What the settings class makes of a container's environment; a value that Kubernetes fills in (from
    a Secret, from the pod's name) stands in as a valid example, so every written value is checked."""
    filled = {"DATABASE_URL": DEFAULT_DATABASE_URL, "SESSION_TALLY_INSTANCE_ID": "session-tally-worker-7d9f-x2x"}
    env = {
        item["name"]: filled.get(item["name"], "from-a-secret")
        for item in container.get("env", [])
        if "valueFrom" in item
    }
    return Settings.from_env({**env, **_plain_env(documents, container)})


def _workloads(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] in ("Deployment", "Job")]


def test_the_manifest_has_the_pieces(documents: list[dict[str, Any]]) -> None:
    kinds = {(doc["kind"], doc["metadata"]["labels"].get("app.kubernetes.io/component")) for doc in documents}
    assert {("Deployment", "worker"), ("Deployment", "web"), ("Service", "web"), ("Job", "topics")} <= kinds
    assert _container(_one(documents, "Job", "topics"))["args"] == ["topics", "create"]
    assert _container(_one(documents, "Deployment", "worker"))["args"] == ["worker"]
    assert _container(_one(documents, "Deployment", "web"))["args"] == ["web"]
    for workload in _workloads(documents):
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_worker_probes_listen_where_the_worker_does(documents: list[dict[str, Any]]) -> None:
    worker = _container(_one(documents, "Deployment", "worker"))
    settings = _settings(documents, worker).worker
    assert settings.http_host == "0.0.0.0"  # the kubelet probes the pod's address, not its loopback
    assert {port["containerPort"] for port in worker["ports"]} == {settings.http_port} == {8085}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 8085}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8085}
    assert worker["startupProbe"]["httpGet"]["port"] == 8085
    annotations = _one(documents, "Deployment", "worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.http_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_web_is_served_through_its_service(documents: list[dict[str, Any]]) -> None:
    web = _container(_one(documents, "Deployment", "web"))
    settings = _settings(documents, web).web
    assert settings.host == "0.0.0.0"
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    assert ports == {"http": settings.port}
    assert web["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": settings.port}
    service = _one(documents, "Service", "web")
    assert (
        service["spec"]["selector"].items()
        <= _one(documents, "Deployment", "web")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]


def test_grace_period_outlasts_twice_the_graceful_timeout(documents: list[dict[str, Any]]) -> None:
    deployment = _one(documents, "Deployment", "worker")
    grace = _pod(deployment)["terminationGracePeriodSeconds"]
    configured = _settings(documents, _container(deployment)).worker.graceful_timeout_s
    assert grace > 2 * configured
    assert grace > 2 * WorkerSettings().graceful_timeout_s  # the default, should the variable be dropped


def test_every_container_has_requests_and_limits(documents: list[dict[str, Any]]) -> None:
    for workload in _workloads(documents):
        for container in _pod(workload)["containers"]:
            resources = container["resources"]
            request, limit = _bytes(resources["requests"]["memory"]), _bytes(resources["limits"]["memory"])
            assert resources["requests"]["cpu"], container["name"]
            assert 0 < request <= limit, container["name"]
    worker = _container(_one(documents, "Deployment", "worker"))["resources"]
    assert _bytes(worker["requests"]["memory"]) >= WORKER_RSS_MIB * 2**20  # scheduled where it fits
    assert _bytes(worker["limits"]["memory"]) >= 2 * WORKER_RSS_MIB * 2**20  # headroom, never OOM-killed at rest
    assert _bytes(worker["limits"]["memory"]) <= 8 * WORKER_RSS_MIB * 2**20  # and not a blank cheque


def test_every_variable_is_a_setting_with_an_accepted_value(documents: list[dict[str, Any]]) -> None:
    known = {leaf.name for leaf in all_leaves()}
    for workload in _workloads(documents):
        for container in _pod(workload)["containers"]:
            names = _all_env_names(documents, container)
            assert names, container["name"]
            assert names <= known, f"{container['name']}: {sorted(names - known)} unknown to the settings class"
            _settings(documents, container)  # the written values pass the settings' own checks


def test_credentials_come_from_a_secret(documents: list[dict[str, Any]]) -> None:
    for workload in _workloads(documents):
        for container in _pod(workload)["containers"]:
            plain = _plain_env(documents, container)
            assert not SECRET_VARIABLES & set(plain), f"{container['name']} writes a credential in the manifest"
            for item in container.get("env", []):
                if item["name"] in SECRET_VARIABLES:
                    assert item["valueFrom"]["secretKeyRef"]["name"], item
    worker_names = _all_env_names(documents, _container(_one(documents, "Deployment", "worker")))
    assert {"DATABASE_URL", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} <= worker_names


def test_runs_as_the_images_non_root_user(documents: list[dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid = int(re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)[1])  # type: ignore[index]
    for workload in _workloads(documents):
        context = _pod(workload)["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid


def test_every_object_is_valid_for_the_kubernetes_api(documents: list[dict[str, Any]]) -> None:
    """Field names and types against the Kubernetes API's own models (the official Python client's, which
    refuse unknown fields): a misspelt key or a wrong type fails here, offline, as the API server would."""
    from kubernetes import client

    models = {
        ("v1", "ConfigMap"): client.V1ConfigMap,
        ("v1", "Service"): client.V1Service,
        ("apps/v1", "Deployment"): client.V1Deployment,
        ("batch/v1", "Job"): client.V1Job,
    }
    for doc in documents:
        model = models[(doc["apiVersion"], doc["kind"])]
        model.model_validate(doc)
    worker = next(doc for doc in documents if doc["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(worker))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(ValueError, match="livenesProbe"):  # the check can fail: a misspelt field is refused
        client.V1Deployment.model_validate(broken)
