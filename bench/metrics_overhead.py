"""Cost of one metric update through serve.metrics: the replica's registry only (outside Ray) and
the registry plus Ray's metrics (inside a Ray actor, as in every Serve replica).

    .venv/bin/python bench/metrics_overhead.py [--n 20000]

A request to /v1/recommendations makes about ten updates (request counter, stage latencies,
content sources); the figure that matters is µs per update against the 5 ms graph overhead budget.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time


def measure(n: int, ray_on: bool) -> dict[str, float]:
    from serve.metrics import MetricSet

    ms = MetricSet(ray=ray_on)
    counter = ms.counter("shopgraph_bench_requests_total", "bench", ["endpoint", "status"])
    hist = ms.histogram("shopgraph_bench_latency_seconds", "bench", ["stage"])
    out = {}
    t0 = time.perf_counter()
    for i in range(n):
        counter.labels("/v1/recommendations", "200").inc()
    out["counter_us"] = 1e6 * (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        hist.labels("retriever").observe(0.001 * (i % 50))
    out["histogram_us"] = 1e6 * (time.perf_counter() - t0) / n
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="updates per metric kind")
    args = parser.parse_args()
    if args.n < 1:
        parser.error(f"--n must be a positive number of updates, got {args.n}")
    import ray

    local = measure(args.n, ray_on=False)
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        in_actor = ray.get(ray.remote(num_cpus=0.1)(_Bench).remote().run.remote(args.n))
    finally:
        ray.shutdown()
    print(json.dumps({"n": args.n, "registry_only": local, "registry_and_ray": in_actor}))


class _Bench:
    def run(self, n: int) -> dict:
        from serve.metrics import in_ray_actor

        assert in_ray_actor()
        return measure(n, ray_on=True)


if __name__ == "__main__":
    main()
