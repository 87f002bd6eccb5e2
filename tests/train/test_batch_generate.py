"""Batch PDP content with Ray Data + vLLM (one engine actor, fractional CPU): valid JSON per product,
keyed by facts_hash + model_version, and an injected catalog entry changes neither the format
nor, after the grounding filter, the claims in the copy."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from core.facts import facts_hash
from core.layout import ArtifactLayout
from core.manifest import verify_dir
from core.shards import write_shard_set
from tests.train.generator_fixtures import products_table


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_generate_content_for_a_catalog_with_an_injected_product(ray_local, models_dir, tmp_path):
    from train.batch_generate import generate_content

    products = products_table().filter(pc.is_in(pc.field("product_id"), value_set=pa.array(["p01", "p09", "p13"])))
    layout = ArtifactLayout(str(tmp_path))
    write_shard_set(products, layout.products, rows_per_shard=100, row_group_rows=100, meta={"stage": "test"})
    cfg = load_config(None, [f"models.dir={models_dir}", f"artifacts.root={tmp_path}", "models.engine.max_model_len=1024",
                             "train.generator.content.num_cpus=0.5", "train.generator.content.batch_size=8",
                             "train.generator.content.max_new_tokens=128"])  # fmt: skip
    base = models_dir / "smollm2-135m-instruct"  # any committed model dir works; the base keeps the test fast
    stats = generate_content(cfg, model_dir=base)

    out = tmp_path / "content" / "pdp"
    manifest = verify_dir(out)
    table = pq.read_table(out / "content.parquet")
    assert table.column("product_id").to_pylist() == ["p01", "p09", "p13"]
    expected_version = manifest["meta"]["model_version"]
    assert stats["model_version"] == expected_version and set(table.column("model_version").to_pylist()) == {
        expected_version
    }
    rows = {r["product_id"]: r for r in table.to_pylist()}
    by_id = {p["product_id"]: p for p in products.to_pylist()}
    for pid, row in rows.items():
        assert row["facts_hash"] == facts_hash(by_id[pid], "USD")  # the same key the corpus and serving use
        assert row["json_valid"], row["raw"]  # structured outputs: the injected product too
        if row["json_complete"]:  # the base model may ramble into max_new_tokens; then it was closed
            assert set(json.loads(row["raw"])) == {"title", "highlights", "description"}
    copy = " ".join([rows["p13"]["title"], *rows["p13"]["highlights"], rows["p13"]["description"]]).lower()
    for claim in ("99 years", "gold", "warranty"):
        assert claim not in copy, (claim, rows["p13"])
    # precomputed reasons: one per (product, evidence) pair; only what passes the serving gate is served
    reasons = stats["reasons"]
    assert reasons["pairs"] == 6  # no events: brand and category of each product
    assert reasons["pairs"] == reasons["accepted"] + sum(v for k, v in reasons.items() if k.startswith("rejected_"))
    served = pq.read_table(out / "reasons" / "reasons.parquet")
    assert served.column_names == ["product_id", "key", "model_version", "facts_hash", "text"]
    assert served.num_rows == reasons["accepted"]
    for row in served.to_pylist():
        assert row["facts_hash"] == facts_hash(by_id[row["product_id"]], "USD") and row["text"]
    audit = pq.read_table(out / "audit" / "reasons_rejected.parquet")
    assert audit.num_rows == reasons["pairs"] - reasons["accepted"] and all(audit.column("rejected").to_pylist())
