"""Serving that never waits on generation, and degrades fast and labelled (issue 19): latency with
reasons on, personalized pages cached and uncached, the background queue's drain after a burst,
and a killed generator / ranker / retriever replica.

    .venv/bin/python bench/serve_resilience.py --artifacts /tmp/shopgraph-bench \\
        [--engine fake --fake-delay-s 1.0 | --engine vllm] [--scenarios recs,page,drain,kill] \\
        [--rate 50 --duration 60 --warmup 10] [--burst-rate 20 --burst-duration 60] [--kill generator,ranker]

The artifact root is built with the default sample size of configs/local.yaml when missing,
reused otherwise; the app runs on local Ray (2 CPUs) as in bench/serve_load.py. `--engine fake`
answers every generation after `--fake-delay-s` (a stand-in for a slow CPU generator: issue 19's
vLLM CPU took ~4 s per reason under load); `--engine vllm` serves the real model. The load is
open loop (request i starts at t0 + i/rate whatever earlier ones do; latency from the scheduled
start), asyncio + httpx in this process, 127.0.0.1 only. Scenarios:

- recs: POST /v1/recommendations, reasons on (no wait_ms), 60% known users / 20% unknown / 20%
  anonymous, --rate for --duration after --warmup s; reports latency, errors, and the share of
  generated (cached) reasons after the warm-up. Target: p99 <= 150 ms at 50 req/s, 0 errors.
- page: GET /v1/products/{id}/page?user_id= for --pages products never asked before (uncached:
  template or cached sections, generation queued), then the time until the queue is empty, then
  the same pages again (cached: share of sections and notes cached) at --page-rate. Targets: p99
  <= 500 ms uncached, <= 300 ms cached.
- drain: --burst-rate req/s for --burst-duration s of recommendations with reasons, then the
  seconds until the queue is empty (/readyz `queue`), and the oldest any job was when it started
  (never above serve.generation.queue.max_age_ms). Target: drained in <= 10 s.
- kill: for each stage in --kill, under a light load (--kill-rate), kill its replica (ray.kill;
  Serve restarts it) and report the first answer after the kill, the answers' p99 and labels in
  the following seconds, when /readyz said it was down, when Serve had a new replica RUNNING (its
  models loaded), and when /readyz said it was back. Target: first answer within the retriever's
  and ranker's budgets (+100 ms), down within 5 s, back within 5 s of the restart.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import (  # noqa: E402
    add_common_args,
    cpu_ms_per_request,
    cpu_seconds,
    machine,
    prepare,
    serve_processes,
    start_app,
    stats_ms,
    stop_app,
)

TARGET = {
    "recs_p99_ms": 150.0,
    "page_uncached_p99_ms": 500.0,
    "page_cached_p99_ms": 300.0,
    "drain_s": 10.0,
    "down_within_s": 5.0,
    "back_within_s": 5.0,
}


def _bodies(catalog, n: int, seed: int, k: int = 10) -> list[dict]:
    rng = random.Random(seed)
    known = sorted(u for u, h in catalog.user_history.items() if len(h))
    products = sorted(catalog.products)
    out = []
    for i in range(n):
        x = rng.random()
        if x < 0.6:
            out.append({"user_id": rng.choice(known), "k": k})
        elif x < 0.8:
            out.append({"user_id": f"bench-new-user-{seed}-{i}", "k": k})
        else:
            out.append({"recent_items": rng.sample(products, rng.randint(1, 5)), "k": k})
    return out


async def _open_loop(client, calls: list[tuple[str, str, dict]], rate: float, on_answer=None) -> dict:
    """Run (method, path, kwargs) calls at `rate` per second, open loop; latency, errors and the
    bodies' labels."""
    latencies, errors = [], {}
    sources: dict[str, int] = {}
    labels = {"degraded": {}, "known_user_cold_start": 0}

    async def one(method: str, path: str, kwargs: dict, scheduled: float) -> None:
        try:
            r = await client.request(method, path, **kwargs)
        except Exception as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        if r.status_code != 200:
            errors[f"http_{r.status_code}"] = errors.get(f"http_{r.status_code}", 0) + 1
            return
        latencies.append(time.perf_counter() - scheduled)
        body = r.json()
        for item in body.get("items") or body.get("also_like") or []:
            sources[item["reason_source"]] = sources.get(item["reason_source"], 0) + 1
        for stage in body.get("degraded", []):
            labels["degraded"][stage] = labels["degraded"].get(stage, 0) + 1
        user = (kwargs.get("json") or {}).get("user_id") or (kwargs.get("params") or {}).get("user_id")
        if body.get("cold_start") and user and not user.startswith("bench-new-user"):
            labels["known_user_cold_start"] += 1
        if on_answer is not None:
            on_answer(time.perf_counter(), r.status_code, body)

    tasks, t0 = [], time.perf_counter()
    for i, (method, path, kwargs) in enumerate(calls):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(method, path, kwargs, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    total = sum(sources.values())
    return {
        "offered": len(calls),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "achieved_rps": round(len(latencies) / elapsed, 2),
        "latency_ms": stats_ms(latencies),
        "reason_sources": sources,
        "generated_or_cached_share": round((sources.get("generated", 0) + sources.get("cached", 0)) / total, 3)
        if total
        else None,
        **labels,
    }


async def _queue_drain(client, timeout_s: float = 120.0) -> dict:
    """Seconds until /readyz reports no job waiting or running; the queue's counters then."""
    started = time.perf_counter()
    readyz_ms = []
    while time.perf_counter() - started < timeout_s:
        t = time.perf_counter()
        r = await client.get("/readyz")
        readyz_ms.append(time.perf_counter() - t)
        queue = r.json()["queue"]
        if queue["waiting"] == 0 and queue["running"] == 0:
            return {
                "drain_s": round(time.perf_counter() - started, 2),
                "queue": queue,
                "readyz_ms": stats_ms(readyz_ms),
            }
        await asyncio.sleep(0.2)
    return {"drain_s": None, "queue": queue, "readyz_ms": stats_ms(readyz_ms)}


def _metrics_summary(text: str) -> dict:
    """Mean stage latency (ms, whole run) and fallbacks by stage and cause, from /metrics."""
    import re

    sums, counts, fallbacks = {}, {}, {}
    for line in text.splitlines():
        m = re.match(r'shopgraph_stage_latency_seconds_(sum|count)\{stage="([^"]+)"\} (\S+)', line)
        if m:
            (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
        m = re.match(r'shopgraph_fallbacks_total\{stage="([^"]+)",why="([^"]+)"\} (\S+)', line)
        if m:
            fallbacks[f"{m.group(1)}:{m.group(2)}"] = int(float(m.group(3)))
    means = {k: round(1000 * sums[k] / counts[k], 2) for k in sums if counts.get(k)}
    return {"stage_mean_ms": means, "fallbacks": fallbacks}


async def scenario_recs(client, catalog, args) -> dict:
    rec = lambda b: ("POST", "/v1/recommendations", {"json": b})  # noqa: E731
    if args.warmup > 0:
        await _open_loop(client, [rec(b) for b in _bodies(catalog, int(args.rate * args.warmup), args.seed)], args.rate)
    calls = [rec(b) for b in _bodies(catalog, int(args.rate * args.duration), args.seed + 1)]
    procs = serve_processes()
    before = cpu_seconds(procs)
    out = await _open_loop(client, calls, args.rate)
    out["server_cpu_ms_per_request"] = cpu_ms_per_request(
        before, cpu_seconds({**procs, **serve_processes()}), len(calls)
    )
    out["server_metrics"] = _metrics_summary((await client.get("/metrics")).text)
    out["meets_target"] = out["errors"] == 0 and out["latency_ms"].get("p99", 1e9) <= TARGET["recs_p99_ms"]
    return {"rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup, **out}


async def scenario_page(client, catalog, args) -> dict:
    rng = random.Random(args.seed + 7)
    known = sorted(u for u, h in catalog.user_history.items() if len(h))
    pages = rng.sample(sorted(catalog.products), min(args.pages, len(catalog.products)))
    users = {pid: rng.choice(known) for pid in pages}
    seen: dict[str, dict[str, int]] = {"uncached": {}, "cached": {}}

    def counter(phase):
        def on_answer(_, __, body):
            for field in ("sections_source", "note_source"):
                key = f"{field}={body[field]}"
                seen[phase][key] = seen[phase].get(key, 0) + 1

        return on_answer

    def calls():
        return [("GET", f"/v1/products/{pid}/page", {"params": {"user_id": users[pid]}}) for pid in pages]

    uncached = await _open_loop(client, calls(), args.page_rate, counter("uncached"))
    drain = await _queue_drain(client)
    cached = await _open_loop(client, calls(), args.page_rate, counter("cached"))
    return {
        "pages": len(pages),
        "rate": args.page_rate,
        "uncached": {**uncached, "sources": seen["uncached"]},
        "queue_drain_after_uncached": drain,
        "cached": {**cached, "sources": seen["cached"]},
        "meets_target": uncached["errors"] == 0
        and cached["errors"] == 0
        and uncached["latency_ms"].get("p99", 1e9) <= TARGET["page_uncached_p99_ms"]
        and cached["latency_ms"].get("p99", 1e9) <= TARGET["page_cached_p99_ms"],
    }


async def scenario_drain(client, catalog, args) -> dict:
    calls = [
        ("POST", "/v1/recommendations", {"json": b})
        for b in _bodies(catalog, int(args.burst_rate * args.burst_duration), args.seed + 3)
    ]
    burst = await _open_loop(client, calls, args.burst_rate)
    drain = await _queue_drain(client)
    ok = drain["drain_s"] is not None and drain["drain_s"] <= TARGET["drain_s"]
    return {
        "rate": args.burst_rate,
        "duration_s": args.burst_duration,
        "burst": burst,
        **drain,
        "meets_target": ok and drain["queue"]["max_started_age_ms"] <= args.max_age_ms,
    }


def _replica_actors(app: str, deployment: str) -> list[str]:
    """Names of the deployment's live replica actors (named actors of the `serve` namespace; a
    dead one's name is released). Through the driver's own connection: the state API would need
    an address when other Ray instances run on the box."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def _running(app: str, deployment: str) -> bool:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0) >= 1


async def scenario_kill(client, catalog, args, stage: str) -> dict:
    import ray

    deployment = {"generator": "Generator", "ranker": "Ranker", "retriever": "Retriever"}[stage]
    state_key = stage
    before = _replica_actors(args.app_name, deployment)
    if not before:
        return {"error": f"no live {deployment} replica found"}
    answers: list[tuple[float, int, dict]] = []
    bodies = _bodies(catalog, int(args.kill_rate * args.kill_window), args.seed + 11)
    known = [b for b in bodies if b.get("user_id") and not b["user_id"].startswith("bench-new-user")]
    calls = [("POST", "/v1/recommendations", {"json": b}) for b in known]
    readiness: list[tuple[float, int, str]] = []
    details: list[tuple[float, str]] = []

    async def watch_readyz(stop: asyncio.Event):
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = await client.get("/readyz")
                stage_info = r.json()["stages"].get(state_key, {})
                readiness.append((t, r.status_code, stage_info.get("state", "?")))
                details.append((round(t, 2), stage_info.get("detail")))
            except Exception as e:
                readiness.append((t, -1, type(e).__name__))
            await asyncio.sleep(0.2)

    restarted_at: list[float] = []

    async def watch_restart(stop: asyncio.Event):
        """When Serve has a new replica RUNNING (its constructor done: models loaded), not merely created."""
        while not stop.is_set():
            now = await asyncio.to_thread(_replica_actors, args.app_name, deployment)
            if set(now) - set(before) and await asyncio.to_thread(_running, args.app_name, deployment):
                restarted_at.append(time.perf_counter())
                return
            await asyncio.sleep(0.25)

    stop = asyncio.Event()
    watchers = [asyncio.create_task(watch_readyz(stop))]
    await asyncio.sleep(1.0)
    killed_at = time.perf_counter()
    for name in before:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    watchers.append(asyncio.create_task(watch_restart(stop)))
    load = await _open_loop(client, calls, args.kill_rate, on_answer=lambda t, s, b: answers.append((t, s, b)))
    deadline = time.perf_counter() + args.kill_recover_s
    while time.perf_counter() < deadline:  # wait for Serve's new replica and /readyz saying so
        if restarted_at and any(t > restarted_at[0] and s in ("ok", "busy") for t, _, s in readiness):
            break
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*watchers, return_exceptions=True)

    def first(pred):
        hit = next((t for t, code, s in readiness if t > killed_at and pred(code, s)), None)
        return None if hit is None else round(hit - killed_at, 2)

    down_s = first(lambda code, s: s == "down")
    restart_s = round(restarted_at[0] - killed_at, 2) if restarted_at else None
    back = (
        next((t for t, _, s in readiness if restarted_at and t > restarted_at[0] and s in ("ok", "busy")), None)
        if restarted_at
        else None
    )
    back_after_restart_s = round(back - restarted_at[0], 2) if back is not None else None
    ready_503 = sum(1 for t, code, _ in readiness if t > killed_at and code == 503)
    first_answer = min((t for t, _, _ in answers), default=None)
    timeline, last = [], None  # /readyz's view of the stage: each change, seconds from the kill
    for t, code, state in readiness:
        if (code, state) != last:
            timeline.append([round(t - killed_at, 2), code, state])
            last = (code, state)
    detail_changes, last_detail = [], None
    for t, d in details:
        kind = (d or "").split(" in ")[0][:60]
        if kind != last_detail:
            detail_changes.append([round(t - killed_at, 2), d])
            last_detail = kind
    return {
        "stage": stage,
        "readyz_details": detail_changes[:20],
        "rate": args.kill_rate,
        "load": load,
        "first_answer_after_kill_ms": None if first_answer is None else round(1000 * (first_answer - killed_at), 1),
        "readyz_down_after_kill_s": down_s,
        "replica_restarted_after_kill_s": restart_s,
        "readyz_back_after_restart_s": back_after_restart_s,
        "readyz_503_polls_after_kill": ready_503,
        "readyz_timeline": timeline,
        "meets_target": load["errors"] == 0
        and load["known_user_cold_start"] == 0
        and first_answer is not None
        and 1000 * (first_answer - killed_at) <= args.first_answer_budget_ms
        and down_s is not None
        and down_s <= TARGET["down_within_s"]
        and (back_after_restart_s is not None and back_after_restart_s <= TARGET["back_within_s"]),
    }


async def run(args, catalog, base: str) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    out = {}
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:
        for name in args.scenarios:
            if name == "recs":
                out["recs"] = await scenario_recs(client, catalog, args)
            elif name == "page":
                out["page"] = await scenario_page(client, catalog, args)
            elif name == "drain":
                out["drain"] = await scenario_drain(client, catalog, args)
            elif name == "kill":
                out["kill"] = [await scenario_kill(client, catalog, args, stage) for stage in args.kill]
            print(json.dumps({name: out[name]}), file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument(
        "--engine", choices=["fake", "vllm", "none"], default="fake", help="none: template copy only (a control)"
    )
    p.add_argument("--fake-delay-s", type=float, default=1.0, help="seconds per fake generation (engine=fake)")
    p.add_argument("--scenarios", default="recs,page,drain,kill", help="comma-separated: recs, page, drain, kill")
    p.add_argument("--rate", type=float, default=50.0, help="recs: requests per second")
    p.add_argument("--duration", type=float, default=60.0, help="recs: seconds measured")
    p.add_argument("--warmup", type=float, default=10.0, help="recs: seconds at the same rate first, not reported")
    p.add_argument("--pages", type=int, default=100, help="page: distinct product pages")
    p.add_argument("--page-rate", type=float, default=10.0, help="page: requests per second")
    p.add_argument("--burst-rate", type=float, default=20.0, help="drain: requests per second")
    p.add_argument("--burst-duration", type=float, default=60.0, help="drain: seconds of burst")
    p.add_argument("--kill", default="generator,ranker,retriever", help="kill: stages whose replica is killed")
    p.add_argument("--kill-rate", type=float, default=10.0, help="kill: requests per second during the kill")
    p.add_argument("--kill-window", type=float, default=15.0, help="kill: seconds of load from the kill on")
    p.add_argument("--kill-recover-s", type=float, default=240.0, help="kill: most seconds to wait for the restart")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    args = p.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.kill = [s.strip() for s in args.kill.split(",") if s.strip()]
    unknown = set(args.scenarios) - {"recs", "page", "drain", "kill"} or set(args.kill) - {
        "generator",
        "ranker",
        "retriever",
    }
    if unknown:
        p.error(f"unknown scenario or stage {sorted(unknown)}")
    if args.rate <= 0 or not 0 < args.duration <= 600 or args.burst_rate <= 0 or not 0 < args.burst_duration <= 600:
        p.error("rates must be positive and durations in (0, 600] seconds")

    cfg, catalog = prepare(args)
    args.app_name = "bench"
    args.max_age_ms = cfg.serve.generation.queue.max_age_ms
    # The first answer after a kill may pay the stages' budgets once (before the breaker opens).
    args.first_answer_budget_ms = cfg.serve.budgets.retrieval_ms + cfg.serve.budgets.ranking_ms + 100
    app_args = {"fake_delay_s": args.fake_delay_s} if args.engine == "fake" else {}
    base = start_app(args, engine=args.engine, name=args.app_name, app_args=app_args)
    try:
        results = asyncio.run(run(args, catalog, base))
    finally:
        stop_app()
    print(
        json.dumps(
            {
                "benchmark": "serve_resilience",
                "machine": machine(),
                "engine": args.engine,
                "fake_delay_s": args.fake_delay_s if args.engine == "fake" else None,
                "queue": cfg.serve.generation.queue.model_dump(),
                "health": cfg.serve.health.model_dump(),
                **results,
                "target": TARGET,
            }
        )
    )


if __name__ == "__main__":
    main()
