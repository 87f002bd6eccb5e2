"""Embedding job on a Ray Data actor pool with the real MiniLM encoder, then the index stage on its output."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from core.config import load_config
from core.config.data import SplitsConfig
from core.layout import ArtifactLayout
from core.manifest import verify_dir
from core.schemas import EVENTS, PRODUCTS
from data.embed import embed_products, product_text
from data.splits import build_splits, write_splits
from ml.encoder import EMBEDDING_DIM, ENCODER_NAME, TextEncoder
from ml.index import load_embeddings, load_index, vectors_of

pytestmark = pytest.mark.slow

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOUNS = ["wooden train", "puzzle", "denim jacket", "kettle", "phone case", "牛仔夹克", "茶壶"]


def products(n: int = 45) -> pa.Table:
    rows = [
        {
            "product_id": f"p{i:03d}",
            "title": f"{NOUNS[i % len(NOUNS)]} {i}",
            "category": "Shop > Things",
            "brand": ["Brio", "李维斯"][i % 2],
            "price": 10.0 + i,
            "attributes": [("color", "red"), ("材质", "牛仔布")] if i % 2 else None,
            "description": None,
            "in_stock": True,
            "updated_at": T0,
        }  # fmt: skip
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=PRODUCTS)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def config(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return load_config(
        overrides=[
            f"models.dir={models_dir}",
            f"artifacts.root={root}",
            "data.embedding.batch_size=8",
            "data.embedding.concurrency=1",  # one model load: two cores are shared with the driver
            "data.index.type=hnsw",
            "data.index.recall_sample=20",
        ]
    )


def test_product_text_is_deterministic():
    row = products().to_pylist()[1]
    assert product_text(row) == "puzzle 1 | 李维斯 | Shop > Things | color: red; 材质: 牛仔布"
    assert product_text({**row, "attributes": {"材质": "牛仔布", "color": "red"}}) == product_text(row)


def test_job_writes_one_normalized_vector_per_product_matching_the_plain_loop(ray_local, config, models_dir):
    table = products()
    layout = ArtifactLayout(config.artifacts.root)
    from core.shards import write_shard_set

    write_shard_set(table, layout.products, rows_per_shard=1000, row_group_rows=1000, meta={"stage": "test"})
    # id maps from a few events, so item_idx is filled for the products that have them
    events = pa.table({"user_id": ["u1", "u1", "u2"], "product_id": ["p001", "p002", "p001"], "event": ["view"] * 3,
                       "ts": [T0, T0 + dt.timedelta(seconds=1), T0], "value": [None] * 3, "text": [None] * 3}, schema=EVENTS)  # fmt: skip
    write_splits(layout, build_splits(SplitsConfig(k_core=0), events), SplitsConfig(k_core=0))

    from data.embed import run

    meta = run(config)
    assert meta["count"] == 45 and meta["dim"] == EMBEDDING_DIM and meta["with_item_idx"]
    verify_dir(layout.embeddings, full=True)
    got, _ = load_embeddings(layout)
    assert got["product_id"].to_pylist() == table["product_id"].to_pylist()
    assert got.schema.field("vector").type == pa.list_(pa.float32(), EMBEDDING_DIM)
    idx = dict(zip(got["product_id"].to_pylist(), got["item_idx"].to_pylist(), strict=True))
    assert idx["p001"] == 1 and idx["p002"] == 2 and idx["p000"] is None
    vectors = vectors_of(got)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    encoder = TextEncoder(models_dir / ENCODER_NAME, batch_size=8)
    texts = [product_text(r) for r in table.to_pylist()]
    plain = np.concatenate([encoder.encode(texts[i : i + 8]) for i in range(0, len(texts), 8)])
    np.testing.assert_allclose(vectors, plain, atol=1e-4)


def test_index_stage_on_real_embeddings(ray_local, config):
    from data.index import run

    meta = run(config)  # reads the embeddings committed by the previous test
    assert meta["type"] == "hnsw" and meta["count"] == 45 and meta["dim"] == EMBEDDING_DIM
    assert meta["recall_at_10"] >= 0.9 and meta["recall_queries"] == 20
    loaded = load_index(ArtifactLayout(config.artifacts.root).index)
    got, _ = load_embeddings(ArtifactLayout(config.artifacts.root))
    _, rows = loaded.search(vectors_of(got)[:3], 1)
    assert loaded.product_ids(rows) == [["p000"], ["p001"], ["p002"]]  # each product finds itself


def test_empty_catalog_and_missing_model_are_clear_errors(ray_local, config, tmp_path):
    with pytest.raises(ValueError, match="products table is empty"):
        embed_products(config.data.embedding, PRODUCTS.empty_table(), tmp_path)
    with pytest.raises(FileNotFoundError, match="shopgraph models prepare"):
        embed_products(config.data.embedding, products(3), tmp_path / "no-model")
