"""The whole refresh (train.refresh): pages are regenerated only where a product's facts changed,
merged into the committed content; the watermark "refresh" moves only after that. The page
generator is the stand-in of test_batch_generate (no vLLM here); the real PdpGenerator runs in
test_batch_generate and in `shopgraph data refresh`."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from core.config import load_config
from core.facts import facts_hash
from core.layout import ArtifactLayout
from core.manifest import read_manifest, verify_dir, write_manifest
from tests.data.test_refresh import build_offline, catalog, catalog_facts, shop_config
from tests.train.test_batch_generate import RecordingGenerator


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def committed_content(root, products: pa.Table) -> None:
    """Pages for every product, as `shopgraph data generate-content` leaves them, plus a reasons file."""
    layout = ArtifactLayout(str(root))
    out = root / "content" / "pdp"
    (out / "reasons").mkdir(parents=True)
    rows = [{"product_id": p["product_id"], "facts_hash": facts_hash(p, "USD"), "model_version": "m1",
             "title": p["title"], "highlights": [], "description": "old", "json_valid": True, "json_complete": True,
             "unsupported_removed": 0, "rejected": "", "raw": "", "generated_at": ""} for p in products.to_pylist()]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), out / "content.parquet")
    pq.write_table(pa.table({"product_id": ["p00"], "text": ["kept"]}), out / "reasons" / "reasons.parquet")
    write_manifest(out, {"stage": "generate-content", "model_version": "m1"})
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    write_manifest(model, {"model_version": "m1"})
    assert layout.content == str(out)


def test_pages_are_regenerated_where_facts_changed_and_merged(ray_local, tmp_path, monkeypatch):
    import train.batch_generate as batch
    from train.refresh import PageContent

    monkeypatch.setattr(batch, "PdpGenerator", RecordingGenerator)
    committed_content(tmp_path, catalog())
    cfg = load_config(None, [f"artifacts.root={tmp_path}", "train.generator.content.num_cpus=0.5"])
    step = PageContent(cfg, model_dir=tmp_path / "model")
    same = catalog_facts("p00")
    priced = {**catalog_facts("p01"), "price": 99.0}
    stock_only = {**catalog_facts("p04"), "in_stock": False, "stock": 0}
    new = {"product_id": "n1", "title": "Ceramic Teapot", "brand": "Kiln", "price": 30.0, "attributes": {}}
    planned = step.plan([same, priced, stock_only, new], ["p02", "gone-before"])
    assert planned == ["p01", "n1", "p02"]
    result = step.apply()
    assert result["regenerated"] == 2 and result["dropped"] == 1

    out = tmp_path / "content" / "pdp"
    verify_dir(out, full=True)
    table = pq.read_table(out / "content.parquet")
    rows = {r["product_id"]: r for r in table.to_pylist()}
    assert "p02" not in rows and set(rows) == {r["product_id"] for r in catalog().to_pylist()} - {"p02"} | {"n1"}
    assert rows["p00"]["description"] == "old" and rows["p04"]["description"] == "old"  # untouched
    assert rows["p01"]["facts_hash"] == facts_hash(priced, "USD") and rows["p01"]["description"] == ""  # regenerated
    assert rows["n1"]["facts_hash"] == facts_hash(new, "USD")
    assert (out / "reasons" / "reasons.parquet").is_file()  # carried over
    assert read_manifest(out)["meta"]["refresh"]["regenerated"] == 2


def test_without_committed_content_the_pages_are_skipped_and_said_so(tmp_path):
    from train.refresh import PageContent

    step = PageContent(load_config(None, [f"artifacts.root={tmp_path}"]))
    assert step.plan([catalog_facts("p00")], []) == []
    assert "shopgraph data generate-content" in step.apply()["skipped"]


def test_train_refresh_end_to_end_on_the_database(ray_local, tmp_path, monkeypatch):
    """SQLite here (the database paths run on both dialects in tests/data/test_refresh.py)."""
    import train.batch_generate as batch
    from core.store import Store, make_engine, upgrade
    from ml.encoder import prepare_encoder
    from train.refresh import main

    monkeypatch.setattr(batch, "PdpGenerator", RecordingGenerator)
    prepare_encoder(tmp_path / "models")
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    cfg = shop_config(tmp_path, tmp_path / "models", url)
    build_offline(cfg)
    committed_content(tmp_path, catalog())
    upgrade(url)
    store = Store(make_engine(url))
    store.patch_product("p03", {"price": 5.0}, catalog_facts("p03"))  # a fact of the page, not of the text
    argv = ["--set", f"artifacts.root={tmp_path}", "--set", f"models.dir={tmp_path / 'models'}",
            "--set", f"online.database_url={url}", "--set", "train.generator.content.num_cpus=0.5",
            "--model-dir", str(tmp_path / "model")]  # fmt: skip
    index_files = read_manifest(tmp_path / "index")["files"]
    assert main(argv) == 0
    assert read_manifest(tmp_path / "index")["files"] == index_files  # nothing to embed: index untouched
    rows = {r["product_id"]: r for r in pq.read_table(tmp_path / "content" / "pdp" / "content.parquet").to_pylist()}
    assert rows["p03"]["facts_hash"] == facts_hash({**catalog_facts("p03"), "price": 5.0}, "USD")
    mark = store.get_watermark("refresh")
    assert mark["products_updated_at"] == store.get_product("p03")["updated_at"]
    store.patch_product("p03", {"stock": 0}, None)  # stock is no fact: no page, no vector
    assert main(argv) == 0
    assert pq.read_table(tmp_path / "content" / "pdp" / "content.parquet").num_rows == len(rows)


def test_cli_refresh_is_mounted_and_refuses_a_bad_key():
    from cluster.cli import app

    runner = CliRunner()
    assert "Products changed in the online database" in runner.invoke(app, ["data", "refresh", "--help"]).output
    result = runner.invoke(app, ["data", "refresh", "--set", "data.refresh.overlap_ms=lots"])
    assert result.exit_code == 2 and "data.refresh.overlap_ms" in result.output
