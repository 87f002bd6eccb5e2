"""FAISS over item or text vectors: the committed index directory, loading it, exact search.

    from ml.index import load_index, load_embeddings, inner_product_index

`data.index` builds and commits the text index (flat / IVF / HNSW by config); serving and the
ranker's training load it here, and both build the exact inner-product index over the
recommender's item vectors with `inner_product_index`, so retrieval is the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.layout import ArtifactLayout
from core.manifest import MANIFEST_NAME, IncompleteDirError, read_manifest, verify_dir
from core.runtime import local_dir

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
RECALL_K = 10
IDS_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        # null: a dead row, left behind by `shopgraph data refresh` when its product was changed
        # or deleted (HNSW cannot remove vectors, so every index type marks rows dead the same way)
        pa.field("product_id", pa.string()),
        pa.field("item_idx", pa.int64()),
    ]
)


def check_vectors(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """A contiguous float32 (N, dim) copy, L2-normalized; a clear error for anything else."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(
            f"{what} must be a non-empty (N, dim) array, got shape {vectors.shape}; run `shopgraph data embed-products` first"
        )
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(
            f"{what} have dim {vectors.shape[1]}, expected {dim}; embed them with the same encoder (models.encoder) as the index"
        )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or inf; re-run `shopgraph data embed-products`")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} contain an all-zero vector, which has no direction for inner-product search")
    vectors /= norms  # in place: at 1M x 384 every extra copy is 1.5 GB
    return vectors


def set_search_params(index, index_type: str, params: dict[str, Any]) -> None:
    import faiss

    if index_type == "ivf":
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    elif index_type == "hnsw":
        index.hnsw.efSearch = params["ef_search"]


