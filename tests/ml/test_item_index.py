"""Main retrieval's index over the recommender's item vectors (ml.index.ItemIndex): exact or
IVF / HNSW over MIPS-augmented vectors, re-scored exactly, excluded rows over-fetched past.

    pytest -q tests/ml/test_item_index.py
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core.config.train import ItemIndexConfig
from core.manifest import IncompleteDirError
from ml.index import ItemIndex, build_item_index, inner_product_index, load_item_index, mips_augment, write_item_index


def _items(n: int, dim: int = 17, seed: int = 0) -> np.ndarray:
    """Clustered vectors with unequal norms and a bias-like last column, as SASRec exports them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 100, 4), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    x *= rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)
    x[:, -1] = np.log1p(rng.poisson(3, n)).astype(np.float32)  # the item bias, against a query's 1
    return x


def _queries(n: int, dim: int = 17, seed: int = 1) -> np.ndarray:
    q = _items(n, dim, seed)
    q[:, -1] = 1.0
    return q


def _exact(vectors, q, k):
    return inner_product_index(vectors).search(np.ascontiguousarray(q), k)


def test_the_augmented_l2_order_is_the_inner_product_order():
    x, q = _items(500), _queries(20)
    aug, _ = mips_augment(x)
    qa = np.hstack([q, np.zeros((len(q), 1), np.float32)])
    l2 = ((qa[:, None, :] - aug[None]) ** 2).sum(-1)
    assert (np.argsort(l2, axis=1)[:, :10] == np.argsort(-(q @ x.T), axis=1)[:, :10]).mean() > 0.99


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_an_ann_index_finds_the_exact_top_10_with_the_models_scores(kind):
    x, q = _items(20_000), _queries(200)
    index, params = build_item_index(x, ItemIndexConfig(type=kind, nprobe=16, ef_search=64), seed=0)
    assert params["type"] == kind and index.ntotal == len(x)
    scores, rows = ItemIndex(index, x, params).search(q, 10)
    truth_scores, truth = _exact(x, q, 10)
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)])
    assert recall >= 0.95, recall
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, x[rows]), rtol=1e-5)  # exact, not L2 distances
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_a_small_catalog_is_always_exact():
    x = _items(300)
    _, params = build_item_index(x, ItemIndexConfig(type="hnsw"))
    assert params == {"type": "flat"}


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_excluded_rows_never_come_back_and_k_results_remain(kind):
    x, q = _items(5_000), _queries(30)
    index, params = build_item_index(x, ItemIndexConfig(type=kind, nprobe=8, ef_search=32))
    item_index = ItemIndex(index, x, params)
    _, top = _exact(x, q, 50)
    exclude = np.zeros(len(x), bool)
    exclude[np.unique(top)] = True  # every query's exact top 50 is deleted
    scores, rows = item_index.search(q, 20, exclude)
    assert (rows >= 0).all() and not exclude[rows].any() and np.isfinite(scores).all()
    assert all(len(set(r)) == 20 for r in rows)


def test_fewer_allowed_items_than_k_pads_with_minus_one():
    x = _items(1_200)
    index, params = build_item_index(x, ItemIndexConfig(type="hnsw", ef_search=16))
    exclude = np.ones(len(x), bool)
    exclude[[5, 9, 11]] = False
    scores, rows = ItemIndex(index, x, params).search(_queries(2), 10, exclude)
    assert (np.sort(rows[:, :3], axis=1) == [5, 9, 11]).all() and (rows[:, 3:] == -1).all()
    assert np.isinf(scores[:, 3:]).all()


def test_the_exported_index_is_loaded_as_built_and_checked(tmp_path):
    x = _items(3_000)
    index, params = build_item_index(x, ItemIndexConfig(type="ivf", nprobe=4))
    write_item_index(tmp_path, index)
    loaded = load_item_index(tmp_path, x, {"item_index": params | {"overfetch": 3.0}})
    assert loaded.params["type"] == "ivf" and loaded.overfetch == 3.0
    assert loaded.index.nprobe == 4  # search params restored from the manifest
    old = load_item_index(tmp_path / "none", x, {})  # an export from before item indexes
    assert old.exact and old.params["built_at_load"]
    with pytest.raises(IncompleteDirError, match="re-export"):
        load_item_index(tmp_path, x[:100], {"item_index": params})


@pytest.mark.parametrize(
    "bad", [{"type": "annoy"}, {"nlist": 4, "nprobe": 8}, {"overfetch": 0.5}, {"ef_search": 2}, {"hnsw_m": 1}]
)
def test_bad_item_index_config_is_refused_clearly(bad):
    with pytest.raises(ValidationError) as e:
        ItemIndexConfig(**bad)
    assert any(k in str(e.value) for k in bad)


def test_bad_vectors_are_refused():
    with pytest.raises(ValueError, match="finite"):
        build_item_index(np.full((10, 4), np.nan, np.float32), ItemIndexConfig())
