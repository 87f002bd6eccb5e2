"""Every reader on its fixture (tests/data/fixtures/), the real samples in ../shared/data, value parsing.

These call the per-chunk parser directly (what each Ray task runs), so they need no Ray.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from core.config.ingest import SourceConfig
from core.values import RowError, as_category, as_price, as_timestamp_ms
from data.readers import SYNTH_TS_BASE_MS, parse_chunk
from data.sources import plan_source
from tests.conftest import SHARED

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CATALOG_MAPPING = {
    "product_id": "sku",
    "title": "name",
    "category": "cat",
    "brand": "maker",
    "price": "cost",
    "in_stock": "stock",
    "attributes": "attrs",
}
EVENTS_MAPPING = {"user_id": "user", "product_id": "item", "event": "type", "ts": "time", "value": "stars"}
ZH_MAPPING = {
    "product_id": "商品编号",
    "title": "商品名称",
    "category": "类目",
    "attributes": "属性",
    "price": "价格",
    "brand": "attributes.品牌",
}


def parse(path: str | Path, chunk_bytes: int = 1 << 20, **kw) -> pa.Table:
    src = SourceConfig(name="t", path=str(path), **kw)
    return pa.concat_tables([parse_chunk(c, src) for c in plan_source(src, 0, chunk_bytes)])


def kept(table: pa.Table) -> list[dict]:
    return [r for r in table.to_pylist() if r["_reason"] is None]


def reasons(table: pa.Table) -> dict[int, str]:
    return {r["_line"]: r["_reason"] for r in table.to_pylist() if r["_reason"] is not None}


def ts(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_generic_csv_with_mapping():
    t = parse(FIXTURES / "catalog.csv", format="csv", table="products", mapping=CATALOG_MAPPING)
    assert t.num_rows == 9  # lines 2..10: every record is one row, kept or with a reason
    rows = {r["_line"]: r for r in kept(t)}
    assert rows[2]["attributes"] == [("pieces", "40"), ("wood", "beech")] and rows[2]["in_stock"] is True
    assert rows[3]["title"] == "Puzzle, 1000 pieces" and rows[3]["price"] == 14.5  # quoted comma, "$14.50"
    assert rows[7]["price"] == 1299.0 and rows[7]["in_stock"] is False  # "1,299.00", "no"
    assert rows[6]["product_id"] == "A1"  # the duplicate is found later, across sources
    assert reasons(t) == {
        4: "unparsable price 'abc'",
        5: "empty product_id",
        8: "unparsable in_stock 'maybe', expected true/false",
        9: "invalid utf-8 at byte 6 of the line (invalid continuation byte)",
        10: "expected 7 fields, got 5 (last line has no newline: truncated file?)",
    }
    bad = {r["_line"]: r["_raw"] for r in t.to_pylist() if r["_reason"]}
    assert bad[9] == "A6,Caf\ufffd mug,Kitchen,Mugs,4,true,"  # raw kept, undecodable byte shown
    assert bad[4] == "A3,Teddy bear,Toys > Plush,Cuddle,abc,true,"


def test_generic_jsonl_events():
    t = parse(FIXTURES / "events.jsonl", format="jsonl", table="events", mapping=EVENTS_MAPPING)
    assert t.num_rows == 11  # 12 lines, one blank
    rows = {r["_line"]: r for r in kept(t)}
    assert rows[1]["ts"] == ts(2024, 1, 1, 10) == rows[2]["ts"] == rows[3]["ts"]  # ISO, seconds, ms
    assert rows[3]["value"] == 4.0 and rows[3]["event"] == "rating"
    assert rows[8]["user_id"] == "5" and rows[8]["event"] == "cart"  # integer id, "CART"
    assert reasons(t) == {
        6: "unknown event type 'wishlist'; map it with the source's event_map to one of view, click, cart, purchase, rating",
        7: "unparsable ts 'yesterday'",
        9: "user_id has type list, expected a string or integer",
        11: "expected a JSON object, got list",
        12: "malformed JSON: Unterminated string starting at at column 46",
    }


def test_amazon_reviews_gzip():
    t = parse(FIXTURES / "amazon_reviews_2014.json.gz", format="amazon_reviews", table="events")
    first = kept(t)[0]
    assert (first["user_id"], first["product_id"], first["event"], first["value"], first["ts"], first["text"]) == (
        "R1",
        "B001",
        "rating",
        5.0,
        ts(2014, 1, 1),
        "Great set.",
    )
    assert reasons(t) == {
        3: "unparsable value 'five'",
        4: "empty user_id",
        5: "malformed JSON: Expecting ',' delimiter at column 82",
    }


def test_amazon_metadata_2014_python_literals_and_2018_json():
    t = parse(FIXTURES / "amazon_metadata_2014.json", format="amazon_metadata", table="products")
    rows = {r["product_id"]: r for r in kept(t)}
    assert rows["B001"]["category"] == "Toys & Games > Trains & Accessories > Train Sets"
    assert (
        rows["B001"]["description"] == "A 40-piece beech set. Kids' favourite." and rows["B001"]["brand"] == "Beechwood"
    )
    assert rows["B004"]["price"] == 9.99  # strict JSON lines mixed in
    assert reasons(t) == {
        3: "missing title",
        5: "malformed JSON: Expecting property name enclosed in double quotes at column 2",
    }

    t = parse(FIXTURES / "amazon_metadata_2018.jsonl", format="amazon_metadata", table="products")
    rows = {r["product_id"]: r for r in kept(t)}
    assert rows["C001"]["price"] == 12.99 and rows["C001"]["description"] == "Eight rings. Ages 1+."
    assert rows["C001"]["category"] == "Toys & Games > Baby & Toddler Toys"
    assert rows["C002"]["price"] is None and rows["C002"]["category"] is None  # "" and [] are "unknown"
    assert reasons(t) == {3: "unparsable price '$5.00 - $9.00'"}


def test_parquet_with_mapping():
    t = parse(
        FIXTURES / "lamps.parquet",
        format="parquet",
        table="products",
        mapping={"product_id": "id", "title": "name", "price": "usd", "updated_at": "updated"},
    )
    rows = kept(t)
    assert [r["product_id"] for r in rows] == ["101", "102"]
    assert rows[0]["updated_at"] == datetime.fromtimestamp(1_700_000_000, UTC)
    assert reasons(t) == {3: "missing title", 4: "price -1.0 is negative or not finite"}


def test_user_item_pairs_synthesize_time_in_file_order():
    t = parse(FIXTURES / "pairs.txt", format="user_item_pairs", table="events")
    rows = kept(t)
    assert [(r["user_id"], r["product_id"]) for r in rows] == [("u1", "i1"), ("u2", "i3"), ("u1", "i2"), ("u2", "i1")]
    stamps = [r["ts"] for r in rows]
    assert stamps == sorted(stamps) and stamps[0] == datetime.fromtimestamp((SYNTH_TS_BASE_MS + 1000) / 1000, UTC)
    assert {r["event"] for r in rows} == {"view"}
    assert reasons(t) == {4: "expected 'user item', got 1 fields"}


def test_user_item_sequences_one_user_per_line():
    t = parse(FIXTURES / "sequences.txt", format="user_item_sequences", table="events", default_event="purchase")
    rows = kept(t)
    assert [r["product_id"] for r in rows if r["user_id"] == "4"] == ["7", "8", "9", "7"]
    assert [r["_sub"] for r in rows if r["user_id"] == "1"] == [0, 1, 2, 3, 4]
    user1 = [r["ts"] for r in rows if r["user_id"] == "1"]
    assert user1 == sorted(user1) and len(set(user1)) == 5
    assert {r["event"] for r in rows} == {"purchase"}
    assert t.num_rows == 5 + 3 + 1 + 4 and reasons(t) == {3: "expected 'user item item ...', got a user with no items"}


def test_retailrocket_events():
    t = parse(FIXTURES / "retailrocket_events.csv", format="retailrocket", table="events")
    rows = kept(t)
    assert [r["event"] for r in rows] == ["view", "view", "cart", "purchase"]
    assert rows[0]["ts"] == datetime.fromtimestamp(1433221332.117, UTC) and rows[0]["user_id"] == "257597"
    assert reasons(t) == {
        6: "unknown event type 'share'; map it with the source's event_map to one of view, click, cart, purchase, rating",
        7: "empty user_id",
        8: "unparsable ts '14332x219' (expected ms since the epoch; see timestamp_unit)",
    }


def test_retailrocket_event_map_extends_the_defaults():
    t = parse(FIXTURES / "retailrocket_events.csv", format="retailrocket", table="events", event_map={"share": "click"})
    assert [r["event"] for r in kept(t)] == ["view", "view", "cart", "purchase", "click"]


def test_attribute_catalog_chinese():
    t = parse(FIXTURES / "catalog_zh.tsv", format="attribute_catalog", table="products", mapping=ZH_MAPPING)
    rows = {r["product_id"]: r for r in kept(t)}
    assert rows["ZH001"]["title"] == "华为 Mate 60 Pro 智能手机"
    assert rows["ZH001"]["brand"] == "华为" and rows["ZH001"]["price"] == 6999.0  # "¥6999"
    assert rows["ZH001"]["attributes"] == [("品牌", "华为"), ("颜色", "雅川青"), ("存储", "512GB")]
    assert rows["ZH001"]["category"] == "手机 > 智能手机"
    assert rows["ZH005"]["price"] is None
    assert reasons(t) == {4: "unparsable price '三十九元'", 5: "attribute '品牌华为' is not key#value"}


def test_gbk_encoded_catalog(tmp_path: Path):
    path = tmp_path / "gbk.tsv"
    path.write_bytes((FIXTURES / "catalog_zh.tsv").read_text(encoding="utf-8").replace("¥", "").encode("gbk"))
    t = parse(path, format="attribute_catalog", table="products", mapping=ZH_MAPPING, encoding="gbk")
    assert kept(t)[0]["title"] == "华为 Mate 60 Pro 智能手机"


def test_chunked_parse_equals_whole_file(tmp_path: Path):
    """Chunk boundaries fall on line starts and carry exact line numbers."""
    lines = ["sku,name,cost"] + [f"S{i},Item {i} 商品,{'x' if i % 97 == 0 else i}" for i in range(3000)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    kw = {"format": "csv", "table": "products", "mapping": {"product_id": "sku", "title": "name", "price": "cost"}}
    src = SourceConfig(name="t", path=str(path), **kw)
    assert len(plan_source(src, 0, 4096)) > 5
    whole, chunked = parse(path, **kw), parse(path, chunk_bytes=4096, **kw)
    assert whole.drop_columns(["_file"]).equals(chunked.drop_columns(["_file"]))
    assert reasons(chunked)[2 + 97] == "unparsable price 'x'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("19.99", 19.99), ("$1,299.00", 1299.0), ("₹ 499", 499.0), ("¥6999", 6999.0), ("", None), (None, None), (5, 5.0)],
)
def test_price_parsing(value, expected):
    assert as_price(value) == expected


@pytest.mark.parametrize("value", ["abc", "1.2.3", "12 - 15", True, [1], "-3"])
def test_price_rejects(value):
    with pytest.raises(RowError):
        as_price(value)


def test_timestamps_and_categories():
    assert (
        as_timestamp_ms(1433221332117, "auto")
        == as_timestamp_ms(1433221332.117, "s")
        == as_timestamp_ms("1433221332117", "ms")
    )
    assert as_timestamp_ms("2024-05-01T08:00:00+08:00", "auto") == as_timestamp_ms("2024-05-01 00:00:00", "iso")
    with pytest.raises(RowError, match="outside 1970..2100"):
        as_timestamp_ms(1433221332117, "s")
    assert as_category("Clothing >> Women's Clothing >> Shorts") == "Clothing > Women's Clothing > Shorts"
    assert as_category([["Toys & Games", "Puzzles"], ["Other"]]) == "Toys & Games > Puzzles"


# ---------------------------------------------------------------- real samples (../shared/data)

FLIPKART = SHARED / "data" / "flipkart-sample" / "flipkart_com-ecommerce_sample.csv"
S3REC = SHARED / "data" / "amazon-toys-s3rec" / "Toys_and_Games.txt"
FLIPKART_MAPPING = {"product_id": "pid", "title": "product_name", "price": "discounted_price", "brand": "brand"}


@pytest.mark.skipif(not FLIPKART.is_file(), reason=f"real sample {FLIPKART} not present (set SHOPGRAPH_SHARED_DIR)")
def test_flipkart_sample_reads_every_row():
    t = parse(FLIPKART, format="csv", table="products", mapping=FLIPKART_MAPPING)
    assert t.num_rows == 20000 and not reasons(t)  # duplicates are caught across the table, later
    rows = kept(t)
    assert rows[0]["title"] == "Alisha Solid Women's Cycling Shorts" and rows[0]["price"] == 379.0
    assert sum(r["price"] is None for r in rows) == 78  # empty prices are unknown, not errors
    assert sum(r["brand"] is None for r in rows) == 5861


@pytest.mark.skipif(not S3REC.is_file(), reason=f"real sample {S3REC} not present (set SHOPGRAPH_SHARED_DIR)")
def test_s3rec_sequences_read_every_interaction():
    t = parse(S3REC, format="user_item_sequences", table="events")
    assert t.num_rows == 167597 and not reasons(t)
    first = [r["product_id"] for r in t.slice(0, 5).to_pylist()]
    assert first == ["1", "2", "3", "4", "5"]


# ---------------------------------------------------------------- multi-valued attributes


def test_repeated_key_keeps_every_value_in_order():
    from core.values import parse_kv_attributes

    assert parse_kv_attributes("类型#上衣*风格#复古*风格#文艺*风格#复古*风格#简约") == {
        "类型": "上衣",
        "风格": ["复古", "文艺", "简约"],  # order kept, the exact repeat dropped
    }
    with pytest.raises(RowError, match="attribute '风格' is not key#value"):
        parse_kv_attributes("风格#复古*风格")  # a repeated key whose second pair is malformed
    with pytest.raises(RowError, match="is not key#value"):
        parse_kv_attributes("风格#复古*#文艺")


def test_json_attributes_accept_lists_and_pairs():
    from core.values import as_attributes

    assert as_attributes({"colour": ["red", "blue", "red"], "size": 42, "tag": ["x"], "none": None}) == {
        "colour": ["red", "blue"],
        "size": "42",
        "tag": "x",  # a one-element list reads as the plain value
    }
    assert as_attributes([("a", "1"), ("a", "2")]) == {"a": ["1", "2"]}  # pairs: a Parquet map row
    with pytest.raises(RowError, match="attribute 'colour' holds a nested dict"):
        as_attributes({"colour": [{"r": 1}]})
    with pytest.raises(RowError, match="nested object"):
        as_attributes('{"colour": {"r": 1}}')


def test_attribute_catalog_repeated_keys_reach_the_table(tmp_path: Path):
    path = tmp_path / "ag.tsv"
    path.write_text("id\tname\tattrs\nA1\t牛仔外套\t类型#上衣*风格#复古*风格#文艺*风格#简约\nA2\t裙\t风格#复古*风格\n")
    t = parse(
        path,
        format="attribute_catalog",
        table="products",
        mapping={"product_id": "id", "title": "name", "attributes": "attrs", "category": "attributes.风格"},
    )
    (row,) = kept(t)
    # The products table repeats the key once per value (core.schemas); the category took all of them.
    assert row["attributes"] == [("类型", "上衣"), ("风格", "复古"), ("风格", "文艺"), ("风格", "简约")]
    assert row["category"] == "复古, 文艺, 简约"
    assert reasons(t) == {3: "attribute '风格' is not key#value"}  # quarantined, never half-read


# ---------------------------------------------------------------- attribute_columns, id_from


def test_attribute_columns_send_extra_columns_into_attributes(tmp_path: Path):
    path = tmp_path / "shop.csv"
    path.write_text(
        "Product_ID,Product_Name,attrs,Primary_Color,Gender\n"
        '1,Shirt,"{""material"": ""cotton"", ""colour"": ""white""}", Navy,Men\n'
        "2,Mat,,,Unisex\n"
    )
    mapping = {"product_id": "Product_ID", "title": "Product_Name", "attributes": "attrs"}
    t = parse(
        path,
        format="csv",
        table="products",
        mapping=mapping,
        attribute_columns={"Primary_Color": "colour", "Gender": "gender"},
    )
    rows = {r["product_id"]: r["attributes"] for r in kept(t)}
    # an existing key gains the column's value as a further value; an empty cell adds nothing
    assert rows["1"] == [("material", "cotton"), ("colour", "white"), ("colour", "Navy"), ("gender", "Men")]
    assert rows["2"] == [("gender", "Unisex")]
    t = parse(path, format="csv", table="products", mapping=mapping, attribute_columns=["Gender"])
    assert {r["product_id"]: r["attributes"] for r in kept(t)}["2"] == [("Gender", "Unisex")]


def test_attribute_columns_naming_a_missing_column_stop_the_run(tmp_path: Path):
    from data.sources import SourceError

    path = tmp_path / "shop.csv"
    path.write_text("Product_ID,Product_Name,Primary_Color\n1,Shirt,Navy\n")
    with pytest.raises(SourceError) as err:
        parse(path, format="csv", table="products", mapping={"product_id": "Product_ID", "title": "Product_Name"},
              attribute_columns={"Primary_Colour": "colour"})  # fmt: skip
    message = str(err.value)
    assert "no column 'Primary_Colour'" in message and "data.sources[0].attribute_columns" in message
    assert "[Product_ID, Product_Name, Primary_Color]" in message  # the columns the file has
    jsonl = tmp_path / "shop.jsonl"
    jsonl.write_text('{"product_id": "1", "title": "Shirt", "colour": "navy"}\n{"product_id": "2", "title": "Mat"}\n')
    with pytest.raises(SourceError, match=r"no column 'color'.*keys of its first 2 records are: \[colour"):
        parse(jsonl, format="jsonl", table="products", attribute_columns=["color"])
    assert kept(parse(jsonl, format="jsonl", table="products", attribute_columns=["colour"]))[0]["attributes"] == [
        ("colour", "navy")
    ]


def test_jsonl_without_ids_in_both_modes(tmp_path: Path):
    from data.sources import SourceError

    path = tmp_path / "ag.jsonl"
    path.write_text('{"product_id": "X", "title": "t"}\n{"title": "裤", "attrs": "风格#简约"}\n\n{"title": "衬衫"}\n')
    # default (id_from: column): a record without an id is quarantined, as before
    t = parse(path, format="jsonl", table="products", mapping={"attributes": "attrs"})
    assert reasons(t) == {2: "missing product_id", 4: "missing product_id"} and len(kept(t)) == 1
    # id_from: line: every record is numbered by its line (blank lines count, so ids follow the file)
    t = parse(path, format="jsonl", table="products", mapping={"attributes": "attrs"}, id_from="line")
    assert [r["product_id"] for r in kept(t)] == ["t:L1", "t:L2", "t:L4"] and not reasons(t)
    assert kept(t)[1]["attributes"] == [("风格", "简约")]
    t = parse(path, format="jsonl", table="products", id_from="line", id_prefix="ag-")
    assert kept(t)[0]["product_id"] == "ag-L1"
    # a file whose first record has no id stops the run, and says how to number the records
    path.write_text('{"title": "裤"}\n')
    with pytest.raises(SourceError, match=r"no key 'product_id'.*or set data.sources\[0\].id_from: line"):
        parse(path, format="jsonl", table="products")


def test_id_from_line_is_checked(tmp_path: Path):
    from pydantic import ValidationError

    from data.sources import SourceError

    with pytest.raises(ValidationError, match="remove mapping.product_id"):
        SourceConfig(name="t", format="jsonl", path="x", table="products", id_from="line", mapping={"product_id": "id"})
    with pytest.raises(ValidationError, match="apply to products only"):
        SourceConfig(name="t", format="jsonl", path="x", table="events", id_from="line")
    with pytest.raises(ValidationError, match="apply to products only"):
        SourceConfig(name="t", format="csv", path="x", table="events", attribute_columns=["c"])
    with pytest.raises(ValidationError, match="id_prefix applies only with id_from: line"):
        SourceConfig(name="t", format="jsonl", path="x", table="products", id_prefix="p")
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text('{"title": "t"}\n')
    with pytest.raises(SourceError, match="matches 2 files"):
        parse(tmp_path / "*.jsonl", format="jsonl", table="products", id_from="line")


# ---------------------------------------------------------------- real samples: nothing lost

ADVERTISEGEN = SHARED / "data" / "advertisegen-dev" / "advertisegen_dev300.json"
MYNTRA = SHARED / "data" / "myntra-dev" / "myntra_dev3000.csv"


@pytest.mark.skipif(not ADVERTISEGEN.is_file(), reason=f"real sample {ADVERTISEGEN} not present")
def test_advertisegen_keeps_every_attribute_value():
    import json

    source = [
        [(k.strip(), v.strip()) for k, _, v in (p.partition("#") for p in json.loads(line)["content"].split("*"))]
        for line in ADVERTISEGEN.read_text(encoding="utf-8").splitlines()
    ]
    t = parse(ADVERTISEGEN, format="jsonl", table="products", id_from="line",
              mapping={"title": "attributes.类型", "attributes": "content", "description": "summary"})  # fmt: skip
    rows = kept(t)
    assert not reasons(t) and len(rows) == len(source)
    for row, pairs in zip(rows, source, strict=True):
        assert row["attributes"] == list(dict.fromkeys(pairs))  # every distinct value, in source order
    assert sum(len({k for k, _ in r["attributes"]}) < len(r["attributes"]) for r in rows) > len(rows) // 2


@pytest.mark.skipif(not MYNTRA.is_file(), reason=f"real sample {MYNTRA} not present")
def test_myntra_colour_and_gender_reach_the_attributes():
    mapping = {"product_id": "Product_ID", "title": "Product_Name", "brand": "Product_Brand", "price": "Price"}
    t = parse(MYNTRA, format="csv", table="products", mapping=mapping,
              attribute_columns={"Primary_Color": "colour", "Gender": "gender"})  # fmt: skip
    attrs = [dict(r["attributes"] or []) for r in kept(t)]
    assert len(attrs) == 3000 and not reasons(t)
    assert sum("gender" in a for a in attrs) == 3000
    assert sum("colour" in a for a in attrs) == 2770  # the rest have an empty Primary_Color


def test_free_text_is_scrubbed_at_ingest():
    from core.config.ingest import SourceConfig
    from data.readers import event_values

    src = SourceConfig.model_validate({"name": "reviews", "table": "events", "format": "jsonl", "path": "x.jsonl"})
    review = {"user_id": "u1", "product_id": "p1", "event": "rating", "ts": 1_700_000_000_000, "value": 5,
              "text": "Great! Mail me at ann@example.com or 13912345678. 5000 mAh battery lasts."}  # fmt: skip
    mapping = {k: k for k in review}
    out = event_values(review, src, mapping, {}, 1)
    assert out["text"] == "Great! Mail me at [email] or [phone]. 5000 mAh battery lasts."


def test_quarantined_raw_records_are_scrubbed_too(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        json.dumps(
            {
                "user_id": "u1",
                "product_id": "p1",
                "event": "rating",
                "ts": "not a time",
                "text": "wrong item, call me on (415) 555-2671 or bo@example.com",
            }
        )
        + "\n",  # fmt: skip
        encoding="utf-8",
    )
    mapping = {k: k for k in ("user_id", "product_id", "event", "ts", "text")}
    t = parse(path, format="jsonl", table="events", mapping=mapping)
    (row,) = t.to_pylist()
    assert row["_reason"] and "555-2671" not in row["_raw"] and "bo@example.com" not in row["_raw"]
    assert "[phone]" in row["_raw"] and "[email]" in row["_raw"] and "p1" in row["_raw"]
