"""Shared pieces of the Serve benchmarks (bench/serve_*.py): artifacts, a local app, inputs, stats.

Not a benchmark itself. Each benchmark builds (or reuses) one artifact root with the real
pipeline (`cluster.pipeline.run_pipeline`, idempotent: finished stages are skipped), starts
local Ray with 2 CPUs as the tests do, and serves `serve.app:build_app` on 127.0.0.1 only.
With `--workers N` the app runs on a multi-node cluster instead (`local_cluster`: a head with
0 CPUs and N CPU-group worker nodes, every deployment placed on the CPU group, the proxy on the
head), the layout the KubeRay manifests render.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402  (after the repository is put on sys.path)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        required=True,
        help="artifact root; built with the default sample size when missing, reused otherwise",
    )
    p.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    p.add_argument("--models", default=str(REPO / "models"), help="prepared models (`shopgraph models prepare`)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra dotted.key=value overrides (pipeline and app)",
    )
    p.add_argument("--port", type=int, default=8137, help="Serve HTTP port on 127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="0: one local Ray node with 2 CPUs; N: a multi-node cluster (head + N CPU-group worker nodes, "
        "every deployment on the CPU group)",
    )
    p.add_argument("--worker-cpus", type=int, default=1, help="logical CPUs of each worker node (--workers)")


def local_cluster(
    config: str,
    workers: int,
    worker_cpus: int,
    overrides: list[str] = (),
    env: dict[str, str] | None = None,
    head_only_env: dict[str, str] | None = None,
):
    """Start a head (0 CPUs) and `workers` CPU-group worker nodes with the project's code
    (`cluster.local.start_cluster`) on free ports in a private temp dir; returns (config, HeadInfo,
    worker nodes). Serve's HAProxy gets free stats and metrics ports too (it binds 8404 and 9101
    unless told), so another Serve on this machine cannot make it crash. `stop_local_cluster` undoes it."""
    from cluster.local import free_ports, start_cluster
    from core.config import load_config

    gcs, dash, client, agent, metrics, stats = free_ports(6)
    temp = Path(tempfile.gettempdir()) / f"sgb-{secrets.token_hex(4)}"  # short: Ray puts sockets under it
    cfg = load_config(
        config,
        [
            f"cluster.ray.gcs_port={gcs}",
            f"cluster.ray.dashboard_port={dash}",
            f"cluster.ray.client_server_port={client}",
            f"cluster.ray.dashboard_agent_listen_port={agent}",
            f"cluster.ray.temp_dir={temp}",
            f"cluster.local.cpu_workers.workers={workers}",
            f"cluster.local.cpu_workers.num_cpus={worker_cpus}",
            "cluster.local.gpu_workers.workers=0",
            *overrides,
        ],
    )
    haproxy = {"RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics), "RAY_SERVE_HAPROXY_STATS_PORT": str(stats)}
    info, nodes = start_cluster(
        cfg.cluster.ray,
        cfg.cluster.local,
        env={**cfg.serve.http.ray_env(), **haproxy, **(env or {})},
        head_only_env=head_only_env,
    )
    return cfg, info, nodes


def stop_local_cluster(cfg) -> None:
    from cluster.local import stop_head

    stop_head(cfg.cluster.ray)
    shutil.rmtree(cfg.cluster.ray.temp_dir, ignore_errors=True)


_CLUSTER: dict = {}  # the cluster `prepare` started for --workers, stopped by `stop_app`


def placed_on_cpu_group() -> list[str]:
    """Overrides that put every deployment on the CPU node group (the worker nodes of --workers)."""
    return [f"serve.deployments.{d}.node_group=cpu" for d in ("ingress", "retriever", "ranker", "generator")]


def overrides_of(args: argparse.Namespace) -> list[str]:
    return [
        f"artifacts.root={Path(args.artifacts).resolve()}",
        f"models.dir={Path(args.models).resolve()}",
        *args.overrides,
    ]


def prepare(args: argparse.Namespace):
    """Start local Ray (2 CPUs, as the tests; Serve settings from `serve.http`), build missing
    artifacts; return (cfg, catalog)."""
    import ray

    from cluster.pipeline import run_pipeline
    from core.config import load_config
    from core.runtime import use_serve_env
    from serve.catalog import load_catalog

    cfg = load_config(args.config, overrides_of(args))
    use_serve_env(cfg)  # serve.http.proxy, as `shopgraph serve run` starts Ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    run_pipeline(cfg, echo=lambda line: print(line, file=sys.stderr))
    if getattr(args, "workers", 0):
        ray.shutdown()
        own, info, _ = local_cluster(args.config, args.workers, args.worker_cpus)
        _CLUSTER["cfg"] = own
        ray.init(address=info.gcs_address, log_to_driver=False)
    return cfg, load_catalog(cfg)


def start_app(
    args: argparse.Namespace, engine: str, name: str = "bench", extra: list[str] = (), app_args: dict | None = None
) -> str:
    """Serve the application on 127.0.0.1:port; returns its base URL once /readyz answers.
    `app_args`: more `build_app` arguments (e.g. `fake_delay_s`)."""
    from ray import serve

    from serve.app import build_app

    multinode = bool(getattr(args, "workers", 0))
    serve.start(
        **({"proxy_location": "HeadOnly"} if multinode else {}), http_options={"host": "127.0.0.1", "port": args.port}
    )
    serve.run(
        build_app(
            {
                "config_path": args.config,
                "overrides": [*overrides_of(args), *(placed_on_cpu_group() if multinode else []), *extra],
                "engine": engine,
                **(app_args or {}),
            }
        ),
        name=name,
        route_prefix="/",
    )
    return wait_ready(f"http://127.0.0.1:{args.port}")


def wait_ready(base: str, timeout_s: float = 120.0) -> str:
    """`base` once its /readyz answers 200; RuntimeError after `timeout_s`."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=10).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app on {base} did not become ready in {timeout_s:.0f} s")


