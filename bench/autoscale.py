"""Serve autoscaling, shown: load until a deployment scales from 1 to >= 2 replicas, then back to 1.

    .venv/bin/python bench/autoscale.py --artifacts /tmp/shopgraph-bench [--workers 2] [--deployment ingress]
    .venv/bin/python bench/autoscale.py --artifacts ... --address 127.0.0.1:6379   # a running `cluster up --workers`

Without `--address` it starts its own multi-node cluster on this machine (cluster.local: a head
with 0 CPUs and `--workers` CPU-group worker nodes of `--worker-cpus` logical CPUs each, free ports, a private
temp dir) and stops it at the end, whatever happens. The artifact root is built with the real
pipeline on that cluster when missing (`--set data.sample.num_products=...` to size it), reused
otherwise. The app runs with `engine: "none"`; every deployment on the CPU node group.

The deployment under test (`--deployment`) gets min_replicas 1, max_replicas `--max-replicas`,
target_ongoing_requests `--target`, and the upscale / downscale delays given; everything else is
the profile's. Then `--concurrency` closed-loop clients POST /v1/recommendations (127.0.0.1
only, 10 s timeout each) until Serve's status (`serve.status()`, polled every 0.5 s) shows >= 2
RUNNING replicas of it, keep loading `--hold-s` seconds, stop, and wait until it is back to 1.
Bounded: `--max-up-s`, `--max-down-s`. JSON on stdout: the autoscaling settings Serve reports,
time to scale up (load start -> 2nd replica RUNNING), time to scale down (load stop -> 1
replica), latency p50/p99 while scaling up and while holding, requests and errors by kind, the
replica count timeline (and when the autoscaler's wanted count changed) and which nodes the
replicas ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import REPO, local_cluster, machine, request_mix, stats_ms, stop_local_cluster, wait_ready  # noqa: E402  (puts the repository on sys.path)

DEPLOYMENT_NAMES = {"ingress": "Ingress", "retriever": "Retriever", "ranker": "Ranker"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", required=True, help="artifact root; built on the cluster when missing")
    p.add_argument("--models", default=str(REPO / "models"), help="prepared models (`shopgraph models prepare`)")
    p.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value (pipeline and app)")
    p.add_argument("--address", help="GCS address of a running multi-node cluster; default: start one here")
    p.add_argument(
        "--dashboard", default="http://127.0.0.1:8265", help="with --address: that cluster's dashboard (Serve REST API)"
    )
    p.add_argument("--workers", type=int, default=2, help="CPU-group worker nodes of the cluster this starts")
    p.add_argument(
        "--worker-cpus", type=int, default=2, help="logical CPUs of each (the embed stage needs 1.5 on one node)"
    )
    p.add_argument("--deployment", choices=sorted(DEPLOYMENT_NAMES), default="ingress")
    p.add_argument("--max-replicas", type=int, default=2)
    p.add_argument("--target", type=float, default=2.0, help="target_ongoing_requests of the deployment")
    p.add_argument("--upscale-delay-s", type=float, default=2.0)
    p.add_argument("--downscale-delay-s", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients while loading")
    p.add_argument("--hold-s", type=float, default=10.0, help="keep loading this long after the scale-up")
    p.add_argument("--max-up-s", type=float, default=180.0)
    p.add_argument("--max-down-s", type=float, default=240.0)
    p.add_argument("--port", type=int, default=0, help="Serve HTTP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    problems = [
        f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}"
        for name, ok, rule in (
            ("workers", 1 <= args.workers <= 8, "between 1 and 8"),
            ("worker_cpus", 1 <= args.worker_cpus <= 64, "between 1 and 64"),
            ("max_replicas", args.max_replicas >= 2, ">= 2 (the benchmark shows 1 -> 2+)"),
            ("target", args.target > 0, "> 0"),
            ("concurrency", 1 <= args.concurrency <= 256, "between 1 and 256"),
            ("upscale_delay_s", args.upscale_delay_s >= 0, ">= 0"),
            ("downscale_delay_s", args.downscale_delay_s >= 0, ">= 0"),
            ("hold_s", args.hold_s >= 0, ">= 0"),
            ("max_up_s", args.max_up_s > 0, "> 0"),
            ("max_down_s", args.max_down_s > 0, "> 0"),
        )
        if not ok
    ]
    if problems:
        p.error("; ".join(problems))
    return args


def app_overrides(args: argparse.Namespace) -> list[str]:
    d = f"serve.deployments.{args.deployment}"
    placed = [f"serve.deployments.{name}.node_group=cpu" for name in DEPLOYMENT_NAMES]
    return [
        *placed,
        f"{d}.min_replicas=1",
        f"{d}.max_replicas={args.max_replicas}",
        f"{d}.target_ongoing_requests={args.target}",
        f"{d}.upscale_delay_s={args.upscale_delay_s}",
        f"{d}.downscale_delay_s={args.downscale_delay_s}",
    ]


def start_cluster(args: argparse.Namespace):
    """A head (0 CPUs) and `--workers` CPU-group nodes on free ports; returns (config, GCS address, dashboard)."""
    own, info, _ = local_cluster(args.config, args.workers, args.worker_cpus)
    return own, info.gcs_address, info.dashboard_url


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return int(status.deployments[deployment].replica_states.get("RUNNING", 0))


async def drive(url: str, bodies: list[dict], args, app: str, deployment: str) -> dict:
    """Load until >= 2 replicas (+ hold), then no load until 1; returns the measurements."""
    import httpx

    t0 = time.monotonic()
    timeline: list[tuple[float, int]] = []
    phase = {"name": "up"}
    lat: dict[str, list[float]] = {"up": [], "hold": []}
    errors: Counter = Counter()
    sent = Counter()
    marks: dict[str, float] = {}
    stop_load = asyncio.Event()

    async def poll() -> None:
        while True:
            n = await asyncio.to_thread(running_replicas, app, deployment)
            t = time.monotonic() - t0
            if not timeline or timeline[-1][1] != n:
                timeline.append((round(t, 2), n))
            if phase["name"] == "up" and n >= 2:
                marks["up"] = t
                phase["name"] = "hold"
            elif phase["name"] == "up" and t > args.max_up_s:
                marks["up_timeout"] = t
                stop_load.set()
                return
            elif phase["name"] == "hold" and t - marks["up"] >= args.hold_s:
                marks["load_stopped"] = t
                phase["name"] = "down"
                stop_load.set()
            elif phase["name"] == "down" and n == 1:
                marks["down"] = t
                return
            elif phase["name"] == "down" and t - marks["load_stopped"] > args.max_down_s:
                marks["down_timeout"] = t
                return
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=limits) as client:

        async def worker(i: int) -> None:
            j = i
            while not stop_load.is_set():
                body = bodies[j % len(bodies)]
                j += args.concurrency
                which = phase["name"]
                start = time.monotonic()
                try:
                    r = await client.post("/v1/recommendations", json=body)
                    if r.status_code == 200:
                        lat.setdefault(which, []).append(time.monotonic() - start)
                    else:
                        errors[f"http_{r.status_code}"] += 1
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                sent[which] += 1

        poller = asyncio.create_task(poll())
        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
        await poller
    return {"t_marks": marks, "timeline": timeline, "latency": lat, "errors": errors, "sent": sent}


def replica_nodes(dashboard: str, app: str, deployment: str) -> tuple[dict[str, int], int]:
    """RUNNING replicas of the deployment per node (by the node's `shopgraph-*` name), and the replica
    count the autoscaler currently wants (`target_num_replicas`), from Serve's REST API."""
    import ray

    from cluster.local import get_json

    names = {}
    for n in ray.nodes():
        named = [k for k in n["Resources"] if k.startswith("shopgraph-")]
        names[n["NodeID"]] = named[0] if named else "head"
    details = get_json(f"{dashboard}/api/serve/applications/", timeout=30)["applications"][app]["deployments"]
    reps = details[deployment]["replicas"]
    running = dict(Counter(names.get(r["node_id"], "?") for r in reps if r["state"] == "RUNNING"))
    return running, int(details[deployment].get("target_num_replicas", 0))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the mode `cluster up` pins its head to, unless told
    import ray
    from ray import serve

    from cluster.local import get_json
    from cluster.pipeline import run_pipeline
    from core.config import load_config
    from serve.app import build_app
    from serve.catalog import load_catalog

    base = [f"artifacts.root={Path(args.artifacts).resolve()}", f"models.dir={Path(args.models).resolve()}"]
    overrides = [*base, *args.overrides, *app_overrides(args)]
    cfg = load_config(args.config, overrides)
    own = None
    address, dashboard = args.address, args.dashboard.rstrip("/")
    try:
        if address is None:
            own, address, dashboard = start_cluster(args)
        ray.init(address=address, log_to_driver=False)
        nodes = sorted(
            next((k for k in n["Resources"] if k.startswith("shopgraph-")), "head") for n in ray.nodes() if n["Alive"]
        )
        t = time.perf_counter()
        run_pipeline(cfg, echo=lambda line: print(line, file=sys.stderr))
        pipeline_s = time.perf_counter() - t
        catalog = load_catalog(cfg)
        port = args.port
        if port == 0:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        app = "autoscale"
        t = time.perf_counter()
        serve.run(
            build_app({"config_path": args.config, "overrides": overrides, "engine": "none"}),
            name=app,
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        ready_s = time.perf_counter() - t
        deployment = DEPLOYMENT_NAMES[args.deployment]
        reported = get_json(f"{dashboard}/api/serve/applications/", timeout=30)["applications"][app]["deployments"][
            deployment
        ]["deployment_config"]
        want = getattr(cfg.serve.deployments, args.deployment).options()["autoscaling_config"]
        settings = {
            k: reported["autoscaling_config"].get(k) for k in (*want, "metrics_interval_s", "look_back_period_s")
        }
        before = running_replicas(app, deployment)
        bodies = request_mix(catalog, 2000, args.seed)
        load = machine()
        peak_nodes: dict[str, int] = {}
        targets: list[tuple[float, int]] = []  # when the autoscaler's wanted count changed (REST, every ~2 s)
        t_load = time.monotonic()

        async def run() -> dict:
            async def watch_nodes() -> None:  # where the replicas ran, at their most; what the autoscaler wanted
                nonlocal peak_nodes
                while True:
                    try:
                        seen, target = await asyncio.to_thread(replica_nodes, dashboard, app, deployment)
                    except Exception:  # the REST API is busy under load; the next poll answers
                        seen, target = {}, None
                    if sum(seen.values()) > sum(peak_nodes.values()):
                        peak_nodes = seen
                    if target is not None and (not targets or targets[-1][1] != target):
                        targets.append((round(time.monotonic() - t_load, 2), target))
                    await asyncio.sleep(2.0)

            watcher = asyncio.create_task(watch_nodes())
            try:
                return await drive(url, bodies, args, app, deployment)
            finally:
                watcher.cancel()

        result = asyncio.run(run())
        marks, timeline = result["t_marks"], result["timeline"]
        requests = sum(result["sent"].values())
        errors = sum(result["errors"].values())
        out = {
            "benchmark": "autoscale",
            "cluster": {"nodes": nodes, "started_here": own is not None},
            "deployment": deployment,
            "settings_reported_by_serve": settings,
            "settings_match_config": all(settings[k] == v for k, v in want.items()),
            "concurrency": args.concurrency,
            "replicas_before": before,
            "max_replicas_seen": max((n for _, n in timeline), default=0),
            "replicas_by_node_at_peak": peak_nodes,
            "scaled_up": "up" in marks,
            "time_to_scale_up_s": round(marks["up"], 2) if "up" in marks else None,
            "scaled_down": "down" in marks,
            "time_to_scale_down_s": round(marks["down"] - marks["load_stopped"], 2) if "down" in marks else None,
            "latency_ms_during_scale_up": stats_ms(result["latency"].get("up", [])),
            "latency_ms_after_scale_up": stats_ms(result["latency"].get("hold", [])),
            "requests": requests,
            "errors": errors,
            "errors_by_kind": dict(result["errors"]),
            "replica_timeline_s": timeline,
            "autoscaler_target_timeline_s": targets,
            "pipeline_s": round(pipeline_s, 1),
            "app_ready_s": round(ready_s, 1),
            "machine_at_start": load,
            "machine_at_end": machine(),
        }
        print(json.dumps(out, indent=2))
        return 0 if out["scaled_up"] and out["scaled_down"] and errors == 0 else 1
    finally:
        if ray.is_initialized():
            try:
                if own is None:  # on a cluster of our own, Serve goes with it (its shutdown waits 30 s here)
                    serve.shutdown()
            finally:
                ray.shutdown()
        if own is not None:
            stop_local_cluster(own)


if __name__ == "__main__":
    raise SystemExit(main())
