"""Shared pieces of the Serve benchmarks (bench/serve_*.py): artifacts, a local app, inputs, stats.

Not a benchmark itself. Each benchmark builds (or reuses) one artifact root with the real
pipeline (`cluster.pipeline.run_pipeline`, idempotent: finished stages are skipped), starts
local Ray with 2 CPUs as the tests do, and serves `serve.app:build_app` on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
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
    return cfg, load_catalog(cfg)


def start_app(
    args: argparse.Namespace, engine: str, name: str = "bench", extra: list[str] = (), app_args: dict | None = None
) -> str:
    """Serve the application on 127.0.0.1:port; returns its base URL once /readyz answers.
    `app_args`: more `build_app` arguments (e.g. `fake_delay_s`)."""
    import httpx
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        build_app(
            {
                "config_path": args.config,
                "overrides": [*overrides_of(args), *extra],
                "engine": engine,
                **(app_args or {}),
            }
        ),
        name=name,
        route_prefix="/",
    )
    base = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=10).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app on {base} did not become ready in 120 s")


def stop_app() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


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
