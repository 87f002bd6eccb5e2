"""FAISS index build: flat/ivf/hnsw round-trip, manifest and recall, malformed input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.config import ConfigError, load_config
from core.config.data import IndexConfig
from core.manifest import IncompleteDirError, verify_dir
from data.embed import embeddings_schema
from data.index import build_from_embeddings, build_index
from ml.index import IDS_FILE, INDEX_FILE, check_vectors, load_index

DIM = 32


def clustered(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, dim))
    x = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def embeddings(vectors: np.ndarray) -> pa.Table:
    n, dim = vectors.shape
    return pa.table(
        {
            "product_id": [f"p{i:05d}" for i in range(n)],
            "item_idx": pa.array([i + 1 if i % 3 else None for i in range(n)], pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            "text_sha256": pa.nulls(n, pa.string()),
        },
        schema=embeddings_schema(dim),
    )


CONFIGS = {
    "flat": IndexConfig(type="flat", recall_sample=200),
    "ivf": IndexConfig(type="ivf", nlist=16, nprobe=8, recall_sample=200),
    "hnsw": IndexConfig(type="hnsw", hnsw_m=16, ef_construction=64, ef_search=64, recall_sample=200),
}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_round_trip_answers_identically(kind, tmp_path):
    vectors = clustered(2000)
    cfg = CONFIGS[kind]
    loaded = build_from_embeddings(cfg, embeddings(vectors), tmp_path / "index", dim=DIM)
    manifest = verify_dir(tmp_path / "index", full=True)
    assert set(manifest["files"]) == {INDEX_FILE, IDS_FILE}
    meta = manifest["meta"]
    assert meta["type"] == kind and meta["dim"] == DIM and meta["count"] == 2000 and meta["metric"] == "inner_product"
    assert meta["recall_queries"] == 200
    assert meta["recall_at_10"] == 1.0 if kind == "flat" else meta["recall_at_10"] >= 0.8
    if kind == "ivf":
        assert meta["params"] == {"nlist": 16, "nprobe": 8}
    if kind == "hnsw":
        assert meta["params"] == {"hnsw_m": 16, "ef_construction": 64, "ef_search": 64}

    # the in-memory index built the same way and the loaded one answer identically
    in_memory, _ = build_index(cfg, vectors)
    queries = clustered(50, seed=1)
    again = load_index(tmp_path / "index")
    s1, r1 = loaded.search(queries, 10)
    s2, r2 = again.search(queries, 10)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    if kind != "hnsw":  # HNSW's multithreaded insertion order can differ between two builds
        s3, r3 = in_memory.search(queries, 10)
        np.testing.assert_array_equal(r1, r3)
    # rows map back to product ids
    assert again.product_ids(r1[:1])[0][0] == f"p{r1[0][0]:05d}"
    assert again.ids["item_idx"].to_pylist()[:3] == [None, 2, 3]


def test_loaded_index_is_the_same_object_state_as_before_save(tmp_path):
    # Same index object saved and loaded: identical answers for every type (nprobe/efSearch re-applied).
    vectors = clustered(1500)
    for kind, cfg in CONFIGS.items():
        index, _ = build_index(cfg, vectors)
        built = build_from_embeddings(cfg, embeddings(vectors), tmp_path / kind)
        queries = clustered(30, seed=2)
        np.testing.assert_array_equal(
            built.index.search(queries, 10)[1], load_index(tmp_path / kind).search(queries, 10)[1]
        )


def test_malformed_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="expected 32"):
        build_index(CONFIGS["flat"], clustered(10, dim=16), dim=DIM)
    with pytest.raises(ValueError, match="non-empty"):
        check_vectors(np.zeros((0, DIM), np.float32))
    with pytest.raises(ValueError, match="no embeddings to index"):
        build_from_embeddings(CONFIGS["flat"], embeddings(clustered(0)), tmp_path / "x")
    with pytest.raises(ValueError, match="NaN"):
        check_vectors(np.full((2, DIM), np.nan, np.float32))
    loaded = build_from_embeddings(CONFIGS["flat"], embeddings(clustered(100)), tmp_path / "ok")
    with pytest.raises(ValueError, match="queries have dim 8, expected 32"):
        loaded.search(np.ones((1, 8), np.float32))
    with pytest.raises(ConfigError, match="data.index.type"):
        load_config(overrides=["data.index.type=annoy"])
    with pytest.raises(ConfigError, match="set data.index.nprobe <= data.index.nlist"):
        load_config(overrides=["data.index.nlist=4", "data.index.nprobe=8"])
    with pytest.raises(IncompleteDirError, match="shopgraph data index"):
        load_index(tmp_path / "missing")
    (tmp_path / "ok" / INDEX_FILE).write_bytes(b"truncated")
    with pytest.raises(IncompleteDirError, match="bytes, manifest says"):
        load_index(tmp_path / "ok")


def test_unnormalized_vectors_are_normalized_for_inner_product():
    v = clustered(200) * 7.0
    index, _ = build_index(CONFIGS["flat"], v)
    scores, rows = index.search(check_vectors(v[:5]), 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]
