"""One scrape of Ray's metrics endpoint holds every replica: the real Serve app (real FAISS,
SASRec, ranker; the fake engine behind the generator seam) with 2 ingress replicas, N requests,
and the per-replica counters summed over the `replica` tag add up to N.

    pytest -q tests/serve/test_ray_metrics.py
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import defaultdict

import httpx
import pytest

from serve.metrics import ray_name
from tests.cluster.ray_ports import free_ports
from tests.serve.test_app import LEAN

pytestmark = pytest.mark.slow
N = 24  # recommendation requests
PAGES = 3  # product pages (generated: the generator's outcomes are counted)
TWO_INGRESS = [
    *(o for o in LEAN if not o.startswith("serve.deployments.ingress.max_replicas")),
    "serve.deployments.ingress.min_replicas=2",
    "serve.deployments.ingress.max_replicas=2",
]


def init_ray_exporting_metrics(num_cpus: int = 2) -> str:
    """A local Ray whose metrics agent listens on a free port; returns its /metrics URL."""
    import ray

    metrics_port, haproxy_metrics, haproxy_stats = free_ports(3)
    with pytest.MonkeyPatch.context() as mp:
        # Ray's core workers push their metrics to the node's agent every report interval (10 s by
        # default); shorter here so the test polls for seconds, not tens of seconds.
        mp.setenv("RAY_metrics_report_interval_ms", "500")
        # Serve's HAProxy binds fixed ports (9101, 8404) by default: another Serve on this machine
        # would hold them. The raylet and its workers inherit these from this process.
        mp.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(haproxy_metrics))
        mp.setenv("RAY_SERVE_HAPROXY_STATS_PORT", str(haproxy_stats))
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port)
    return f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.fixture(scope="module")
def cluster(serving_artifacts):
    import ray
    from ray import serve

    from core.config import load_config
    from serve.app import build_app
    from serve.catalog import load_catalog

    http_port = free_ports(1)[0]
    metrics_url = init_ray_exporting_metrics()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    overrides = [*serving_artifacts, *TWO_INGRESS]
    serve.run(build_app({"overrides": overrides, "engine": "fake"}), name="metrics", route_prefix="/")
    catalog = load_catalog(load_config(overrides=overrides))
    yield {"base": f"http://127.0.0.1:{http_port}", "metrics": metrics_url}, catalog
    serve.shutdown()
    ray.shutdown()


def scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    """Ray's endpoint as {sample name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(httpx.get(url, timeout=30).text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def total(samples, by: str | None = None, **match) -> dict[str, float] | float:
    """Sum of the samples whose labels match, per value of `by` (or all together)."""
    sums: dict[str, float] = defaultdict(float)
    for labels, value in samples:
        if all(labels.get(k) == v for k, v in match.items()):
            sums[labels.get(by, "") if by else ""] += value
    return dict(sums) if by else sums[""]


def poll(url: str, ready, deadline_s: float = 120):
    """Scrape until `ready(scrape)` holds: export is periodic, so a count arrives within a few intervals."""
    end = time.monotonic() + deadline_s
    while True:
        got = scrape(url)
        if ready(got) or time.monotonic() > end:
            return got
        time.sleep(0.5)


def test_one_scrape_of_rays_endpoint_sums_both_ingress_replicas(cluster):
    urls, catalog = cluster
    users = sorted(catalog.user_history)[:N]
    with httpx.Client(base_url=urls["base"], timeout=60) as client:

        def recommend(user):
            return client.post("/v1/recommendations", json={"user_id": user, "k": 5, "with_reasons": False})

        with cf.ThreadPoolExecutor(6) as pool:  # concurrent: the proxy spreads them over both replicas
            codes = [r.status_code for r in pool.map(recommend, users)]
        pages = [
            client.get(f"/v1/products/{pid}/page", params={"wait_ms": 2000}) for pid in catalog.popular[10 : 10 + PAGES]
        ]
    assert codes == [200] * N
    assert [p.status_code for p in pages] == [200] * PAGES, [p.text for p in pages]

    requests = ray_name("shopgraph_requests_total")
    route = {"endpoint": "/v1/recommendations", "status": "200", "application": "metrics"}

    def done(got):
        replicas = total(got.get(ray_name("shopgraph_generation_queue"), []), by="replica", deployment="Ingress")
        inside = total(got.get(ray_name("shopgraph_replica_latency_seconds_count"), []), by="deployment")
        return total(got.get(requests, []), **route) >= N and len(replicas) == 2 and len(inside) >= 2

    got = poll(urls["metrics"], done)
    per_replica = total(got[requests], by="replica", **route)
    assert sum(per_replica.values()) == N, per_replica  # every request once, whichever replica answered
    # both ingress replicas export (the gauges run on each replica's loop, requests or not)
    queues = total(got[ray_name("shopgraph_generation_queue")], by="replica", deployment="Ingress")
    assert len(queues) == 2, queues
    # the ingress's own stage latency, and the replicas' time inside the retriever and ranker
    stage_counts = total(got[ray_name("shopgraph_stage_latency_seconds_count")], by="stage")
    assert stage_counts.get("recommendations_total") == N, stage_counts
    inside = total(got[ray_name("shopgraph_replica_latency_seconds_count")], by="deployment")
    # (each replica's own count: its requests and the ingress's health probes; on a loaded box a
    # late retrieval degrades a request to popular items, which then never reaches the ranker)
    assert inside.get("Ranker", 0) >= 1 and inside.get("Retriever", 0) >= 1, inside

    # every page was generated (within its wait, or in the background after it): the Generator
    # replica counts each output by outcome, the ingress each page served by source
    def generator_counted(got):
        return total(got.get(ray_name("shopgraph_generator_outputs_total"), []), kind="page") >= PAGES

    got = poll(urls["metrics"], generator_counted)
    outcomes = total(got[ray_name("shopgraph_generator_outputs_total")], by="outcome", kind="page")
    assert outcomes.get("accepted", 0) >= 1, outcomes  # echo_facts writes grounded pages
    assert total(got[ray_name("shopgraph_generator_completions_total")], event="finished") >= PAGES
    assert total(got[ray_name("shopgraph_content_total")], kind="page") == PAGES

    # the garbage collector's pauses of every process that served something, by deployment
    def pauses(got):
        return total(got.get(ray_name("shopgraph_gc_pause_seconds_count"), []), by="deployment")

    got = poll(urls["metrics"], lambda g: {"Ingress", "Retriever", "Ranker", "Generator"} <= set(pauses(g)))
    assert {"Ingress", "Retriever", "Ranker", "Generator"} <= set(pauses(got)), pauses(got)
    seconds = total(got[ray_name("shopgraph_gc_pause_seconds_sum")], by="deployment")
    assert all(0 < seconds[d] < 60 for d in ("Ingress", "Retriever", "Ranker")), seconds

    # each replica's own /metrics still shows only itself: its share, never all N
    own = scrape(f"{urls['base']}/metrics")
    mine = total(own["shopgraph_requests_total"], endpoint="/v1/recommendations", status="200")
    assert 0 <= mine <= N
