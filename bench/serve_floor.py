"""What Ray Serve itself costs per request for this graph's shape, next to the real graph.

    .venv/bin/python bench/serve_floor.py --artifacts /tmp/shopgraph-bench [--rate 100] [--duration 30]

Two apps, one after the other, on the same local Ray (2 CPUs), the same Serve settings
(`serve.http`: HAProxy's direct ingress; `serve.handle_transport`: gRPC between deployments) and
the same load (`bench/serve_load.py`'s open-loop client and request mix):

- `floor`: an ingress (FastAPI, one POST route parsing the same body) that calls a retriever
  stage, then a ranker stage, then answers 10 items as JSON. The stages do no work: they return
  objects the size of the real ones (50 candidate ids and scores and a history; 10 scored items
  with evidence). What this app costs is the framework's share: HTTP, the two hops, the
  serialization, Serve's own metrics and logs.
- `graph`: the real application (`serve.app:build_app`, `engine: "none"`), as serve_load runs it.

Prints one JSON object: per app, latency, answered rate and CPU milliseconds per request of each
Serve process (`server_cpu_ms_per_request`). The floor's CPU per request, against the CPU this
machine has, bounds the rate any version of the graph could sustain here; the difference
between the two is what the project's own code costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import add_common_args, machine, prepare, request_mix, run_load, start_app, stop_app, wait_ready


class Body(BaseModel):
    """The recommendation request's fields, parsed as the real ingress parses them (pydantic); at
    module level so FastAPI resolves the annotation and reads it from the JSON body."""

    user_id: str | None = None
    recent_items: list[str] = []
    k: int = 10
    with_reasons: bool = True


def floor_app(cfg):
    """The graph's shape with no work in it: ingress -> retriever -> ranker, real-sized payloads."""
    import numpy as np
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    def options(name: str) -> dict:
        d = getattr(cfg.serve.deployments, name)
        return {
            "num_replicas": 1,
            "ray_actor_options": {"num_cpus": d.num_cpus},
            "max_ongoing_requests": d.max_ongoing_requests,
        }

    @serve.deployment(name="FloorRetriever", **options("retriever"))
    class Retriever:
        def __init__(self):
            rng = np.random.default_rng(0)
            self.answer = {
                "history": rng.integers(1, 5000, 20),
                "item_ids": rng.integers(1, 5000, 50),
                "scores": rng.random(50, dtype=np.float32),
            }

        async def retrieve(self, request: dict) -> dict:
            return self.answer

    @serve.deployment(name="FloorRanker", **options("ranker"))
    class Ranker:
        async def rank(self, request: dict) -> list[dict]:
            ids = request["candidates"]["item_ids"][:10].tolist()
            return [{"product_id": f"p{i}", "score": 1.0, "evidence": [{"type": "recommended"}]} for i in ids]

    @serve.deployment(name="FloorIngress", **options("ingress"))
    @serve.ingress(api)
    class Ingress:
        def __init__(self, retriever, ranker):
            by_reference = cfg.serve.handle_transport == "actor"  # as the real ingress sets it
            self.retriever, self.ranker = (h.options(_by_reference=by_reference) for h in (retriever, ranker))

        @api.post("/v1/recommendations")
        async def recommendations(self, body: Body) -> dict:
            got = await self.retriever.retrieve.remote({"user_id": body.user_id, "recent": body.recent_items})
            ranked = await self.ranker.rank.remote({"candidates": got, "k": body.k})
            return {"items": ranked[: body.k], "degraded": []}

        @api.get("/readyz")
        async def readyz(self) -> dict:
            return {"status": "ready"}

    return Ingress.bind(Retriever.bind(), Ranker.bind())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--only", choices=("floor", "graph"), help="run one of the two apps")
    args = p.parse_args()
    if args.rate <= 0 or not 0 < args.duration <= 600:
        p.error("--rate must be positive and --duration in (0, 600] seconds")

    cfg, catalog = prepare(args)
    from ray import serve  # after prepare put serve.http's settings in this process's environment

    warm = request_mix(catalog, int(args.rate * args.warmup), args.seed + 7)
    load = request_mix(catalog, int(args.rate * args.duration), args.seed + 1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.only in (None, "floor"):
                serve.start(http_options={"host": "127.0.0.1", "port": args.port})
                serve.run(floor_app(cfg), name="floor", route_prefix="/")
                base = wait_ready(f"http://127.0.0.1:{args.port}")
                run_load(base, warm, args.rate, tmp, "floor-warmup")
                results["floor"] = run_load(base, load, args.rate, tmp, "floor")
                if not results["floor"]["ok"]:  # a floor that answers nothing measures nothing
                    raise RuntimeError(f"the floor app failed every request: {results['floor'].get('error_kinds')}")
                serve.delete("floor")
            if args.only in (None, "graph"):
                base = start_app(args, engine="none")
                run_load(base, warm, args.rate, tmp, "graph-warmup")
                results["graph"] = run_load(base, load, args.rate, tmp, "graph")
        finally:
            stop_app()

    keep = (
        "offered",
        "ok",
        "errors",
        "error_kinds",
        "achieved_rps",
        "latency_ms",
        "server_cpu_ms_per_request",
        "client",
    )
    floor_cpu, graph_cpu = (
        results[name]["server_cpu_ms_per_request"]["total"] if name in results else None for name in ("floor", "graph")
    )
    print(
        json.dumps(
            {
                "benchmark": "serve_floor",
                "machine": machine(),
                "proxy": cfg.serve.http.proxy,
                "rate": args.rate,
                "duration_s": args.duration,
                **{name: {k: r[k] for k in keep if k in r} for name, r in results.items()},
                "framework_share_of_cpu": round(floor_cpu / graph_cpu, 3) if floor_cpu and graph_cpu else None,
                # the most requests per second that 2 CPUs could serve at the floor's and the graph's cost
                "cpu_bound_rps": {
                    "floor": round(2000 / floor_cpu, 1) if floor_cpu else None,
                    "graph": round(2000 / graph_cpu, 1) if graph_cpu else None,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
