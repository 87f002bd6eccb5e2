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


# ---------------------------------------------------------------- --max-products, brands from the whole catalog


class RecordingGenerator:
    """Stands in for PdpGenerator (no vLLM): echoes the title and records the brands it was given."""

    def __init__(self, model_dir, engine, model_version, max_new_tokens, ground, known_brands):
        self.brands = known_brands

    def __call__(self, batch):
        n = len(batch["facts"])
        return {
            "product_id": list(batch["product_id"]),
            "facts_hash": list(batch["facts_hash"]),
            "model_version": ["v"] * n,
            "title": [json.dumps(self.brands)] * n,  # the brand list, carried out through a column
            "highlights": [[] for _ in range(n)],
            "description": [""] * n,
            "json_valid": [True] * n,
            "json_complete": [True] * n,
            "unsupported_removed": [0] * n,
            "rejected": [""] * n,
            "raw": [""] * n,
            "generated_at": [""] * n,
        }


def test_max_products_limits_the_pages_not_the_brands(ray_local, tmp_path, monkeypatch):
    import train.batch_generate as stage
    from core.manifest import write_manifest

    products = products_table()
    layout = ArtifactLayout(str(tmp_path))
    write_shard_set(products, layout.products, rows_per_shard=100, row_group_rows=100, meta={"stage": "test"})
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a committed directory: the stand-in loads nothing from it
    write_manifest(model, {"model_version": "m1"})
    monkeypatch.setattr(stage, "PdpGenerator", RecordingGenerator)
    cfg = load_config(None, [f"artifacts.root={tmp_path}", "train.generator.content.num_cpus=0.5",
                             "train.generator.content.reasons_max_products=0"])  # fmt: skip
    stats = stage.generate_content(cfg, model_dir=model, max_products=2)

    table = pq.read_table(tmp_path / "content" / "pdp" / "content.parquet")
    first_two = sorted(products.column("product_id").to_pylist())[:2]
    assert stats["products"] == 2 and table.column("product_id").to_pylist() == first_two
    every_brand = sorted({b for b in products.column("brand").to_pylist() if b})
    in_limit = {r["brand"] for r in products.to_pylist() if r["product_id"] in first_two}
    assert set(every_brand) - in_limit  # some brands only appear beyond the limit
    assert json.loads(table.column("title")[0].as_py()) == every_brand == stage.catalog_brands(products)


def test_max_products_option_is_validated(capsys):
    from train.batch_generate import main

    with pytest.raises(SystemExit) as err:
        main(["--help"])
    assert err.value.code == 0 and "--max-products N" in capsys.readouterr().out
    for bad in ("0", "-3", "two", "1.5"):
        with pytest.raises(SystemExit) as err:
            main(["--max-products", bad])
        assert err.value.code == 2
        assert f"argument --max-products: must be a positive integer, got '{bad}'" in capsys.readouterr().err


def test_shopgraph_cli_shows_and_checks_max_products():
    from typer.testing import CliRunner

    from cluster.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "generate-content", "--help"])
    assert result.exit_code == 0 and "--max-products" in result.output
    result = runner.invoke(app, ["data", "generate-content", "--max-products", "0"])
    assert result.exit_code == 2 and "--max-products" in result.output
