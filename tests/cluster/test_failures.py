"""A worker node SIGKILLed under load: the app keeps answering and Serve puts its replicas back elsewhere.

    .venv/bin/python -m pytest -q -m multinode tests/cluster/test_failures.py

One module-scoped cluster (`cluster.local.start_cluster`: a head with 0 CPUs and two CPU-group
worker nodes, free ports, a private temp dir), its head set up for GCS fault tolerance with a real
Redis as the KubeRay manifests render it (`cluster.faults.gcs_ft_env`), serves the real app (fake
engine behind the generator seam) with two replicas of every deployment, which Serve spreads over
the two worker nodes; the proxy runs on the head. Small load (10 req/s for 20 s, recommendations
and product pages), one worker node killed 5 s in. The full-size figures come from
bench/failures.py (50 req/s for 120 s), which also runs the GCS kill.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections import Counter

import pytest

from cluster.faults import gcs_ft_env, kill_worker_node
from cluster.local import get_json, start_cluster, stop_head
from core.config import load_config
from tests.cluster.ray_ports import free_ports, head_overrides

REPLICAS = 2
VICTIM = "shopgraph-cpu-2"
PLACED = [
    f"serve.deployments.{d}.{key}"
    for d in ("ingress", "retriever", "ranker", "generator")
    for key in ("node_group=cpu", "num_cpus=0.05", f"min_replicas={REPLICAS}", f"max_replicas={REPLICAS}")
]


@pytest.fixture(scope="module")
def served(serving_artifacts):
    """(base URL, dashboard URL, RayConfig, config, {node id: node name}) of the app on a 3-node cluster."""
    import ray
    from ray import serve

    from core.redisserver import local_redis, missing_reason
    from serve.app import build_app

    if missing_reason():
        pytest.skip(missing_reason())
    overrides = [
        *head_overrides(),
        "cluster.local.cpu_workers.workers=2",
        "cluster.local.cpu_workers.num_cpus=2",
        "cluster.local.gpu_workers.workers=0",
    ]
    cfg = load_config(overrides=[*overrides, *serving_artifacts, *PLACED])
    ray_cfg = cfg.cluster.ray
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the driver speaks the head's (pinned) mode
    with local_redis() as redis:
        head_only, every = gcs_ft_env(f"127.0.0.1:{redis.port}", "shopgraph-test")
        # Serve's HAProxy binds fixed stats and metrics ports (8404, 9101) unless told: free ones, so
        # another Serve on this machine does not make it crash.
        metrics_port, stats_port = free_ports(2)
        haproxy = {
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        }
        try:
            info, _ = start_cluster(
                ray_cfg,
                cfg.cluster.local,
                env={**cfg.serve.http.ray_env(), **haproxy, **every},
                head_only_env=head_only,
            )
            ray.init(address=info.gcs_address, log_to_driver=False)
            (port,) = free_ports(1)
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            overrides_app = [*serving_artifacts, *PLACED]
            serve.run(build_app({"overrides": overrides_app, "engine": "fake"}), name="shopgraph", route_prefix="/")
            yield f"http://127.0.0.1:{port}", info.dashboard_url, ray_cfg, cfg, _names()
        finally:
            if ray.is_initialized():
                ray.shutdown()  # Serve goes with the cluster (its shutdown would wait on the dead node)
            stop_head(ray_cfg)
            shutil.rmtree(ray_cfg.temp_dir, ignore_errors=True)
            if auth is None:
                os.environ.pop("RAY_AUTH_MODE", None)


def _names() -> dict[str, str]:
    import ray

    out = {}
    for n in ray.nodes():
        named = [k for k in n["Resources"] if k.startswith("shopgraph-")]
        out[n["NodeID"]] = named[0] if named else "head"
    return out


def _placement(dashboard: str, names: dict[str, str]) -> dict[str, Counter]:
    deployments = get_json(f"{dashboard}/api/serve/applications/", timeout=30)["applications"]["shopgraph"]
    return {
        name: Counter(names.get(r["node_id"], "?") for r in d["replicas"] if r["state"] == "RUNNING")
        for name, d in deployments["deployments"].items()
    }


def _running() -> dict[str, int]:
    from ray import serve

    app = serve.status().applications["shopgraph"]
    return {n: int(d.replica_states.get("RUNNING", 0)) for n, d in app.deployments.items()}


async def _load(url: str, calls: list, rate: float, duration: float, kill_at: float, kill) -> list[tuple]:
    """Open loop: call i at i/rate seconds; `kill()` runs in a thread at `kill_at`. Returns
    (offset, kind, status or error name, sections_source)."""
    import httpx

    out: list[tuple] = []
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        t0 = time.monotonic()

        async def one(i: int) -> None:
            method, path, kwargs = calls[i % len(calls)]
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            kind = "page" if method == "GET" else "recs"
            try:
                r = await client.request(method, path, **kwargs)
            except httpx.HTTPError as e:
                out.append((i / rate, kind, type(e).__name__, None))
                return
            source = r.json().get("sections_source") if r.status_code == 200 and kind == "page" else None
            out.append((i / rate, kind, r.status_code, source))

        async def killer() -> None:
            await asyncio.sleep(kill_at)
            await asyncio.to_thread(kill)

        done = asyncio.create_task(killer())
        await asyncio.gather(*(one(i) for i in range(int(rate * duration))))
        await done
    return out


@pytest.mark.slow
@pytest.mark.multinode
def test_a_killed_worker_node_costs_under_one_percent_and_its_replicas_come_back_elsewhere(served):
    from serve.catalog import load_catalog

    url, dashboard, ray_cfg, cfg, names = served
    before = _placement(dashboard, names)
    assert all(set(nodes) == {"shopgraph-cpu-1", "shopgraph-cpu-2"} for nodes in before.values()), before

    catalog = load_catalog(cfg)
    rng = random.Random(0)
    users = sorted(u for u, h in catalog.user_history.items() if len(h))
    products = sorted(catalog.products)
    calls = [
        ("GET", f"/v1/products/{rng.choice(products)}/page", {"params": {"user_id": rng.choice(users)}})
        if i % 3 == 0
        else ("POST", "/v1/recommendations", {"json": {"user_id": rng.choice(users), "k": 5}})
        for i in range(200)
    ]
    killed = {}
    records = asyncio.run(
        _load(
            url, calls, rate=10, duration=20, kill_at=5, kill=lambda: killed.update(k=kill_worker_node(ray_cfg, VICTIM))
        )
    )
    assert killed["k"].pids, "nothing was killed"
    codes = Counter(str(r[2]) for r in records)
    assert codes["200"] / len(records) >= 0.99, codes
    pages_after = [r for r in records if r[1] == "page" and r[0] >= 5]
    assert pages_after and all(r[2] == 200 for r in pages_after), Counter(str(r[2]) for r in pages_after)
    assert {r[3] for r in pages_after} <= {"generated", "cached", "template", "mixed"}

    deadline = time.monotonic() + 240  # a busy box starts replicas slowly
    placed: dict = {}
    while time.monotonic() < deadline:
        running = _running()
        if all(n >= REPLICAS for n in running.values()):
            placed = _placement(dashboard, names)
            if all(VICTIM not in nodes for nodes in placed.values()):
                break
        time.sleep(1)
    assert placed and all(dict(nodes) == {"shopgraph-cpu-1": REPLICAS} for nodes in placed.values()), placed


def test_gcs_ft_env_puts_redis_on_the_head_only():
    head, every = gcs_ft_env("127.0.0.1:6379", "ns")
    assert head == {"RAY_REDIS_ADDRESS": "127.0.0.1:6379", "RAY_external_storage_namespace": "ns"}
    assert "RAY_REDIS_ADDRESS" not in every and int(every["RAY_gcs_rpc_server_reconnect_timeout_s"]) >= 60


def test_killing_a_node_of_no_cluster_says_so():
    from cluster.local import LocalClusterError

    ray_cfg = load_config(overrides=head_overrides()).cluster.ray
    with pytest.raises(LocalClusterError, match="no cluster started by `shopgraph cluster up`"):
        kill_worker_node(ray_cfg, VICTIM)
