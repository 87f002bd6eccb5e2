"""Prometheus and Grafana for the KubeRay pods, rendered into k8s/monitoring.yaml.

    shopgraph cluster render            # writes it with the other manifests

A PodMonitor (Prometheus Operator, monitoring.coreos.com/v1) scrapes the `metrics` container
port (Ray's metrics agent, `cluster.k8s.monitoring.metrics_port`) of every shopgraph Ray pod:
each node's agent exports the Ray metrics of every process on that node, so one scrape per pod
holds all the Serve replicas there (serve.metrics). The Grafana dashboard of the serving graph
is a ConfigMap that Grafana's dashboard sidecar loads (label `grafana_dashboard`); its panels
query only the names serve.metrics and vLLM's Ray stat logger export (a test parses them).
"""

from __future__ import annotations

import json
from typing import Any

from serve.metrics import ray_name

Obj = dict[str, Any]
METRICS_PORT_NAME = "metrics"
DASHBOARD_CONFIG_MAP = "shopgraph-grafana-dashboard"
DASHBOARD_FILE = "shopgraph.json"
DASHBOARD_UID = "shopgraph-graph"
RATE = "[$__rate_interval]"


def pod_monitor(cfg, labels: dict[str, str], ray_components: list[str]) -> Obj:
    """Scrapes every Ray pod the manifests render (RayService, dev RayCluster, RayJobs): selected by
    the labels they share and their component, on the named metrics port."""
    mon = cfg.cluster.k8s.monitoring
    app = cfg.cluster.k8s.serve_app.name
    selector_labels = {k: v for k, v in labels.items() if k != "app.kubernetes.io/component"}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": f"{app}-ray",
            "namespace": cfg.cluster.namespace,
            "labels": {**labels, **mon.label(mon.prometheus_label)},
        },
        "spec": {
            "jobLabel": "app.kubernetes.io/part-of",
            "namespaceSelector": {"matchNames": [cfg.cluster.namespace]},
            "selector": {
                "matchLabels": selector_labels,
                "matchExpressions": [
                    {"key": "app.kubernetes.io/component", "operator": "In", "values": sorted(ray_components)}
                ],
            },
            "podMetricsEndpoints": [
                {
                    "port": METRICS_PORT_NAME,
                    "path": "/metrics",
                    "interval": mon.scrape_interval,
                    # KubeRay labels each pod with its cluster and node type: keep them on every series
                    # (the Grafana dashboard of KubeRay's docs filters by ray_io_cluster).
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
                            "targetLabel": "ray_io_cluster",
                        },
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_node_type"],
                            "targetLabel": "ray_io_node_type",
                        },
                    ],
                }
            ],
        },
    }


def _q(name: str) -> str:
    return ray_name(name)


def _hist(name: str, by: str, q: float) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({_q(name)}_bucket{RATE})))"


