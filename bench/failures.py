"""Failures survived under load: a worker node SIGKILLed, the head's GCS killed (GCS fault tolerance with Redis).

    .venv/bin/python bench/failures.py --artifacts /tmp/shopgraph-bench-failures \\
        [--scenarios worker-kill,gcs-kill] [--rate 50 --duration 120 --kill-at 40] [--workers 2]

For each scenario it starts its own cluster with the project's code (`cluster.local.start_cluster`:
a head with 0 CPUs and `--workers` CPU-group worker nodes of `--worker-cpus` logical CPUs, free
ports, a private temp dir) and the head set up for GCS fault tolerance as the KubeRay manifests
render it (`cluster.k8s.gcs_ft`): a throwaway Redis (`core.redisserver`, Debian's redis-server),
`RAY_REDIS_ADDRESS` + `RAY_external_storage_namespace` on the head, the reconnect timeout on every
node (`cluster.faults.gcs_ft_env`). The artifact root is built with the real pipeline when missing
(`--set data.sample.num_products=...` to size it), reused otherwise.

The real app (`serve.app:build_app`, fake engine behind the generator seam) runs with every
deployment on the CPU node group (`serve.deployments.*.node_group=cpu`) and `--replicas` replicas
each, which Serve spreads over the worker nodes. Load: open loop at `--rate` req/s for
`--duration` s, `--page-share` of them GET /v1/products/{id}/page, the rest POST
/v1/recommendations, 127.0.0.1 only, 10 s timeout, a new connection per request (as a load
balancer in front of several proxies). At `--kill-at` s:

- worker-kill (proxy on the head, `HeadOnly`): every process of worker node `--victim`
  (its `ray start` process group and descendants) gets SIGKILL. Recorded: requests, successes,
  errors by status code, time until Serve (`serve.status()`) has every deployment back at its
  replica count with none on the dead node, where the replicas run before and after, and how
  the pages answered after the kill (`sections_source`, `degraded`).
- gcs-kill (a proxy on every node, `EveryNode`, sharing the port through SO_REUSEPORT): the head's
  gcs_server gets SIGKILL. Ray 2.60's `ray start --block` then takes the rest of the head down
  (see cluster/faults.py), so the head is started again with the same command line and
  environment, as a pod restart would. Recorded: the same request figures split into before /
  head down / after, seconds until the head answered again, until `ray.nodes()` showed every
  node alive, until the Serve app was RUNNING, and whether a new deployment succeeded afterwards.

Nothing here runs Ray in this process: every Ray call runs in a spawned child (a driver on the
head's raylet would die with the head). One JSON object on stdout; exit code 0 when every
scenario met its target (worker-kill: >= --target success; gcs-kill: the same, and recovered).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import REPO, local_cluster, machine, stats_ms, stop_local_cluster, wait_ready  # noqa: E402  (puts the repository on sys.path)

APP = "shopgraph"
DEPLOYMENTS = ("ingress", "retriever", "ranker", "generator")
SCENARIOS = ("worker-kill", "gcs-kill")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", required=True, help="artifact root; built with the real pipeline when missing")
    p.add_argument("--models", default=str(REPO / "models"), help="prepared models (`shopgraph models prepare`)")
    p.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value (pipeline and app)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    p.add_argument("--workers", type=int, default=2, help="CPU-group worker nodes")
    p.add_argument("--worker-cpus", type=int, default=2, help="logical CPUs of each worker node")
    p.add_argument("--replicas", type=int, default=2, help="replicas of every deployment (spread over the workers)")
    p.add_argument("--victim", default="shopgraph-cpu-2", help="worker-kill: the worker node to kill")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load per scenario")
    p.add_argument("--kill-at", type=float, default=None, help="seconds into the load (default: a third of it)")
    p.add_argument("--page-share", type=float, default=0.3, help="share of requests that are product pages")
    p.add_argument("--recover-timeout", type=float, default=240.0, help="give up waiting for recovery after this")
    p.add_argument("--target", type=float, default=0.999, help="success rate a scenario must reach")
    p.add_argument(
        "--haproxy-retry-on",
        default=None,
        help="HAProxy's retry-on (serve.http.retry_on; default from the config: replay a request whose ingress "
        "replica died before answering); 'conn-failure' for Serve's default",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.kill_at is None:
        args.kill_at = args.duration / 3
    problems = [
        f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}"
        for name, ok, rule in (
            ("scenarios", bool(args.scenarios) and set(args.scenarios) <= set(SCENARIOS), f"some of {SCENARIOS}"),
            ("workers", 2 <= args.workers <= 8, "between 2 and 8 (one is killed, the replicas need another)"),
            ("worker_cpus", 1 <= args.worker_cpus <= 64, "between 1 and 64"),
            ("replicas", 1 <= args.replicas <= 8, "between 1 and 8"),
            ("rate", 0 < args.rate <= 500, "in (0, 500]"),
            ("duration", args.duration > 0, "> 0"),
            ("kill_at", 0 < args.kill_at < args.duration, "inside (0, --duration)"),
            ("page_share", 0 <= args.page_share <= 1, "in [0, 1]"),
            ("recover_timeout", args.recover_timeout > 0, "> 0"),
            ("target", 0 < args.target <= 1, "in (0, 1]"),
        )
        if not ok
    ]
    if not problems and "worker-kill" in args.scenarios:
        names = [f"shopgraph-cpu-{i}" for i in range(1, args.workers + 1)]
        if args.victim not in names:
            problems.append(f"--victim must be one of {', '.join(names)}, got {args.victim}")
    if problems:
        p.error("; ".join(problems))
    return args


def app_overrides(replicas: int) -> list[str]:
    out = []
    for d in DEPLOYMENTS:
        out += [
            f"serve.deployments.{d}.node_group=cpu",
            f"serve.deployments.{d}.num_cpus=0.05",
            f"serve.deployments.{d}.min_replicas={replicas}",
            f"serve.deployments.{d}.max_replicas={replicas}",
        ]
    return out


# ----------------------------------------------------------------------------- Ray, in spawned children


def _in_child(fn, *args, timeout: float = 600.0):
    """Run `fn(*args)` in a fresh (spawned) Python process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
    try:
        return pool.submit(_call, fn, *args).result(timeout=timeout)
    finally:
        # A child stuck on a cluster that is gone (ray.init retries for minutes) must not hold the bench:
        # kill it instead of waiting for it.
        for proc in list((pool._processes or {}).values()):
            if proc.is_alive():
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def _call(fn, *args):
    """`fn(*args)`; an exception comes back as a RuntimeError with its traceback (Ray's do not pickle)."""
    import traceback

    os.dup2(2, 1)  # Ray prints cluster events on stdout; this process's stdout is the JSON's
    try:
        return fn(*args)
    except BaseException as e:
        raise RuntimeError(f"{fn.__name__} failed: {str(e)[-1500:]}\n{traceback.format_exc()[-1500:]}") from None


