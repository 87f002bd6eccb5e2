"""FAISS index over product vectors: Flat, IVF or HNSW by config, inner product on unit vectors.

    python -m data.index --config configs/local.yaml       # same as `shopgraph data index`

Reads the committed embeddings (`ml.index.load_embeddings`), builds the configured index
(`data.index`), measures recall@10 against exact search on a seeded sample of the indexed
vectors (each query's own row excluded, so the number is "the 10 nearest other items", the
item-to-item case, not a trivial self-hit), and writes under `layout.index`:

- `index.faiss`   faiss.write_index output
- `ids.parquet`   faiss row -> product_id, item_idx
- manifest meta:  type, dim, count, metric, build params (effective nlist/nprobe, M, ef*),
                  recall_at_10, recall_queries, build_s

`load_index(path)` verifies the manifest, checks that the index matches it, and re-applies the
search-time parameters (nprobe, efSearch), so a loaded index answers exactly like the built one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.config.data import IndexConfig
from core.layout import ArtifactLayout
from core.manifest import IncompleteDirError, files_digest, read_manifest, staged_dir, write_manifest
from core.runtime import local_dir
from ml.index import (
    IDS_FILE,
    IDS_SCHEMA,
    INDEX_FILE,
    RECALL_K,
    LoadedIndex,
    check_vectors,
    load_embeddings,
    load_index,
    set_search_params,
    vectors_of,
)


def auto_nlist(n: int) -> int:
    # 4*sqrt(N) is FAISS's rule of thumb; k-means wants >= 39 training points per centroid.
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_params(cfg: IndexConfig, n: int) -> dict[str, Any]:
    """The effective parameters for `n` vectors (what the manifest records)."""
    if cfg.type == "ivf":
        nlist = min(cfg.nlist or auto_nlist(n), n)
        return {"nlist": nlist, "nprobe": min(cfg.nprobe, nlist)}
    if cfg.type == "hnsw":
        return {"hnsw_m": cfg.hnsw_m, "ef_construction": cfg.ef_construction, "ef_search": cfg.ef_search}
    return {}


def build_index(cfg: IndexConfig, vectors: np.ndarray, *, dim: int | None = None, seed: int = 0):
    """A trained, filled FAISS index over `vectors` (normalized here), and its effective params."""
    import faiss

    vectors = check_vectors(vectors, dim)
    n, d = vectors.shape
    params = build_params(cfg, n)
    if cfg.type == "flat":
        index = faiss.IndexFlatIP(d)
    elif cfg.type == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        # FAISS samples 256 points per centroid anyway; pick them ourselves so the seed decides.
        rng = np.random.default_rng(seed)
        train = (
            vectors
            if n <= 256 * params["nlist"]
            else vectors[np.sort(rng.choice(n, 256 * params["nlist"], replace=False))]
        )
        index.train(train)
    elif cfg.type == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
    else:  # the config's Literal already rejects this; guard direct callers
        raise ValueError(f"unknown index type {cfg.type!r}; set data.index.type to flat, ivf or hnsw")
    index.add(vectors)
    set_search_params(index, cfg.type, params)
    return index, params


def recall_at_k(
    index, vectors: np.ndarray, sample: int, *, k: int = RECALL_K, seed: int = 0
) -> tuple[float | None, int]:
    """Mean overlap of the index's and exact search's k nearest other rows, over a seeded sample."""
    import faiss

    n = len(vectors)
    if sample == 0 or n < 2:
        return None, 0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    queries = vectors[rows]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    kk = min(k + 1, n)
    _, truth = exact.search(queries, kk)
    _, got = index.search(queries, kk)
    hits = 0.0
    for row, t, g in zip(rows, truth, got, strict=True):
        t = [x for x in t if x != row and x >= 0][: kk - 1]
        g = [x for x in g if x != row and x >= 0][: kk - 1]
        hits += len(set(t) & set(g)) / len(t)
    return round(hits / len(rows), 4), len(rows)


def write_index(final: Path, index, ids: pa.Table, meta: dict[str, Any]) -> Path:
    import faiss

    with staged_dir(final) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        pq.write_table(ids.cast(IDS_SCHEMA), staging / IDS_FILE)
        write_manifest(staging, meta)
    return final


def build_from_embeddings(
    cfg: IndexConfig,
    embeddings: pa.Table,
    final: Path,
    *,
    dim: int | None = None,
    seed: int = 0,
    extra_meta: dict | None = None,
) -> LoadedIndex:
    """Build, measure and commit an index from an embeddings table (product_id, item_idx, vector)."""
    if embeddings.num_rows == 0:
        raise ValueError("no embeddings to index; run `shopgraph data embed-products` on a non-empty catalog first")
    start = time.perf_counter()
    vectors = check_vectors(vectors_of(embeddings), dim, "embeddings")
    index, params = build_index(cfg, vectors, seed=seed)
    build_s = time.perf_counter() - start
    recall, queries = recall_at_k(index, vectors, cfg.recall_sample, seed=seed)
    ids = pa.table(
        {
            "row": np.arange(embeddings.num_rows),
            "product_id": embeddings["product_id"],
            "item_idx": embeddings["item_idx"],
        },
        schema=IDS_SCHEMA,
    )
    meta = {
        "stage": "index",
        "type": cfg.type,
        "metric": "inner_product",
        "dim": int(vectors.shape[1]),
        "count": int(index.ntotal),
        "params": params,
        f"recall_at_{RECALL_K}": recall,
        "recall_queries": queries,
        "build_s": round(build_s, 3),
        "seed": seed,
        "config": cfg.model_dump(mode="json"),
        **(extra_meta or {}),
    }
    write_index(final, index, ids, meta)
    return load_index(final)


def run(config) -> dict[str, Any]:
    """The `shopgraph data index` stage: committed embeddings -> committed index."""
    layout = ArtifactLayout(config.artifacts.root)
    try:
        embeddings, emb_meta = load_embeddings(layout)
    except IncompleteDirError as e:
        raise IncompleteDirError(f"{e}; run `shopgraph data embed-products` first") from None
    loaded = build_from_embeddings(
        config.data.index,
        embeddings,
        local_dir(layout.index),
        dim=emb_meta.get("dim"),
        seed=config.data.seed,
        extra_meta={
            "encoder": emb_meta.get("encoder"),
            "embeddings_created": read_manifest(local_dir(layout.embeddings))["created_at"],
            # what the refresh checks: an index built from other embeddings is rebuilt, not patched
            "embeddings_digest": files_digest(read_manifest(local_dir(layout.embeddings))),
        },
    )
    return loaded.meta


def main(argv: list[str] | None = None) -> int:
    """`python -m data.index` (a `ray job submit` / RayJob entry point) and its `shopgraph data` command."""
    from core.cli import stage_main

    return stage_main(argv, run, prog="python -m data.index", description=__doc__)


if __name__ == "__main__":
    import sys

    sys.exit(main())
