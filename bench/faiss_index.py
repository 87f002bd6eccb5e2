"""FAISS IVF and HNSW vs exact search: recall@10 and QPS on clustered unit vectors.

    .venv/bin/python bench/faiss_index.py --n 200000 [--dim 384] [--queries 1000]

Vectors: `--clusters` random unit centres plus Gaussian noise, L2-normalized (real embeddings
are clustered too; uniform random vectors have no neighbours worth finding). Queries are fresh
draws from the same distribution (held out from the index). Indexes are built with the same
code as `shopgraph data index` (`data.index.build_index`); recall@10 is measured against exact
inner-product search, QPS over one batch of queries with FAISS's default threads. Each index
reports a sweep of its search parameter; `best` is the fastest setting with recall@10 >= 0.95.
Target (issue 3, on 1M vectors): recall@10 >= 0.95 at >= 5x exact QPS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core.config.data import IndexConfig  # noqa: E402
from data.index import auto_nlist, build_index  # noqa: E402
from ml.index import set_search_params  # noqa: E402

K = 10


def clustered(
    n: int, dim: int, clusters: int, rng: np.random.Generator, centres: np.ndarray | None = None, noise: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # chunked: keeps peak memory near the output size
        m = min(100_000, n - start)
        x = centres[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(
            dim
        )
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centres


def timed_search(index, queries: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, rows = index.search(queries, K)
    return rows, len(queries) / (time.perf_counter() - start)


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, truth, strict=True)]))


def main() -> None:
    import faiss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384, help="384 = the MiniLM encoder's dimension")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument(
        "--noise", type=float, default=1.0, help="norm of the Gaussian noise around a unit centre (higher = harder)"
    )
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=None, help="default: 4*sqrt(N)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--skip", choices=["ivf", "hnsw"], nargs="*", default=[])
    args = p.parse_args()

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    base, centres = clustered(args.n, args.dim, args.clusters, rng, noise=args.noise)
    queries, _ = clustered(args.queries, args.dim, args.clusters, rng, centres, args.noise)
    report: dict = {"n": args.n, "dim": args.dim, "clusters": args.clusters, "noise": args.noise, "queries": args.queries, "k": K,
                    "cpu_count": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
                    "load_average_at_start": os.getloadavg()[0], "generate_s": round(time.perf_counter() - t0, 1)}  # fmt: skip

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(base)
    truth, exact_qps = timed_search(exact, queries)
    report["exact"] = {"qps": round(exact_qps, 1)}

    def sweep(name: str, cfg: IndexConfig, param: str, values: list[int]) -> None:
        start = time.perf_counter()
        index, params = build_index(cfg, base)
        entry = {"build_s": round(time.perf_counter() - start, 1), "params": params, "sweep": []}
        for v in values:
            set_search_params(index, cfg.type, {**params, param: v})
            rows, qps = timed_search(index, queries)
            entry["sweep"].append(
                {
                    param: v,
                    "recall_at_10": round(recall(rows, truth), 4),
                    "qps": round(qps, 1),
                    "speedup_vs_exact": round(qps / exact_qps, 2),
                }
            )
        ok = [s for s in entry["sweep"] if s["recall_at_10"] >= 0.95]
        entry["best"] = max(ok, key=lambda s: s["qps"]) if ok else None
        entry["meets_target"] = bool(entry["best"] and entry["best"]["speedup_vs_exact"] >= 5)
        report[name] = entry
        print(json.dumps({name: entry}), file=sys.stderr, flush=True)  # progress, in case a later build is cut off

    if "ivf" not in args.skip:
        nlist = args.nlist or auto_nlist(args.n)
        sweep(
            "ivf",
            IndexConfig(type="ivf", nlist=nlist, nprobe=min(args.nprobe[0], nlist)),
            "nprobe",
            [v for v in args.nprobe if v <= nlist],
        )
    if "hnsw" not in args.skip:
        sweep(
            "hnsw",
            IndexConfig(
                type="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search[0]
            ),
            "ef_search",
            args.ef_search,
        )
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
