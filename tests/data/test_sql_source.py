"""`format: sql`: `data prepare` reads the online database with Ray Data `read_sql`, on SQLite and a
real PostgreSQL (`db_url`): the same validation and quarantine as files, deleted and flagged rows
quarantined with their reason, pseudonyms kept as stored, files and the database merged.

    pytest -q tests/data/test_sql_source.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from sqlalchemy import insert

from core.config import ConfigError, ShopgraphConfig, load_config
from core.layout import ArtifactLayout
from core.privacy import Pseudonymizer, TombstoneStore
from core.shards import read_events, read_products, read_quarantine
from core.store import ProductRow, Store, make_engine
from data.prepare import prepare
from data.sources import SourceError

TS = 1_700_000_000_000  # 2023-11-14, ms


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def config(root: Path, url: str, sources: list[dict]) -> ShopgraphConfig:
    return ShopgraphConfig.model_validate(
        {"artifacts": {"root": str(root)}, "online": {"database_url": url}, "data": {"sources": sources}}
    )


DB_PRODUCTS = {"name": "db", "format": "sql", "table": "products"}
DB_EVENTS = {"name": "db-events", "format": "sql", "table": "events"}


def _event(key: str, user: str, product: str, event: str = "view", ts: int = TS, **kw) -> dict:
    return dict(
        event=event, user_key=user, product_id=product, ts=ts, value=None, request_id=None,
        idempotency_key=key, received_at=TS, flagged_reason=None,
    ) | kw  # fmt: skip


def fill(url: str, pz: Pseudonymizer) -> dict[str, str]:
    """Products and events as the API writes them, plus values it would have refused."""
    users = {name: pz.user_key(name) for name in ("alice", "bob", "carol")}
    engine = make_engine(url)
    store = Store(engine)
    store.put_product(
        {"product_id": "P1", "title": "Mug", "price": 10.0, "in_stock": True, "attributes": {"colour": "red"}}
    )
    store.put_product({"product_id": "P2", "title": "Lamp", "price": 20.0, "category": "Home > Lights"})
    store.put_product({"product_id": "P3", "title": "Chair", "price": 30.0})
    assert store.delete_product("P3", None)
    with engine.begin() as conn:  # written around the API's validation: the prepare must catch them
        conn.execute(insert(ProductRow), [
            dict(product_id="P4", title="Broken price", price=-5.0, updated_at=TS),
            dict(product_id="P5", title="", price=1.0, updated_at=TS),
        ])  # fmt: skip
    a, b, c = users["alice"], users["bob"], users["carol"]
    store.add_events(
        [
            _event("e1", a, "P1"),
            _event("e2", a, "P2", "purchase", TS + 1000),
            _event("e3", a, "P1", "impression", TS + 2000, request_id="r1"),
            _event("e4", b, "P9", flagged_reason="unknown_product"),
            _event("e5", "bob@example.com", "P1"),  # not a pseudonym: must never be hashed into one
            _event("e6", b, "P1", ts=5_000_000_000_000_000),  # year 160,000
            _event("e7", c, "P1"),  # carol asked to be forgotten
            _event("e8", b, "P3"),  # the deleted product
            _event("e9", b, "P2", "rating", TS + 3000, value=4.0),
        ]
    )
    engine.dispose()
    return users


def test_database_rows_get_the_file_rules(db_url: str, tmp_path: Path):
    cfg = config(tmp_path, db_url, [DB_PRODUCTS, DB_EVENTS])
    pz = Pseudonymizer.from_config(cfg)
    users = fill(db_url, pz)
    TombstoneStore(str(tmp_path)).add(pz.all_keys("carol"))

    result = prepare(cfg, log=lambda _: None)

    counts = {c.name: (c.read, c.kept, c.quarantined, c.erased) for c in result.counts}
    assert counts == {"db": (5, 2, 3, 0), "db-events": (9, 3, 5, 1)}
    layout = ArtifactLayout(str(tmp_path))
    products = {r["product_id"]: r for r in read_products(layout).to_pylist()}
    assert sorted(products) == ["P1", "P2"]
    assert products["P1"]["price"] == 10.0 and products["P1"]["in_stock"] is True
    assert products["P1"]["attributes"] == [("colour", "red")]
    assert products["P2"]["category"] == "Home > Lights"
    events = read_events(layout).to_pylist()
    # the stored pseudonyms, not pseudonyms of pseudonyms
    assert sorted((e["user_id"], e["product_id"], e["event"]) for e in events) == sorted(
        [(users["alice"], "P1", "view"), (users["alice"], "P2", "purchase"), (users["bob"], "P2", "rating")]
    )
    assert next(e for e in events if e["event"] == "rating")["value"] == 4.0

    q = read_quarantine(layout).to_pylist()
    by_table = {(r["table"], r["line"]): r for r in q}
    assert all(r["source"].endswith(f"#{r['table']}") for r in q)
    reasons = {k: r["reason"] for k, r in by_table.items()}
    assert reasons[("products", 3)].startswith("deleted in the online database (at ")  # P3, rank 3 by id
    assert "is negative or not finite" in reasons[("products", 4)]
    assert reasons[("products", 5)] == "empty title"
    assert reasons[("events", 3)].startswith("unknown event type 'impression'")  # no event_map for it
    assert reasons[("events", 4)] == "flagged in the online database (unknown_product)"
    assert reasons[("events", 5)].startswith("user_key is not a pseudonym")
    assert "outside 1970..2100" in reasons[("events", 6)]
    assert reasons[("events", 8)] == "unknown product_id 'P3' (not in the products table)"
    assert "bob@example.com" not in json.dumps(q)  # a value that is not a pseudonym is withheld
    assert ("events", 7) not in by_table  # erased, not quarantined


def test_impressions_follow_the_event_map(db_url: str, tmp_path: Path):
    cfg = config(tmp_path, db_url, [DB_PRODUCTS, {**DB_EVENTS, "event_map": {"impression": "view"}}])
    fill(db_url, Pseudonymizer.from_config(cfg))
    result = prepare(cfg, log=lambda _: None)
    assert {c.name: c.kept for c in result.counts}["db-events"] == 5  # e1, e2, e3 (as a view), e7, e9
    assert not [r for r in read_quarantine(ArtifactLayout(str(tmp_path))).to_pylist() if "impression" in r["reason"]]


def test_files_and_the_database_merge(db_url: str, tmp_path: Path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("product_id,title,price\nP1,Mug (old catalog),9\nP3,Chair,30\nP10,Kite,12\n", encoding="utf-8")
    log = tmp_path / "events.jsonl"
    log.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"user_id": "alice", "product_id": "P1", "event": "view", "ts": TS},  # also in the database
                {"user_id": "alice", "product_id": "P10", "event": "cart", "ts": TS + 5000},
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    files = [
        {"name": "catalog", "format": "csv", "path": str(catalog), "table": "products"},
        {"name": "log", "format": "jsonl", "path": str(log), "table": "events"},
    ]
    # the database first: its rows are the shop's latest writes, so they win a product_id
    cfg = config(tmp_path / "art", db_url, [DB_PRODUCTS, DB_EVENTS, *files])
    users = fill(db_url, Pseudonymizer.from_config(cfg))

    result = prepare(cfg, log=lambda _: None)

    counts = {c.name: (c.read, c.kept, c.quarantined) for c in result.counts}
    assert counts["catalog"] == (3, 1, 2)  # P10 kept; P1 a duplicate of the database's, P3 deleted there
    assert counts["log"] == (2, 1, 1)  # the P1 view is the database's e1
    layout = ArtifactLayout(str(tmp_path / "art"))
    products = {r["product_id"]: r["title"] for r in read_products(layout).to_pylist()}
    assert products == {"P1": "Mug", "P2": "Lamp", "P10": "Kite"}
    events = read_events(layout).to_pylist()
    alice = [(e["product_id"], e["event"]) for e in events if e["user_id"] == users["alice"]]
    assert sorted(alice) == [("P1", "view"), ("P10", "cart"), ("P2", "purchase")]  # one history, one pseudonym
    q = {(Path(r["source"]).name, r["line"]): r["reason"] for r in read_quarantine(layout).to_pylist()}
    assert q[("catalog.csv", 3)] == "deleted in the online database: product_id 'P3' (this row is not kept)"
    assert q[("catalog.csv", 2)].startswith("duplicate product_id 'P1' (first seen at ")
    assert q[("events.jsonl", 1)].startswith("duplicate event (same user_id, product_id, event and ts as ")


def test_a_missing_database_stops_before_any_work(tmp_path: Path):
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'none.db'}", [DB_EVENTS])
    with pytest.raises(SourceError, match=r"no SQLite database at .*online.database_url"):
        prepare(cfg, log=lambda _: None)
    empty = tmp_path / "empty.db"
    make_engine(f"sqlite:///{empty}").connect().close()  # a database without the online tables
    cfg = config(tmp_path, "sqlite:///unused.db", [{**DB_EVENTS, "url": f"sqlite:///{empty}"}])
    with pytest.raises(SourceError, match=r"cannot read table events .*data.sources\[0\].url"):
        prepare(cfg, log=lambda _: None)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({**DB_EVENTS, "path": "x.csv"}, "format sql reads a database, not files; remove path"),
        ({**DB_EVENTS, "mapping": {"user_id": "who"}}, "remove mapping"),
        ({**DB_EVENTS, "url": "postgresql+psycopg://shop:secret@db/shop"}, "url holds a password"),
        ({**DB_EVENTS, "url": "not a url"}, "is not a SQLAlchemy URL"),
        ({"name": "f", "format": "csv", "table": "events"}, "format csv reads files; set path"),
        ({"name": "f", "format": "csv", "path": "a.csv", "table": "events", "url": "sqlite://"}, "url applies to format sql only"),
    ],
)  # fmt: skip
def test_malformed_sql_source_configs_name_the_key(source: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"data.sources=[{json.dumps(source)}]"])


def test_the_demo_pipeline_sees_when_the_database_changed(db_url: str, tmp_path: Path):
    from cluster.pipeline import source_digests

    cfg = config(tmp_path, db_url, [DB_PRODUCTS, DB_EVENTS])
    before = source_digests(cfg)
    assert before == source_digests(cfg)  # nothing written: prepare is up to date
    engine = make_engine(db_url)
    store = Store(engine)
    store.add_events([_event("x1", "u_k1_" + "0" * 32, "P1")])
    after_event = source_digests(cfg)
    assert after_event["source db-events"] != before["source db-events"]
    assert after_event["source db"] == before["source db"]
    store.put_product({"product_id": "P1", "title": "Mug"})
    assert source_digests(cfg)["source db"] != before["source db"]
    engine.dispose()
    gone = config(tmp_path, f"sqlite:///{tmp_path / 'none.db'}", [DB_EVENTS])
    assert source_digests(gone) == {"source db-events": "missing"}