def inner_product_index(vectors: np.ndarray):
    """An exact FAISS inner-product index over (N, dim) vectors, taken as they are (not
    normalized: the recommender's item vectors carry the item bias as one more dimension)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


@dataclass
class LoadedIndex:
    index: Any  # faiss.Index
    ids: pa.Table  # IDS_SCHEMA, one row per faiss row
    meta: dict[str, Any]
    live: np.ndarray | None = None  # bool per faiss row; None = every row is live

    def __post_init__(self) -> None:
        if self.live is None and self.ids["product_id"].null_count:
            self.live = self.ids["product_id"].is_valid().to_numpy(zero_copy_only=False)

    @property
    def dead_rows(self) -> int:
        return 0 if self.live is None else int(len(self.live) - self.live.sum())

    def search(self, queries: np.ndarray, k: int = RECALL_K) -> tuple[np.ndarray, np.ndarray]:
        """(scores, faiss rows) for L2-normalized queries, live rows only; map rows with `self.ids`.

        Dead rows (a refreshed product's old vector, a deleted product) stay in the FAISS index
        until the next full build: the search over-fetches past them, so k live rows come back
        (padded with row -1, as FAISS pads, when fewer than k exist)."""
        queries = check_vectors(np.atleast_2d(queries), self.meta["dim"], "queries")
        dead = self.dead_rows
        if not dead:
            return self.index.search(queries, k)
        total = int(self.index.ntotal)
        # A little headroom first (dead rows are usually a small share); the queries that still lack
        # k live rows search again past every dead row, which is always enough.
        first, enough = min(total, k + min(dead, max(k, 16))), min(total, k + dead)
        scores, rows = self._live_top(queries, k, first)
        short = (rows < 0).any(axis=1)
        if enough > first and short.any():
            scores[short], rows[short] = self._live_top(queries[short], k, enough)
        return scores, rows

    def _live_top(self, queries: np.ndarray, k: int, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(queries, fetch)
        keep = (rows >= 0) & self.live[np.maximum(rows, 0)]
        # stable sort on "dead first = 1" keeps FAISS's order among the live rows
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        out_rows = np.take_along_axis(rows, order, axis=1)
        out_scores = np.take_along_axis(scores, order, axis=1)
        gone = ~np.take_along_axis(keep, order, axis=1)
        out_rows[gone] = -1
        out_scores[gone] = -np.finfo(np.float32).max
        if out_rows.shape[1] < k:  # fewer rows than k in the whole index
            pad = k - out_rows.shape[1]
            out_rows = np.pad(out_rows, ((0, 0), (0, pad)), constant_values=-1)
            out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.finfo(np.float32).max)
        return out_scores, out_rows

    def product_ids(self, rows: np.ndarray) -> list[list[str | None]]:
        """Product id per row; None for padding (-1) and for dead rows."""
        pids = self.ids["product_id"].to_pylist()
        return [[pids[r] if r >= 0 else None for r in row] for row in np.atleast_2d(rows)]


def load_index(path: str | Path) -> LoadedIndex:
    """A committed index directory, verified against its manifest, with its search params applied."""
    import faiss

    root = Path(path)
    try:
        manifest = verify_dir(root)
    except IncompleteDirError as e:
        raise IncompleteDirError(f"{e}; rebuild it with `shopgraph data index`") from None
    meta = manifest["meta"]
    index = faiss.read_index(str(root / INDEX_FILE))
    ids = pq.read_table(root / IDS_FILE)
    if index.d != meta["dim"] or index.ntotal != meta["count"] or ids.num_rows != meta["count"]:
        raise IncompleteDirError(
            f"{root}: index has dim {index.d} and {index.ntotal} vectors, ids {ids.num_rows} rows, but the manifest says dim "
            f"{meta['dim']} and {meta['count']}; rebuild it with `shopgraph data index`"
        )
    dead = ids["product_id"].null_count
    if dead != meta.get("dead_rows", 0):
        raise IncompleteDirError(
            f"{root}: ids mark {dead} dead rows, the manifest says {meta.get('dead_rows', 0)}; "
            "rebuild it with `shopgraph data index`"
        )
    set_search_params(index, meta["type"], meta["params"])
    return LoadedIndex(index=index, ids=ids, meta=meta)


def load_embeddings(layout_or_dir: ArtifactLayout | str | Path) -> tuple[pa.Table, dict[str, Any]]:
    """Committed embeddings sorted by product_id (deterministic row order), and their manifest meta."""
    root = local_dir(layout_or_dir.embeddings) if isinstance(layout_or_dir, ArtifactLayout) else Path(layout_or_dir)
    verify_dir(root)
    meta = read_manifest(root)["meta"]
    table = pa.concat_tables(pq.read_table(f) for f in sorted(root.glob("*.parquet")) if f.name != MANIFEST_NAME)
    return table.sort_by("product_id"), meta


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `vector` column as a contiguous (N, dim) float32 array."""
    column = table["vector"].combine_chunks()
    return (
        column.values.to_numpy(zero_copy_only=False)
        .reshape(len(column), column.type.list_size)
        .astype(np.float32, copy=False)
    )


# -- main retrieval: the recommender's item vectors (maximum inner product, not normalized)

ITEM_INDEX_FILE = "item_index.faiss"


def mips_augment(vectors: np.ndarray, max_norm: float | None = None) -> tuple[np.ndarray, float]:
    """Item vectors as points whose L2 nearest neighbours are their maximum-inner-product ones:
    x' = [x, sqrt(M^2 - |x|^2)] with M the largest norm, queried by q' = [q, 0], since
    |q' - x'|^2 = |q|^2 + M^2 - 2 q.x (Bachrach et al., RecSys 2014). IVF is built on L2 over
    these, so its k-means cells and the search agree on one metric."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    sq = np.einsum("ij,ij->i", vectors, vectors)
    m2 = float(sq.max()) if max_norm is None else max_norm**2
    extra = np.sqrt(np.maximum(m2 - sq, 0.0)).astype(np.float32)
    return np.hstack([vectors, extra[:, None]]), float(np.sqrt(m2))


def build_item_index(vectors: np.ndarray, cfg, *, seed: int = 0):
    """A filled FAISS index over the recommender's item vectors (`cfg`: train.recommender.item_index)
    and its effective params: flat = exact inner product; ivf = L2 over `mips_augment`; hnsw =
    inner product. ItemIndex re-scores what either finds exactly."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors) or not np.isfinite(vectors).all():
        raise ValueError(f"item vectors must be a finite, non-empty (N, dim) array, got shape {vectors.shape}")
    n = len(vectors)
    if cfg.type == "flat" or n < 1000:  # an ANN index over a small catalog buys nothing: exact
        return inner_product_index(vectors), {"type": "flat"}
    if cfg.type == "ivf":
        aug, max_norm = mips_augment(vectors)  # k-means cells are L2 cells: search them in L2
        d = aug.shape[1]
        nlist = min(cfg.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39)), n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = aug if n <= 64 * nlist else aug[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        index.train(sample)
        index.add(aug)
        params = {"type": "ivf", "nlist": nlist, "nprobe": min(cfg.nprobe, nlist), "augmented": True}
    elif cfg.type == "hnsw":
        # Inner product on the raw vectors: on SASRec-like vectors (clustered, unequal norms) the
        # graph finds the top 10 far sooner than over the augmented ones (recall@10 0.99 vs 0.77 at
        # efSearch 64, tests/ml/test_item_index.py's data), which put every query far from every point.
        index = faiss.IndexHNSWFlat(vectors.shape[1], cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.add(vectors)
        params = {"type": "hnsw", "hnsw_m": cfg.hnsw_m, "ef_construction": cfg.ef_construction,
                  "ef_search": cfg.ef_search}  # fmt: skip
    else:
        raise ValueError(
            f"unknown item index type {cfg.type!r}; set train.recommender.item_index.type to flat, ivf or hnsw"
        )
    set_search_params(index, params["type"], params)
    return index, params


class ItemIndex:
    """Main retrieval: top-k items by the recommender's score (inner product with its user vector).

    `search` over-fetches from the ANN index, re-scores what it found exactly against the item
    vectors (so scores are the model's, and order is exact among the candidates), drops excluded
    rows (products deleted in the online database), and searches wider for a query left short,
    so k results remain whenever k allowed items exist."""

    def __init__(self, index, vectors: np.ndarray, params: dict[str, Any], overfetch: float = 2.0):
        self.index, self.params, self.overfetch = index, params, overfetch
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.exact = params.get("type", "flat") == "flat"
        self.augmented = bool(params.get("augmented"))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), best first, `k` columns padded with row -1 / score -inf. `exclude`: a
        boolean mask over rows (True = never return)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        total, k = self.ntotal, min(k, self.ntotal)
        excluded = 0 if exclude is None else int(exclude.sum())
        fetch = min(total, k + excluded if self.exact else max(int(np.ceil(k * self.overfetch)), k + 16) + excluded)
        scores, rows = self._top(queries, k, fetch, exclude)
        short = (rows < 0).any(axis=1)
        while short.any() and fetch < total // 8:  # excluded rows took the place of k results: wider
            fetch = min(total, fetch * 4)
            scores[short], rows[short] = self._top(queries[short], k, fetch, exclude)
            short = (rows < 0).any(axis=1)
        if short.any() and not self.exact:  # most of the catalog excluded: score the rest exactly
            scores[short], rows[short] = self._exact_top(queries[short], k, exclude)
        elif short.any() and fetch < total:
            scores[short], rows[short] = self._top(queries[short], k, total, exclude)
        return scores, rows

    def _exact_top(self, queries: np.ndarray, k: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        allowed = np.arange(self.ntotal) if exclude is None else np.flatnonzero(~exclude)
        scores = queries @ self.vectors[allowed].T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows, out = allowed[top], np.take_along_axis(scores, top, axis=1).astype(np.float32)
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            out = np.pad(out, ((0, 0), (0, pad)), constant_values=-np.inf)
        return out, rows

    def _top(self, queries: np.ndarray, k: int, fetch: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        if self.exact:
            scores, rows = self.index.search(queries, fetch)
        else:
            q = np.hstack([queries, np.zeros((len(queries), 1), np.float32)]) if self.augmented else queries
            _, rows = self.index.search(q, fetch)
            scores = np.einsum("qd,qfd->qf", queries, self.vectors[np.maximum(rows, 0)])
        bad = rows < 0
        if exclude is not None:
            bad |= exclude[np.maximum(rows, 0)]
        scores = np.where(bad, -np.inf, scores).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_rows = np.take_along_axis(rows, order, axis=1)
        out_scores = np.take_along_axis(scores, order, axis=1)
        out_rows[~np.isfinite(out_scores)] = -1
        if out_rows.shape[1] < k:
            pad = k - out_rows.shape[1]
            out_rows = np.pad(out_rows, ((0, 0), (0, pad)), constant_values=-1)
            out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return out_scores, out_rows


def write_item_index(folder: Path, index) -> None:
    import faiss

    faiss.write_index(index, str(Path(folder) / ITEM_INDEX_FILE))


def load_item_index(folder: str | Path, vectors: np.ndarray, meta: dict[str, Any] | None):
    """The exported recommender's item index (`item_index.faiss`, params and overfetch in its
    manifest meta `item_index`), read as it was built. An export from before item indexes (none in the folder)
    gets the exact index built here, as serving always did."""
    import faiss

    path = Path(folder) / ITEM_INDEX_FILE
    params = (meta or {}).get("item_index")
    if not path.exists() or not params:
        return ItemIndex(inner_product_index(vectors), vectors, {"type": "flat", "built_at_load": True})
    index = faiss.read_index(str(path))
    if index.ntotal != len(vectors):
        raise IncompleteDirError(
            f"{path}: {index.ntotal} vectors for {len(vectors)} items; re-export with `shopgraph train recommender`"
        )
    set_search_params(index, params["type"], params)
    return ItemIndex(index, vectors, params, params.get("overfetch", 2.0))
