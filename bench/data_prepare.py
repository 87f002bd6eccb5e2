"""Benchmark `data.prepare` on a generated catalog written as raw files (JSONL products, CSV events).

    .venv/bin/python bench/data_prepare.py --products 100000 --events 1000000 --scales 1 2

For each scale s it writes s * (products, users, events) with the sample generator, then times
`prepare` reading them back through the real readers on Ray Data and prints one JSON line:
rows/s over products + events, wall seconds, and peak RSS of the driver (ru_maxrss) and of the
largest Ray worker (psutil, sampled). The last line compares the time of the largest scale with
the smallest (target: doubling the input takes <= 2.2x the time).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _worker_peak(stop: threading.Event, out: list[int]) -> None:
    import psutil

    while not stop.is_set():
        for p in psutil.process_iter(["name", "cmdline", "memory_info"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray::" in (p.info["name"] or "") or "default_worker.py" in cmd:
                out[0] = max(out[0], p.info["memory_info"].rss if p.info["memory_info"] else 0)
        stop.wait(0.5)


def run(products: int, users: int, events: int, work: Path, seed: int) -> dict:
    import ray

    from cluster.config import ShopgraphConfig
    from data.ingest_config import SampleConfig
    from data.prepare import prepare
    from data.sample import write_sample_files

    t0 = time.perf_counter()
    raw = work / f"raw-{products}"
    products_path, events_path = write_sample_files(raw, SampleConfig(num_products=products, num_users=users, num_events=events), seed)
    gen_s = time.perf_counter() - t0
    cfg = ShopgraphConfig.model_validate(
        {
            "artifacts": {"root": str(work / f"art-{products}")},
            "data": {
                "sources": [
                    {"name": "products", "format": "jsonl", "path": str(products_path), "table": "products"},
                    {"name": "events", "format": "csv", "path": str(events_path), "table": "events", "timestamp_unit": "ms"},
                ],
            },
        }
    )
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=_worker_peak, args=(stop, peak), daemon=True)
    sampler.start()
    t1 = time.perf_counter()
    result = prepare(cfg, log=lambda _: None)
    wall = time.perf_counter() - t1
    stop.set()
    sampler.join()
    raw_mb = sum(p.stat().st_size for p in raw.iterdir()) / 2**20
    shutil.rmtree(raw)
    shutil.rmtree(work / f"art-{products}")
    return {
        "products": products,
        "events": events,
        "raw_mib": round(raw_mb, 1),
        "generate_s": round(gen_s, 2),
        "prepare_s": round(wall, 2),
        "rows_per_s": round((products + events) / wall),
        "kept": result.products + result.events,
        "quarantined": result.quarantined,
        "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_rss_mib": round(peak[0] / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=None, help="default: events / 25")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    users = args.users or max(1, args.events // 25)
    results = []
    with tempfile.TemporaryDirectory(prefix="shopgraph-bench-") as tmp:
        for s in args.scales:
            res = run(args.products * s, users * s, args.events * s, Path(tmp), args.seed)
            results.append(res)
            print(json.dumps(res), flush=True)
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        print(json.dumps({"input_ratio": hi["events"] / lo["events"], "time_ratio": round(hi["prepare_s"] / lo["prepare_s"], 2)}))


if __name__ == "__main__":
    main()