def run_load(
    base: str,
    bodies: list[dict],
    rate: float,
    workdir: str,
    label: str,
    max_inflight: int = 512,
    timeout_s: float = 10.0,
) -> dict:
    """Send `bodies` to `base` at `rate` per second, open loop, from a separate client process
    (bench/serve_load.py --client, so the client's CPU is not the server's); its JSON result
    with `server_cpu_ms_per_request` added (the Serve processes' CPU over the run, per request)."""
    import json
    import subprocess

    path = Path(workdir) / f"{label}.json"
    path.write_text(json.dumps(bodies))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent / "serve_load.py"),
        "--client",
        "--url",
        base,
        "--bodies",
        str(path),
        "--rate",
        str(rate),
        "--max-inflight",
        str(max_inflight),
        "--timeout",
        str(timeout_s),
    ]
    procs = serve_processes()
    before = cpu_seconds(procs)
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=len(bodies) / rate + 2 * timeout_s + 60, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # replicas started during the run count too
    res["server_cpu_ms_per_request"] = cpu_ms_per_request(
        before, cpu_seconds({**procs, **serve_processes()}), res["offered"]
    )
    return res


def stop_app() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    if "cfg" in _CLUSTER:
        stop_local_cluster(_CLUSTER.pop("cfg"))


def request_mix(
    catalog, n: int, seed: int, k: int = 10, shares: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> list[dict]:
    """`n` recommendation bodies (with_reasons off): known users, unknown users, anonymous
    sessions of 1-5 recent items, in `shares` proportions, shuffled deterministically."""
    rng = random.Random(seed)
    known = sorted(u for u, h in catalog.user_history.items() if len(h))
    products = sorted(catalog.products)
    counts = [round(s * n) for s in shares[:2]]
    counts.append(n - sum(counts))
    bodies = [{"user_id": rng.choice(known), "k": k, "with_reasons": False} for _ in range(counts[0])]
    bodies += [{"user_id": f"bench-new-user-{i}", "k": k, "with_reasons": False} for i in range(counts[1])]
    bodies += [
        {"recent_items": rng.sample(products, rng.randint(1, 5)), "k": k, "with_reasons": False}
        for _ in range(counts[2])
    ]
    rng.shuffle(bodies)
    return bodies


def stats_ms(seconds: list[float]) -> dict[str, float]:
    """n, mean and p50/p90/p95/p99/max of durations given in seconds, in milliseconds."""
    if not seconds:
        return {"n": 0}
    a = np.asarray(seconds) * 1000
    q = np.percentile(a, [50, 90, 95, 99])
    return {
        "n": len(a),
        "mean": round(float(a.mean()), 3),
        "p50": round(float(q[0]), 3),
        "p90": round(float(q[1]), 3),
        "p95": round(float(q[2]), 3),
        "p99": round(float(q[3]), 3),
        "max": round(float(a.max()), 3),
    }


def machine() -> dict[str, object]:
    """CPU count and load average: these numbers only mean something next to how busy the box was."""
    return {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def serve_processes() -> dict[str, object]:
    """This benchmark's Serve processes (HTTP proxy or HAProxy, and replicas), by short name:
    descendants of this driver, which started the local Ray instance, so other Ray sessions are
    not counted."""
    import psutil

    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if proc.name() == "haproxy":
            out[f"haproxy[{proc.pid}]"] = proc
            continue
        for marker in ("ProxyActor", "HAProxyManager", "ServeReplica:"):
            if title.startswith("ray::") and marker in title:
                name = title.split()[0].removeprefix("ray::").split(".")[0].replace("ServeReplica:", "")
                out[f"{name}[{proc.pid}]"] = proc
    return out


def cpu_seconds(procs: dict[str, object]) -> dict[str, float]:
    """User + system CPU seconds used so far by each process."""
    import psutil

    out = {}
    for name, proc in procs.items():
        try:
            t = proc.cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:  # the replica is gone
            out[name] = float("nan")
    return out


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request of each Serve process, and their total: unlike latency, this
    barely moves when other work shares the CPUs, so it compares runs on a busy machine."""
    per = {name: round(1000 * (after[name] - before.get(name, 0.0)) / max(requests, 1), 3) for name in after}
    return {"total": round(sum(per.values()), 3), **dict(sorted(per.items()))}