def _child_init(address: str | None) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if address is None:
        ray.init(num_cpus=2, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


def build_artifacts(config: str, overrides: list[str]) -> float:
    """The real pipeline on a local Ray (finished stages are skipped); returns seconds."""
    _child_init(None)
    import ray

    from cluster.pipeline import run_pipeline
    from core.config import load_config

    t = time.perf_counter()
    run_pipeline(load_config(config, overrides), echo=lambda line: print(line, file=sys.stderr))
    ray.shutdown()
    return time.perf_counter() - t


def _node_names() -> dict[str, str]:
    import ray

    names = {}
    for n in ray.nodes():
        named = [k for k in n["Resources"] if k.startswith("shopgraph-")]
        names[n["NodeID"]] = named[0] if named else "head"
    return names


def _placement(dashboard: str) -> dict[str, dict[str, int]]:
    """RUNNING replicas per deployment per node name, from Serve's REST API."""
    from cluster.local import get_json

    names = _node_names()
    deployments = get_json(f"{dashboard}/api/serve/applications/", timeout=30)["applications"][APP]["deployments"]
    return {
        name: dict(Counter(names.get(r["node_id"], r["node_id"][:8]) for r in d["replicas"] if r["state"] == "RUNNING"))
        for name, d in deployments.items()
    }


def deploy(address: str, dashboard: str, config: str, overrides: list[str], proxy: str, port: int) -> dict:
    """serve.start + serve.run of the real app; returns seconds and where the replicas run."""
    _child_init(address)
    import ray
    from ray import serve

    from serve.app import build_app

    t = time.perf_counter()
    serve.start(proxy_location=proxy, http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config_path": config, "overrides": overrides, "engine": "fake"}), name=APP, route_prefix="/")
    wait_ready(f"http://127.0.0.1:{port}")
    out = {"ready_s": round(time.perf_counter() - t, 1), "placement": _placement(dashboard)}
    ray.shutdown()
    return out


def _serve_counts() -> tuple[str, dict[str, int], dict[str, int]]:
    """(app status, RUNNING replicas per deployment, target per deployment) from serve.status()."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None:
        return "MISSING", {}, {}
    running = {n: int(d.replica_states.get("RUNNING", 0)) for n, d in app.deployments.items()}
    # ApplicationStatus is a str Enum: str() of it reads "ApplicationStatus.RUNNING" on Python 3.11
    return getattr(app.status, "value", str(app.status)), running, {}


def watch_worker_recovery(address: str, dashboard: str, victim: str, replicas: int, killed_at: float, timeout: float):
    """After a worker node was killed (at wall time `killed_at`): poll serve.status() until every
    deployment has `replicas` RUNNING again, none on the dead node; returns the timeline."""
    _child_init(address)
    import ray

    timeline, dropped_at, back_at, placement = [], None, None, {}
    while time.time() - killed_at < timeout:
        try:
            status, running = _serve_counts()[:2]
        except Exception as e:  # the controller is busy replacing replicas; ask again
            status, running = f"error: {type(e).__name__}", {}
        t = round(time.time() - killed_at, 2)
        if not timeline or timeline[-1][1:] != [status, running]:
            timeline.append([t, status, running])
        full = bool(running) and all(n >= replicas for n in running.values())
        if not full and dropped_at is None:
            dropped_at = t
        if full and dropped_at is not None:
            try:
                placement = _placement(dashboard)
            except Exception:
                placement = {}
            if placement and all(victim not in nodes for nodes in placement.values()):
                back_at = t
                break
        time.sleep(0.5)
    nodes = {name: alive for name, alive in ((_node_names().get(n["NodeID"]), n["Alive"]) for n in ray.nodes())}
    ray.shutdown()
    return {
        "replicas_dropped_after_s": dropped_at,
        "replicas_back_after_s": back_at,
        "placement_after": placement,
        "nodes_alive_after": nodes,
        "status_timeline_s": timeline,
    }


def watch_head_recovery(address: str, dashboard: str, replicas: int, killed_at: float, timeout: float, port: int):
    """After the head came back: seconds (from the kill) until every node is alive in ray.nodes(), the
    Serve app is RUNNING with its replicas, and a new deployment answers over HTTP."""
    t0 = time.time()
    _child_init(address)
    import httpx
    import ray
    from ray import serve

    out: dict = {"driver_connected_after_s": round(time.time() - killed_at, 2)}
    while time.time() - t0 < timeout:
        names = _node_names()
        alive = {names.get(n["NodeID"], "?") for n in ray.nodes() if n["Alive"]}
        out["nodes_alive"] = sorted(alive)
        if alive >= set(names.values()) and "nodes_alive_after_s" not in out:  # a new head and every worker
            out["nodes_alive_after_s"] = round(time.time() - killed_at, 2)
        try:
            status, running = _serve_counts()[:2]
        except Exception as e:
            status, running = f"error: {type(e).__name__}", {}
        out["serve_status"] = [status, running]
        if (
            "nodes_alive_after_s" in out
            and status == "RUNNING"
            and running
            and all(n >= replicas for n in running.values())
        ):
            out["serve_running_after_s"] = round(time.time() - killed_at, 2)
            break
        time.sleep(0.5)
    out["dead_nodes_listed"] = sum(1 for n in ray.nodes() if not n["Alive"])
    try:
        out["placement_after"] = _placement(dashboard)
    except Exception as e:
        out["placement_after"] = f"error: {e}"

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0, "resources": {"group_cpu": 0.001}})
    class Ping:
        async def __call__(self, request) -> str:
            return "pong"

    t = time.time()
    try:
        serve.run(Ping.bind(), name="after-recovery", route_prefix="/after-recovery")
        r = httpx.get(f"http://127.0.0.1:{port}/after-recovery", timeout=30)
        out["new_deployment"] = {"ok": r.status_code == 200 and r.text == "pong", "seconds": round(time.time() - t, 2)}
        serve.delete("after-recovery")
    except Exception as e:
        out["new_deployment"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    ray.shutdown()
    return out


# ----------------------------------------------------------------------------- load


def request_plan(artifacts_cfg, n: int, page_share: float, seed: int) -> list[tuple[str, str, dict]]:
    from serve.catalog import load_catalog

    catalog = load_catalog(artifacts_cfg)
    rng = random.Random(seed)
    known = sorted(u for u, h in catalog.user_history.items() if len(h))
    products = sorted(catalog.products)
    plan = []
    for i in range(n):
        if rng.random() < page_share:
            plan.append(
                ("GET", f"/v1/products/{rng.choice(products)}/page", {"params": {"user_id": rng.choice(known)}})
            )
        elif rng.random() < 0.75:
            plan.append(("POST", "/v1/recommendations", {"json": {"user_id": rng.choice(known), "k": 10}}))
        else:
            plan.append(("POST", "/v1/recommendations", {"json": {"user_id": f"bench-new-{seed}-{i}", "k": 10}}))
    return plan


async def drive(url: str, plan, rate: float, duration: float, on_kill, kill_at: float) -> dict:
    """Open loop: request i at t0 + i/rate; `on_kill()` runs in a thread at `kill_at`. Every answer
    is recorded as (scheduled offset, kind, status or error, latency, sections_source, degraded)."""
    import httpx

    n = int(rate * duration)
    records: list[tuple] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    kill_result: dict = {}
    async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=limits) as client:
        t0 = time.monotonic()

        async def one(i: int) -> None:
            method, path, kwargs = plan[i % len(plan)]
            at = i / rate
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            kind = "page" if method == "GET" else "recs"
            start = time.monotonic()
            try:
                r = await client.request(method, path, **kwargs)
            except httpx.HTTPError as e:
                records.append((at, kind, type(e).__name__, time.monotonic() - start, None, None))
                return
            source = degraded = None
            if r.status_code == 200 and kind == "page":
                body = r.json()
                source, degraded = body.get("sections_source"), ",".join(body.get("degraded") or []) or "none"
            elif r.status_code == 200:
                degraded = ",".join(r.json().get("degraded") or []) or "none"
            records.append((at, kind, r.status_code, time.monotonic() - start, source, degraded))

        async def killer() -> None:
            await asyncio.sleep(max(0.0, t0 + kill_at - time.monotonic()))
            kill_result.update(await asyncio.to_thread(on_kill))

        k = asyncio.create_task(killer())
        await asyncio.gather(*(one(i) for i in range(n)))
        await k
    return {"records": records, "kill": kill_result}


def summarize(records: list[tuple], windows: dict[str, tuple[float, float]]) -> dict:
    """Requests, successes and errors by status code, overall and per window (offsets in seconds)."""

    def one(rs: list[tuple]) -> dict:
        codes = Counter(str(r[2]) for r in rs)
        ok = codes.get("200", 0)
        return {
            "requests": len(rs),
            "successes": ok,
            "success_rate": round(ok / len(rs), 5) if rs else None,
            "errors_by_code": {c: n for c, n in sorted(codes.items()) if c != "200"},
            "latency_ms": stats_ms([r[3] for r in rs if r[2] == 200]),
        }

    out = one(records)
    out["errors_at_s"] = [[round(r[0], 2), str(r[2])] for r in records if r[2] != 200][:50]  # scheduled offsets
    out["windows"] = {name: one([r for r in records if a <= r[0] < b]) for name, (a, b) in windows.items()}
    return out


def page_labels(records: list[tuple], after: float) -> dict:
    pages = [r for r in records if r[1] == "page" and r[0] >= after]
    return {
        "pages_after_kill": len(pages),
        "page_errors_after_kill": sum(1 for r in pages if r[2] != 200),
        "sections_source": dict(Counter(r[4] for r in pages if r[2] == 200)),
        "degraded": dict(Counter(r[5] for r in pages if r[2] == 200)),
        "recs_degraded_after_kill": dict(
            Counter(r[5] for r in records if r[1] == "recs" and r[0] >= after and r[2] == 200)
        ),
    }


# ----------------------------------------------------------------------------- scenarios


def run_scenario(name: str, args, overrides: list[str], plan) -> dict:
    from cluster.faults import gcs_ft_env, kill_gcs, kill_worker_node, restart_head, wait_head_gone
    from cluster.local import free_ports
    from core.redisserver import local_redis

    (http_port,) = free_ports(1)
    cluster_overrides = [
        # gcs-kill: a proxy on every node, all on one port of this host: Serve's Python proxies share it
        # (SO_REUSEPORT); HAProxy's per-node admin socket and stats port would collide.
        *(["serve.http.proxy=ray"] if name == "gcs-kill" else []),
        *([f"serve.http.retry_on={args.haproxy_retry_on}"] if args.haproxy_retry_on else []),
    ]
    proxy = "HeadOnly" if name == "worker-kill" else "EveryNode"
    if name == "gcs-kill":
        # The nodes' environment is the user's over the config's (cluster.local.head_env; what an
        # earlier Ray start in this process set is not the user's): an HAProxy setting exported in
        # the shell would give every node an HAProxy on the shared port instead of Serve's proxies.
        for key in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"):
            os.environ.pop(key, None)
    out: dict = {
        "scenario": name,
        "proxy_location": proxy,
        "rate": args.rate,
        "duration_s": args.duration,
    }
    with local_redis() as redis:
        head_only, every = gcs_ft_env(f"127.0.0.1:{redis.port}", f"shopgraph-bench-{secrets.token_hex(3)}")
        out["gcs_ft"] = {"RAY_REDIS_ADDRESS": head_only["RAY_REDIS_ADDRESS"], **every}
        own = None
        try:
            t = time.perf_counter()
            own, info, workers = local_cluster(
                args.config, args.workers, args.worker_cpus, cluster_overrides, env=every, head_only_env=head_only
            )
            ray_cfg = own.cluster.ray
            out["proxy"] = own.serve.http.proxy
            out["cluster_up_s"] = round(time.perf_counter() - t, 1)
            out["nodes"] = ["head", *(w.name for w in workers)]
            address, dashboard = info.gcs_address, info.dashboard_url
            deployed = _in_child(deploy, address, dashboard, args.config, overrides, proxy, http_port)
            out["app_ready_s"], out["placement_before"] = deployed["ready_s"], deployed["placement"]
            replicas = args.replicas
            state: dict = {}

            if name == "worker-kill":

                def on_kill() -> dict:
                    killed = kill_worker_node(ray_cfg, args.victim)
                    state["killed_at"] = killed.at
                    watch = _in_child(
                        watch_worker_recovery, address, dashboard, args.victim, replicas, killed.at,
                        args.recover_timeout, timeout=args.recover_timeout + 120,
                    )  # fmt: skip
                    return {"node": killed.name, "pids_killed": len(killed.pids), **watch}
            else:

                def on_kill() -> dict:
                    head, killed = kill_gcs(ray_cfg)
                    state["killed_at"] = killed.at
                    gone_s = wait_head_gone(head)
                    state["head_gone_at"] = time.time()
                    restart_s, starts = restart_head(ray_cfg, head, timeout=args.recover_timeout)
                    state["head_back_at"] = time.time()
                    watch = _in_child(
                        watch_head_recovery, address, dashboard, replicas, killed.at, args.recover_timeout, http_port,
                        timeout=args.recover_timeout + 120,
                    )  # fmt: skip
                    return {
                        "gcs_cmdline": " ".join(head.gcs_cmdline[:1] + ["..."]),
                        "head_exited_after_s": round(gone_s, 2),
                        "head_restarted_after_s": round(state["head_back_at"] - killed.at, 2),
                        "head_restart_took_s": round(restart_s, 2),
                        "head_starts": starts,
                        **watch,
                    }

            m0 = machine()
            result = asyncio.run(
                drive(f"http://127.0.0.1:{http_port}", plan, args.rate, args.duration, on_kill, args.kill_at)
            )
            records, kill = result["records"], result["kill"]
            kill_offset = args.kill_at
            if name == "worker-kill":
                back = kill.get("replicas_back_after_s")
                windows = {
                    "before_kill": (0, kill_offset),
                    "kill_to_replicas_back": (kill_offset, kill_offset + (back or args.duration)),
                    "after_replicas_back": (kill_offset + (back or args.duration), args.duration + 1),
                }
            else:
                down = state.get("head_back_at", time.time()) - state.get("killed_at", 0)
                windows = {
                    "before_kill": (0, kill_offset),
                    "head_down": (kill_offset, kill_offset + down),
                    "after_head_back": (kill_offset + down, args.duration + 1),
                }
            out["load"] = summarize(records, windows)
            out["after_kill"] = page_labels(records, kill_offset)
            out["recovery"] = kill
            out["machine_at_start"], out["machine_at_end"] = m0, machine()
            rate = out["load"]["success_rate"] or 0
            out["met_target"] = rate >= args.target and (
                kill.get("replicas_back_after_s") is not None
                if name == "worker-kill"
                else kill.get("serve_running_after_s") is not None and kill.get("new_deployment", {}).get("ok", False)
            )
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"[:2000]
            out["met_target"] = False
        finally:
            if own is not None:
                stop_local_cluster(own)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the mode `cluster up` pins its head to, unless told
    from core.config import load_config
    from core.redisserver import missing_reason

    if missing_reason():
        print(json.dumps({"benchmark": "failures", "error": missing_reason()}))
        return 2
    base = [f"artifacts.root={Path(args.artifacts).resolve()}", f"models.dir={Path(args.models).resolve()}"]
    overrides = [*base, *args.overrides, *app_overrides(args.replicas)]
    pipeline_s = _in_child(build_artifacts, args.config, [*base, *args.overrides], timeout=3600)
    cfg = load_config(args.config, overrides)
    plan = request_plan(cfg, 5000, args.page_share, args.seed)
    out = {
        "benchmark": "failures",
        "pipeline_s": round(pipeline_s, 1),
        "replicas_per_deployment": args.replicas,
        "page_share": args.page_share,
        "target_success_rate": args.target,
        "scenarios": {},
    }
    for name in args.scenarios:
        out["scenarios"][name] = run_scenario(name, args, overrides, plan)
        print(json.dumps({name: out["scenarios"][name].get("load", {}).get("success_rate")}), file=sys.stderr)
    print(json.dumps(out, indent=2))
    return 0 if all(s.get("met_target") for s in out["scenarios"].values()) else 1


if __name__ == "__main__":
    threading.current_thread().name = "failures"
    raise SystemExit(main())
