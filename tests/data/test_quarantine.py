"""`data.prepare` end to end on Ray: exact row accounting, readable quarantine reasons, fail-fast errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from core.config import ConfigError, ShopgraphConfig, load_config
from core.layout import ArtifactLayout
from core.privacy import Pseudonymizer
from core.shards import read_events, read_products, read_quarantine
from data.prepare import prepare
from data.sources import SourceError
from tests.conftest import SHARED
from tests.data.test_readers import (
    CATALOG_MAPPING,
    EVENTS_MAPPING,
    FIXTURES,
    FLIPKART,
    FLIPKART_MAPPING,
    S3REC,
    ZH_MAPPING,
)


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def config(root: Path, sources: list[dict], **prepare_opts) -> ShopgraphConfig:
    return ShopgraphConfig.model_validate(
        {"artifacts": {"root": str(root)}, "data": {"sources": sources, "prepare": prepare_opts}}
    )


CATALOG = {
    "name": "catalog",
    "format": "csv",
    "path": str(FIXTURES / "catalog.csv"),
    "table": "products",
    "mapping": CATALOG_MAPPING,
}
EVENTS = {
    "name": "clicks",
    "format": "jsonl",
    "path": str(FIXTURES / "events.jsonl"),
    "table": "events",
    "mapping": EVENTS_MAPPING,
}


def test_accounting_is_exact_and_every_rejected_row_has_a_reason(tmp_path: Path):
    lines: list[str] = []
    result = prepare(config(tmp_path, [CATALOG, EVENTS]), log=lines.append)
    counts = {c.name: (c.read, c.kept, c.quarantined) for c in result.counts}
    # catalog: A1, A2, A4 kept; abc price, empty id, duplicate A1, 'maybe', bad UTF-8, truncated line
    # events: 11 records; kept u1/A1, u1/A2, u2/A4, 5/A2; A3 was quarantined so its event is unknown
    assert counts == {"catalog": (9, 3, 6), "clicks": (11, 4, 7)}
    layout = ArtifactLayout(str(tmp_path))
    assert read_products(layout)["product_id"].to_pylist() == ["A1", "A2", "A4"]
    assert read_products(layout).to_pylist()[0]["title"] == "Wooden train set"  # the first A1 wins
    assert read_events(layout).num_rows == 4
    q = {(r["table"], Path(r["source"]).name, r["line"]): r["reason"] for r in read_quarantine(layout).to_pylist()}
    assert len(q) == 13
    assert (
        q[("products", "catalog.csv", 6)]
        == f"duplicate product_id 'A1' (first seen at {CATALOG['path']}:2; the first is kept)"
    )
    assert q[("events", "events.jsonl", 5)] == "unknown product_id 'ZZZ' (not in the products table)"
    assert q[("events", "events.jsonl", 10)] == "unknown product_id 'A3' (not in the products table)"
    assert q[("products", "catalog.csv", 9)].startswith("invalid utf-8")
    table = "\n".join(lines)
    assert (
        "catalog" in table
        and "duplicate product_id" in table
        and "wrote 3 products, 4 events, 13 quarantined rows" in table
    )


def test_missing_file_stops_before_any_work(tmp_path: Path):
    missing = {**EVENTS, "path": str(tmp_path / "nope.jsonl")}
    with pytest.raises(SourceError) as err:
        prepare(config(tmp_path / "out", [CATALOG, missing]))
    assert "nope.jsonl does not exist" in str(err.value) and "data.sources[1].path" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_column_names_file_column_and_key(tmp_path: Path):
    wrong = {**CATALOG, "mapping": {**CATALOG_MAPPING, "brand": "manufacturer"}}
    with pytest.raises(SourceError) as err:
        prepare(config(tmp_path / "out", [wrong, EVENTS]))
    msg = str(err.value)
    assert "catalog.csv has no column 'manufacturer' (needed for brand)" in msg
    assert "set data.sources[0].mapping.brand" in msg and "sku, name, cat, maker" in msg
    assert not (tmp_path / "out").exists()


def test_missing_json_key_names_the_key(tmp_path: Path):
    wrong = {**EVENTS, "mapping": {**EVENTS_MAPPING, "user_id": "visitor"}}
    with pytest.raises(
        SourceError, match=r"has no key 'visitor' \(needed for user_id\).*data.sources\[0\].mapping.user_id"
    ):
        prepare(config(tmp_path, [wrong]))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({**EVENTS, "format": "xml"}, "data.sources.0.format"),
        ({**EVENTS, "format": "retailrocket", "table": "products"}, "only produces events; set table: events"),
        ({**EVENTS, "mapping": {"userid": "user"}}, "mapping has unknown contract column(s) ['userid']"),
        ({**EVENTS, "encoding": "utf-16"}, "not ASCII-compatible"),
        ({**EVENTS, "event_map": {"like": "love"}}, "not event types"),
    ],
)
def test_bad_source_config_is_rejected_with_the_key(source, expected):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"data.sources=[{source}]".replace("'", '"')])
    assert expected in str(err.value)


def test_chinese_catalog_round_trips(tmp_path: Path):
    sources = [
        {
            "name": "商品",
            "format": "attribute_catalog",
            "path": str(FIXTURES / "catalog_zh.tsv"),
            "table": "products",
            "mapping": ZH_MAPPING,
        },
        {
            "name": "行为",
            "format": "csv",
            "path": str(FIXTURES / "events_zh.csv"),
            "table": "events",
            "mapping": {"user_id": "user", "product_id": "item", "event": "action", "ts": "time"},
        },
    ]
    result = prepare(config(tmp_path, sources), log=lambda _: None)
    assert {c.name: (c.read, c.kept, c.quarantined) for c in result.counts} == {"商品": (5, 3, 2), "行为": (3, 3, 0)}
    layout = ArtifactLayout(str(tmp_path))
    products = {r["product_id"]: r for r in read_products(layout).to_pylist()}
    assert products["ZH002"]["title"] == "小米 65W 快速充电器" and products["ZH002"]["brand"] == "小米"
    assert dict(products["ZH001"]["attributes"])["颜色"] == "雅川青"
    pz = Pseudonymizer.from_config(config(tmp_path, sources))  # user ids are stored as pseudonyms
    assert read_events(layout)["user_id"].to_pylist() == sorted([pz.user_key("用户乙")] + [pz.user_key("用户甲")] * 2)
    raws = {r["line"]: r["raw"] for r in read_quarantine(layout).to_pylist()}
    assert "三十九元" in raws[4]


def test_stub_products_for_event_only_sources(tmp_path: Path):
    sources = [
        {"name": "seq", "format": "user_item_sequences", "path": str(FIXTURES / "sequences.txt"), "table": "events"}
    ]
    result = prepare(config(tmp_path, sources, unknown_products="stub"), log=lambda _: None)
    assert (result.counts[0].read, result.counts[0].kept, result.counts[0].quarantined) == (13, 12, 1)
    assert result.stubs == 9 and read_products(ArtifactLayout(str(tmp_path)))["title"].to_pylist()[:3] == [
        "1",
        "2",
        "3",
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    not (FLIPKART.is_file() and S3REC.is_file()),
    reason=f"real samples under {SHARED / 'data'} not present (set SHOPGRAPH_SHARED_DIR)",
)
def test_real_samples_exact_accounting(tmp_path: Path):
    sources = [
        {"name": "flipkart", "format": "csv", "path": str(FLIPKART), "table": "products", "mapping": FLIPKART_MAPPING},
        {"name": "toys", "format": "user_item_sequences", "path": str(S3REC), "table": "events"},
    ]
    result = prepare(config(tmp_path, sources, unknown_products="stub"), log=lambda _: None)
    counts = {c.name: (c.read, c.kept, c.quarantined) for c in result.counts}
    assert counts == {"flipkart": (20000, 19998, 2), "toys": (167597, 167597, 0)}
    assert set(result.counts[0].reasons) == {"duplicate product_id"}
    layout = ArtifactLayout(str(tmp_path))
    users = read_events(layout)["user_id"].unique().to_pylist()
    assert users == sorted(users) and len(users) == len({*users})  # sorted by (pseudonymous) user id
    assert read_products(layout).num_rows == 19998 + result.stubs


def test_input_order_across_files_of_one_source(tmp_path: Path):
    # Two files of one glob source share line numbers: input order is file by file (as planned),
    # so the first occurrence of a duplicate is the one in the earlier file, on every rerun.
    raw = tmp_path / "raw"
    raw.mkdir()
    header = "sku,name,cat,maker,cost,stock,attrs\n"
    (raw / "a.csv").write_text(
        header + "X1,Kettle A,Home,Acme,10,true,\nX2,Mug A,Home,Acme,5,true,\n", encoding="utf-8"
    )
    (raw / "b.csv").write_text(
        header + "X1,Kettle B,Home,Acme,11,true,\nX3,Cup B,Home,Acme,4,true,\n", encoding="utf-8"
    )
    source = {
        "name": "shop",
        "format": "csv",
        "path": str(raw / "*.csv"),
        "table": "products",
        "mapping": CATALOG_MAPPING,
    }
    for run in ("one", "two"):
        result = prepare(config(tmp_path / run, [source], chunk_mb=1, rows_per_shard=1), log=lambda _: None)
        assert (result.counts[0].read, result.counts[0].kept, result.counts[0].quarantined) == (4, 3, 1)
        layout = ArtifactLayout(str(tmp_path / run))
        assert {r["product_id"]: r["title"] for r in read_products(layout).to_pylist()} == {
            "X1": "Kettle A",
            "X2": "Mug A",
            "X3": "Cup B",
        }
        (q,) = read_quarantine(layout).to_pylist()
        assert (Path(q["source"]).name, q["line"]) == ("b.csv", 2)
        assert q["reason"] == f"duplicate product_id 'X1' (first seen at {raw / 'a.csv'}:2; the first is kept)"


def test_catalog_only_shop_prepares_and_splits(tmp_path: Path, capsys):
    """Products and no events: prepare and split succeed, the training stages that need events say so."""
    import json

    from core.facts import facts_of
    from core.manifest import read_manifest
    from core.schemas import LOO_SPLIT
    from data.splits import main as split_main

    raw = tmp_path / "catalog.jsonl"
    raw.write_text(
        '{"title": "牛仔外套", "attrs": "类型#上衣*风格#复古*风格#文艺", "color": "蓝色"}\n'
        '{"title": "Mug", "attrs": {"material": "ceramic"}}\n'
        '{"title": ""}\n',
        encoding="utf-8",
    )
    root = tmp_path / "art"
    source = {"name": "shop", "format": "jsonl", "path": str(raw), "table": "products", "id_from": "line",
              "mapping": {"attributes": "attrs"}, "attribute_columns": {"color": "颜色"}}  # fmt: skip
    result = prepare(config(root, [source]), log=lambda _: None)
    assert (result.products, result.events, result.quarantined) == (2, 0, 1)  # the empty title is quarantined
    layout = ArtifactLayout(str(root))
    products = {r["product_id"]: r for r in read_products(layout).to_pylist()}
    assert facts_of(products["shop:L1"])["attributes"] == {"类型": "上衣", "颜色": "蓝色", "风格": ["复古", "文艺"]}

    capsys.readouterr()
    assert split_main(["--set", f"artifacts.root={root}"]) == 0
    out = capsys.readouterr()
    assert "catalog-only shop: 2 products and no events" in out.err
    assert json.loads(out.out)["catalog_only"] is True
    manifest = read_manifest(Path(layout.splits))
    assert manifest["meta"]["catalog_only"] is True
    import pyarrow.parquet as pq

    loo = pq.read_table(Path(layout.splits) / "loo.parquet")
    assert loo.num_rows == 0 and loo.schema == LOO_SPLIT


def test_training_stages_refuse_a_catalog_only_shop(tmp_path: Path, capsys):
    from data.splits import empty_splits, write_splits
    from train.ranker import main as ranker_main
    from train.recommender import main as recommender_main

    cfg = config(tmp_path, [])
    write_splits(ArtifactLayout(str(tmp_path)), empty_splits(), cfg.data.splits)
    for name, main in (("recommender", recommender_main), ("ranker", ranker_main)):
        capsys.readouterr()
        assert main(["--set", f"artifacts.root={tmp_path}"]) == 1
        err = capsys.readouterr().err
        assert f"`shopgraph train {name}` needs user events, and this shop is catalog-only" in err
        assert "Traceback" not in err


def test_split_of_an_empty_shop_is_an_error(tmp_path: Path, capsys):
    from data.splits import main as split_main

    raw = tmp_path / "catalog.csv"
    raw.write_text("product_id,title\n1,\n")  # the only product is quarantined
    prepare(config(tmp_path, [{"name": "c", "format": "csv", "path": str(raw), "table": "products"}]), log=print)
    assert split_main(["--set", f"artifacts.root={tmp_path}"]) == 1
    assert "the products and events tables are both empty" in capsys.readouterr().err
