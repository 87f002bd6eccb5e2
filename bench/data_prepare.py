"""Benchmark `data.prepare` on a generated catalog written as raw files (JSONL products, CSV events).

    .venv/bin/python bench/data_prepare.py --products 500000 --events 5000000 --scales 1 2 [--work-dir /tmp/sgbench]

For each scale s it writes s * (products, users, events) with the sample generator, then times
`prepare` reading them back through the real readers on Ray Data and prints one JSON line.
Both steps run in their own child process, so one scale's memory never counts in the next:

- `generate_s`: writing the raw files (reported apart; not part of `prepare_s`);
- `prepare_s`: the `prepare()` call (plan, parse, validate, sort, write shards), after Ray is up;
  `ray_init_s` is reported apart and `total_s` is all three;
- memory: `driver_peak_rss_mib` (the driver's ru_maxrss), `worker_peak_rss_mib` (the largest
  single Ray worker, sampled), and `tree_peak_pss_mib` — the largest sum over time of the
  proportional set size (PSS) of the driver and every process under it (GCS, raylet with the
  object store, workers), sampled every `--sample-s`. PSS splits shared pages (the object store
  mapped by several processes) between them, so the sum is what the run really held; the sum of
  RSS (`tree_peak_rss_mib`) double-counts those pages and is shown for comparison.

The last line compares the largest scale with the smallest (target: doubling the input takes
<= 2.2x the time, peak memory <= 8 GiB at 1M products + 10M events). With `--work-dir`, raw files
are kept there and reused by a later run with the same sizes and seed (generation is slow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _generate(raw: Path, products: int, users: int, events: int, seed: int) -> None:
    from core.config.ingest import SampleConfig
    from data.sample import write_sample_files

    write_sample_files(raw, SampleConfig(num_products=products, num_users=users, num_events=events), seed)


def _prepare(raw: Path, art: Path) -> dict:
    import resource

    import ray

    from core.config import ShopgraphConfig
    from data.prepare import prepare

    cfg = ShopgraphConfig.model_validate(
        {
            "artifacts": {"root": str(art)},
            "data": {
                "sources": [
                    {"name": "products", "format": "jsonl", "path": str(raw / "products.jsonl"), "table": "products"},
                    {
                        "name": "events",
                        "format": "csv",
                        "path": str(raw / "events.csv"),
                        "table": "events",
                        "timestamp_unit": "ms",
                    },
                ],
            },
        }
    )
    t0 = time.perf_counter()
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a busy shared box can miss that
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            if attempt == 2:
                raise
            ray.shutdown()
    ray.data.DataContext.get_current().enable_progress_bars = False
    t1 = time.perf_counter()
    result = prepare(cfg, log=lambda _: None)
    t2 = time.perf_counter()
    ray.shutdown()
    return {
        "ray_init_s": round(t1 - t0, 2),
        "prepare_s": round(t2 - t1, 2),
        "kept": result.products + result.events,
        "quarantined": result.quarantined,
        "phases": result.phases,
        "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


class TreeSampler(threading.Thread):
    """Peak memory of a process and everything under it, sampled."""

    def __init__(self, pid: int, every_s: float):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.stop = pid, every_s, threading.Event()
        self.pss = self.rss = self.worker = 0
        self.samples = 0
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds, last seen

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            pss = rss = 0
            for p in procs:
                try:
                    mem = p.memory_full_info()
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                    pss, rss = pss + mem.pss, rss + mem.rss
                    if p.name().startswith("ray::") or "default_worker.py" in " ".join(p.cmdline()):
                        self.worker = max(self.worker, mem.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            self.pss, self.rss, self.samples = max(self.pss, pss), max(self.rss, rss), self.samples + 1
            self.stop.wait(self.every_s)


def _child(phase: str, *args: str) -> tuple[dict, float, TreeSampler]:
    cmd = [sys.executable, __file__, "--phase", phase, *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid, _child.every_s)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{phase} failed with exit code {proc.returncode}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall, sampler


_child.every_s = 1.0


def run(products: int, users: int, events: int, work: Path, seed: int, keep_raw: bool) -> dict:
    raw, art = work / f"raw-{products}-{users}-{events}-{seed}", work / f"art-{products}"
    marker = raw / "complete.json"
    load = {"load_average_before": round(os.getloadavg()[0], 1)}
    if marker.is_file():
        gen_s, gen_peak, reused = json.loads(marker.read_text())["generate_s"], None, True
    else:
        shutil.rmtree(raw, ignore_errors=True)
        _, gen_s, sampler = _child("generate", str(raw), str(products), str(users), str(events), str(seed))
        gen_peak, reused = round(sampler.pss / 2**20), False
        marker.write_text(json.dumps({"generate_s": gen_s}))
    shutil.rmtree(art, ignore_errors=True)
    res, wall, sampler = _child("prepare", str(raw), str(art))
    raw_mb = sum(p.stat().st_size for p in raw.iterdir() if p.suffix in (".csv", ".jsonl")) / 2**20
    shutil.rmtree(art, ignore_errors=True)
    if not keep_raw:
        shutil.rmtree(raw)
    return {
        "products": products,
        "users": users,
        "events": events,
        "raw_mib": round(raw_mb, 1),
        "generate_s": round(gen_s, 2),
        "generate_reused": reused,
        "generate_peak_pss_mib": gen_peak,
        **{k: res[k] for k in ("ray_init_s", "prepare_s", "phases")},
        "prepare_process_s": round(wall, 2),  # child wall: Python start, ray.init, prepare, ray.shutdown
        "total_s": round(gen_s + wall, 2),
        "rows_per_s": round((products + events) / res["prepare_s"]),
        "kept": res["kept"],
        "quarantined": res["quarantined"],
        "driver_peak_rss_mib": res["driver_peak_rss_mib"],
        "worker_peak_rss_mib": round(sampler.worker / 2**20),
        "tree_peak_pss_mib": round(sampler.pss / 2**20),
        "tree_peak_rss_mib": round(sampler.rss / 2**20),
        "tree_cpu_s": round(
            sum(sampler.cpu.values()), 1
        ),  # CPU seconds of the prepare process tree (sampled: a lower bound)
        "memory_samples": sampler.samples,
        **load,
        "load_average_after": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=None, help="default: events / 25")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--scales", type=int, nargs="+", default=[1, 2], help="each scale multiplies products, users and events"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep raw files here and reuse them (default: a temporary directory, removed)",
    )
    parser.add_argument("--sample-s", type=float, default=1.0, help="memory sampling interval")
    parser.add_argument("--phase", choices=["generate", "prepare"], default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.phase == "generate":
        raw, products, users, events, seed = rest
        _generate(Path(raw), int(products), int(users), int(events), int(seed))
        return
    if args.phase == "prepare":
        print(json.dumps(_prepare(Path(rest[0]), Path(rest[1]))), flush=True)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _child.every_s = args.sample_s
    users = args.users or max(1, args.events // 25)
    results = []
    with tempfile.TemporaryDirectory(prefix="shopgraph-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for s in args.scales:
            res = run(
                args.products * s, users * s, args.events * s, work, args.seed, keep_raw=args.work_dir is not None
            )
            results.append(res)
            print(json.dumps(res), flush=True)
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        print(
            json.dumps(
                {
                    "input_ratio": hi["events"] / lo["events"],
                    "time_ratio": round(hi["prepare_s"] / lo["prepare_s"], 2),
                    "cpu_ratio": round(hi["tree_cpu_s"] / lo["tree_cpu_s"], 2),
                    "target_time_ratio": 2.2,
                    "largest_tree_peak_pss_gib": round(hi["tree_peak_pss_mib"] / 1024, 2),
                    "target_peak_gib": 8,
                }
            )
        )


if __name__ == "__main__":
    main()
