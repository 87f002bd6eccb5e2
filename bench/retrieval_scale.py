"""Main retrieval at catalog scale: the exported item index (exact, HNSW, IVF) side by side.

    .venv/bin/python bench/retrieval_scale.py --n 1000000 [--types flat hnsw ivf] [--queries 1000]

What a Retriever replica does, per index type, in one run:
- export: build the index over the item vectors as `shopgraph train recommender` does at export
  (`ml.index.build_item_index`, the config's `train.recommender.item_index` with `--set`-style
  overrides below) and write it beside the vectors;
- start-up: load the vectors and the index file as a replica does (`ml.index.load_item_index`:
  no rebuild), timed;
- per query: one SASRec forward (a real model with `--n` items, 64 hidden + the bias column)
  and the index search for 200 candidates with 100 deleted products excluded (over-fetch), one
  query at a time as an idle replica serves them; p50 / p99 over `--queries`;
- recall@10 of the index's top 10 against exact search over all items.

Item vectors: clustered (`--clusters` centres + noise), norms spread 0.5-2x and a bias column, as
SASRec exports them; uniform random vectors have no neighbours worth finding. Queries are drawn
from the same distribution with the bias column's weight 1. Prints one JSON object.
Targets (issue 17, at 1M items): recall@10 >= 0.95 vs exact, retrieval p99 <= 10 ms per query.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

DIM = 64  # SASRec hidden; vectors carry one more column, the item bias


def vectors(n: int, clusters: int, rng: np.random.Generator, centres: np.ndarray | None = None, bias: bool = True):
    if centres is None:
        centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    x = np.empty((n, DIM + 1), np.float32)
    for s in range(0, n, 200_000):  # in chunks: a 1M x 65 temporary per step would double the peak
        m = min(n, s + 200_000) - s
        x[s : s + m, :DIM] = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, DIM))
        x[s : s + m, :DIM] *= rng.uniform(0.5, 2.0, (m, 1))
        x[s : s + m, DIM] = np.log1p(rng.poisson(3, m)) if bias else 1.0
    return x, centres


def percentile(a, p):
    return round(float(np.percentile(a, p)), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivf"], choices=["flat", "hnsw", "ivf"])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--candidates", type=int, default=200, help="candidates per query (the ranker's input)")
    p.add_argument("--deleted", type=int, default=100, help="deleted products excluded from every search")
    p.add_argument("--set", nargs="*", default=[], help="train.recommender.item_index overrides, e.g. ef_search=96")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="keep each export under KEEP/<type> and reuse it on the next run (same --n, --seed)")
    args = p.parse_args()

    import faiss
    import torch

    from core.config import load_config, profile_path
    from core.manifest import MANIFEST_NAME, read_manifest, write_manifest
    from ml.index import build_item_index, inner_product_index, load_item_index, write_item_index
    from ml.sasrec import SASRec, SASRecConfig, pad_left

    torch.set_num_threads(1)  # as RetrieverCore sets them
    faiss.omp_set_num_threads(1)
    cfg = load_config(profile_path("local"), [f"train.recommender.item_index.{kv}" for kv in args.set])
    icfg = cfg.train.recommender.item_index
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    items, centres = vectors(args.n, args.clusters, rng)
    queries, _ = vectors(args.queries, args.clusters, rng, centres, bias=False)
    _, truth = inner_product_index(items).search(queries, 10)
    out: dict = {
        "items": args.n, "dim": DIM + 1, "queries": args.queries, "candidates": args.candidates,
        "deleted_excluded": args.deleted, "faiss_threads": faiss.omp_get_max_threads(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()], "item_index_config": icfg.model_dump(),
        "data_s": round(time.perf_counter() - t0, 1), "indexes": {},
    }  # fmt: skip
    model = SASRec(SASRecConfig(num_items=args.n, hidden=DIM, item_bias=True)).eval()
    histories = [rng.integers(1, args.n + 1, 20) for _ in range(args.queries)]
    deleted = np.zeros(args.n, bool)
    deleted[rng.choice(args.n, args.deleted, replace=False)] = True
    for kind in args.types:
        with tempfile.TemporaryDirectory(prefix="shopgraph-retrieval-") as tmp:
            folder = Path(args.keep) / kind if args.keep else Path(tmp)
            build_s = None
            if not (folder / MANIFEST_NAME).exists():
                folder.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                index, params = build_item_index(items, icfg.model_copy(update={"type": kind}), seed=args.seed)
                build_s = round(time.perf_counter() - t0, 1)
                np.save(folder / "item_vectors.npy", items)
                write_item_index(folder, index)  # as the export writes it, exact ones too
                write_manifest(folder, {"item_index": params | {"overfetch": icfg.overfetch}, "build_s": build_s})
                del index
            build_s = build_s or read_manifest(folder)["meta"]["build_s"]
            t0 = time.perf_counter()
            loaded = load_item_index(folder, np.load(folder / "item_vectors.npy"), read_manifest(folder)["meta"])
            start_s = time.perf_counter() - t0
            _, got = loaded.search(queries, 10)
            recall = float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)]))
            search_ms, total_ms = [], []
            with torch.inference_mode():
                for i in range(args.queries):
                    t0 = time.perf_counter()
                    model.predict(torch.from_numpy(pad_left([histories[i]], 50)))
                    t1 = time.perf_counter()
                    loaded.search(queries[i : i + 1], args.candidates, deleted)
                    t2 = time.perf_counter()
                    search_ms.append((t2 - t1) * 1000)
                    total_ms.append((t2 - t0) * 1000)
            out["indexes"][kind] = {
                "params": {k: v for k, v in loaded.params.items()},
                "build_s": build_s,
                "replica_start_s": round(start_s, 2),
                "recall@10": round(recall, 4),
                "search_ms": {"p50": percentile(search_ms, 50), "p99": percentile(search_ms, 99)},
                "retrieval_ms": {"p50": percentile(total_ms, 50), "p99": percentile(total_ms, 99)},
                "targets": {"recall@10>=0.95": recall >= 0.95, "retrieval_p99_ms<=10": percentile(total_ms, 99) <= 10},
            }
            print(json.dumps({kind: out["indexes"][kind]}), file=sys.stderr, flush=True)
            del loaded
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
