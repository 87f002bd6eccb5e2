"""k8s/monitoring.yaml: the PodMonitor scrapes the named metrics port of every Ray pod the
manifests render, and the Grafana dashboard queries only metrics the code exports.

    pytest -q tests/cluster/test_monitoring.py
"""

from __future__ import annotations

import inspect
import json
import re

import pytest

from cluster.manifest_schema import validate_pod_monitor
from cluster.manifests import render
from cluster.monitoring import DASHBOARD_FILE, PANELS
from core.config import ConfigError, load_config
from serve.metrics import ENGINE_METRICS, REPLICA_TAGS, MetricSet


@pytest.fixture(scope="module")
def gpu_cfg():
    return load_config("configs/gpu-cluster.yaml")


def _pod_templates(files) -> list[tuple[str, dict]]:
    """(where, pod template) of every pod the manifests render, Ray or not."""
    out = []
    for name, objects in files.items():
        for obj in objects:
            spec = obj.get("spec", {})
            cluster = (
                spec.get("rayClusterConfig")
                or spec.get("rayClusterSpec")
                or (spec if obj["kind"] == "RayCluster" else None)
            )
            if cluster:
                out.append((f"{name} head", cluster["headGroupSpec"]["template"]))
                out += [(f"{name} {g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
            if obj["kind"] == "CronJob":
                out.append((f"{name} cronjob", spec["jobTemplate"]["spec"]["template"]))
    return out


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        has = e["key"] in labels
        value = labels.get(e["key"])
        ok = {"In": has and value in e.get("values", []), "NotIn": not has or value not in e.get("values", []),
              "Exists": has, "DoesNotExist": not has}[e["operator"]]  # fmt: skip
        if not ok:
            return False
    return True


def test_the_pod_monitor_selects_every_ray_pod_on_its_metrics_port(gpu_cfg):
    files = render(gpu_cfg)
    monitor, dash = files["monitoring.yaml"]
    assert validate_pod_monitor(monitor) == []
    mon = gpu_cfg.cluster.k8s.monitoring
    assert monitor["metadata"]["labels"].items() >= mon.label(mon.prometheus_label).items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [gpu_cfg.cluster.namespace]
    port_names = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    pods = _pod_templates(files)
    ray_pods = [(w, p) for w, p in pods if "cronjob" not in w]
    assert len(ray_pods) >= 3 + 2 * 13  # the service's head + 2 groups, every RayJob, the dev cluster
    for where, pod in ray_pods:
        assert _selects(monitor["spec"]["selector"], pod["metadata"]["labels"]), where
        ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for name in port_names:
            assert ports.get(name) == mon.metrics_port, f"{where}: no container port {name!r}"
    for where, pod in pods:
        if "cronjob" in where:  # kubectl only: no Ray, no metrics port
            assert not _selects(monitor["spec"]["selector"], pod["metadata"]["labels"]), where
    # Ray's agent listens where the port says
    service = files["rayservice.yaml"][0]["spec"]["rayClusterConfig"]
    starts = [service["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"] for g in service["workerGroupSpecs"])]
    assert all(s["metrics-export-port"] == str(mon.metrics_port) for s in starts)
    assert dash["kind"] == "ConfigMap" and dash["metadata"]["labels"].items() >= mon.label(mon.grafana_label).items()
    assert json.loads(dash["data"][DASHBOARD_FILE])["panels"]


def test_the_pod_monitor_schema_catches_typos_and_wrong_types(gpu_cfg):
    monitor = render(gpu_cfg)["monitoring.yaml"][0]
    typo = json.loads(json.dumps(monitor))
    typo["spec"]["podMetricEndpoints"] = typo["spec"].pop("podMetricsEndpoints")
    assert any("podMetricEndpoints" in e or "podMetricsEndpoints" in e for e in validate_pod_monitor(typo))
    wrong = json.loads(json.dumps(monitor))
    wrong["spec"]["podMetricsEndpoints"][0]["port"] = 8080
    assert any("port" in e for e in validate_pod_monitor(wrong))
    bad_interval = json.loads(json.dumps(monitor))
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert validate_pod_monitor(bad_interval)


def test_monitoring_can_be_switched_off(gpu_cfg):
    off = load_config("configs/gpu-cluster.yaml", ["cluster.k8s.monitoring.enabled=false"])
    assert "monitoring.yaml" not in render(off)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("cluster.k8s.monitoring.scrape_interval=soon", "scrape_interval"),
        ("cluster.k8s.monitoring.metrics_port=0", "metrics_port"),
        ("cluster.k8s.monitoring.scrape_every=15s", "scrape_every"),
        ("cluster.k8s.monitoring.prometheus_label=release", "prometheus_label"),
    ],
)
def test_bad_monitoring_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("configs/gpu-cluster.yaml", [override])


def _exported() -> dict[str, tuple[str, set[str]]]:
    """Series name (without Ray's `ray_` prefix) -> (kind, labels) of every metric the code defines."""
    from serve.deployments import replica_metrics
    from serve.testing import echo_facts
    from tests.serve.test_stream import PRIVACY, _ingress

    ingress = _ingress(echo_facts, privacy=PRIVACY)
    latency, batch = replica_metrics(batch_sizes=True)
    sets: list[MetricSet] = [ingress.metrics, ingress.generator.core.metrics]
    metrics = [m for ms in sets for m in ms.metrics.values()] + [latency, batch]
    out: dict[str, tuple[str, set[str]]] = {}
    for m in metrics:
        labels = set(m.labelnames) | set(REPLICA_TAGS)
        names = [f"{m.name}_{s}" for s in ("bucket", "count", "sum")] if m.kind == "histogram" else [m.name]
        for n in names:
            out[n] = (m.kind, labels | ({"le"} if n.endswith("_bucket") else set()))
    engine_labels = {"model_name", "engine", "ReplicaId"}
    for name, kind in ENGINE_METRICS.items():
        names = [f"{name}_{s}" for s in ("bucket", "count", "sum")] if kind == "histogram" else [name]
        for n in names:
            out[n] = (kind, engine_labels | ({"le"} if n.endswith("_bucket") else set()))
    return out


def test_every_metric_a_dashboard_panel_queries_is_exported():
    exported = _exported()
    queried = 0
    for title, _unit, targets in PANELS:
        for _legend, expr in targets:
            names = re.findall(r"\bray_([A-Za-z0-9_]+)", expr)
            assert names, f"{title}: no Ray metric in {expr!r}"
            for name in names:
                assert name in exported, f"{title}: {name} is not exported by the code"
                queried += 1
            for group in re.findall(r"\bby \(([^)]*)\)", expr):  # every label grouped by exists
                labels = {label.strip() for label in group.split(",")}
                assert any(labels <= exported[n][1] for n in names), f"{title}: {labels} not on {names}"
            for label in re.findall(r"\{(\w+)[=!~]", expr):
                assert any(label in exported[n][1] for n in names), f"{title}: {label} not on {names}"
    assert queried >= len(PANELS)


def test_the_engine_metrics_are_the_ones_vllms_ray_stat_logger_registers():
    from vllm.v1.metrics import loggers

    source = inspect.getsource(loggers.PrometheusStatLogger)
    for name, kind in ENGINE_METRICS.items():
        base = name.removeprefix("vllm_").removesuffix("_total" if kind == "counter" else "")
        assert f'name="vllm:{base}"' in source, name
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    assert issubclass(RayPrometheusStatLogger, loggers.PrometheusStatLogger)