# (title, unit, [(legend, expr)]): the graph's request path, its degradation, the content cache,
# then the engine (vLLM's own metrics through Ray: `vllm_*`).
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Requests per second by endpoint",
        "reqps",
        [("{{endpoint}}", f"sum by (endpoint) (rate({_q('shopgraph_requests_total')}{RATE}))")],
    ),
    (
        "Errors (5xx) per second by endpoint",
        "reqps",
        [("{{endpoint}}", f'sum by (endpoint) (rate({_q("shopgraph_requests_total")}{{status=~"5.."}}{RATE}))')],
    ),
    (
        "Latency p99 per stage (ingress view, queueing included)",
        "s",
        [("{{stage}}", _hist("shopgraph_stage_latency_seconds", "stage", 0.99))],
    ),
    (
        "Latency p50 per stage (ingress view)",
        "s",
        [("{{stage}}", _hist("shopgraph_stage_latency_seconds", "stage", 0.5))],
    ),
    (
        "Time inside the replicas p99 (retriever batch, ranker, generator)",
        "s",
        [("{{stage}}", _hist("shopgraph_replica_latency_seconds", "stage", 0.99))],
    ),
    (
        "Retriever batch size p50",
        "none",
        [("{{stage}}", _hist("shopgraph_batch_size", "stage", 0.5))],
    ),
    (
        "Fallbacks by stage and reason",
        "ops",
        [("{{stage}} {{why}}", f"sum by (stage, why) (rate({_q('shopgraph_fallbacks_total')}{RATE}))")],
    ),
    (
        "Generated copy rejected by gate (grounding, copy gates)",
        "ops",
        [
            (
                "{{kind}} {{outcome}}",
                f'sum by (kind, outcome) (rate({_q("shopgraph_generator_outputs_total")}{{outcome!="accepted"}}{RATE}))',
            ),
            (
                "{{kind}} claims removed",
                f"sum by (kind) (rate({_q('shopgraph_generator_removed_claims_total')}{RATE}))",
            ),
        ],
    ),
    (
        "Content served by source",
        "ops",
        [("{{kind}} {{source}}", f"sum by (kind, source) (rate({_q('shopgraph_content_total')}{RATE}))")],
    ),
    (
        "Content cache hit rate (all ingress replicas)",
        "percentunit",
        [
            (
                "hit rate",
                f'sum({_q("shopgraph_content_cache")}{{what="hits"}}) / '
                f'clamp_min(sum({_q("shopgraph_content_cache")}{{what=~"hits|misses"}}), 1)',
            ),
            (
                "from Redis",
                f'sum({_q("shopgraph_content_cache")}{{what="shared_hits"}}) / '
                f'clamp_min(sum({_q("shopgraph_content_cache")}{{what="hits"}}), 1)',
            ),
        ],
    ),
    (
        "Background generation queue",
        "none",
        [("{{what}}", f"sum by (what) ({_q('shopgraph_generation_queue')})")],
    ),
    (
        "Stage health (worst replica: 1 ok, 0.5 busy, 0 down)",
        "none",
        [("{{stage}}", f"min by (stage) ({_q('shopgraph_stage_up')})")],
    ),
    (
        "Garbage-collector pauses by deployment (every request in the process waits them out)",
        "s",
        [
            ("{{deployment}} p99", _hist("shopgraph_gc_pause_seconds", "deployment", 0.99)),
            (
                "{{deployment}} paused per second",
                f"sum by (deployment) (rate({_q('shopgraph_gc_pause_seconds')}_sum{RATE}))",
            ),
        ],
    ),
    (
        "Engine tokens per second",
        "none",
        [
            ("prompt", f"sum(rate({_q('vllm_prompt_tokens_total')}{RATE}))"),
            ("generation", f"sum(rate({_q('vllm_generation_tokens_total')}{RATE}))"),
        ],
    ),
    (
        "Engine time to first token",
        "s",
        [
            (
                "p50",
                f"histogram_quantile(0.5, sum by (le) (rate({_q('vllm_time_to_first_token_seconds')}_bucket{RATE})))",
            ),
            (
                "p99",
                f"histogram_quantile(0.99, sum by (le) (rate({_q('vllm_time_to_first_token_seconds')}_bucket{RATE})))",
            ),
        ],
    ),
    (
        "Engine queue (requests)",
        "none",
        [
            ("waiting", f"sum({_q('vllm_num_requests_waiting')})"),
            ("running", f"sum({_q('vllm_num_requests_running')})"),
        ],
    ),
    (
        "Engine KV-cache use per replica",
        "percentunit",
        [("{{ReplicaId}}", f"max by (ReplicaId) ({_q('vllm_kv_cache_usage_perc')})")],
    ),
]


def dashboard() -> Obj:
    """The Grafana dashboard (JSON model, schemaVersion 39): two panels a row."""
    panels = []
    for n, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": n + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": DASHBOARD_UID,
        "title": "shopgraph serving graph",
        "tags": ["shopgraph", "ray"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def dashboard_config_map(cfg, labels: dict[str, str]) -> Obj:
    mon = cfg.cluster.k8s.monitoring
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": DASHBOARD_CONFIG_MAP,
            "namespace": cfg.cluster.namespace,
            "labels": {**labels, **mon.label(mon.grafana_label)},
        },
        "data": {DASHBOARD_FILE: json.dumps(dashboard(), indent=1, sort_keys=True) + "\n"},
    }
