"""The online database on SQLite and a real PostgreSQL (tests/conftest.py `db_url`): migrations,
one-transaction event batches with idempotency keys, product writes with soft delete, and the
live queries serving makes.

    pytest -q tests/core/store/test_store.py
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from core.store import Store, make_engine, upgrade


def _event(key: str, **kw) -> dict:
    row = dict(
        event="view",
        user_key="u1",
        product_id="p1",
        ts=1_000,
        value=None,
        request_id=None,
        idempotency_key=key,
        received_at=2_000,
        flagged_reason=None,
    )
    return row | kw


@pytest.fixture
def store(db_url):
    engine = make_engine(db_url)
    yield Store(engine)
    engine.dispose()


def test_migrations_create_the_tables_and_run_twice(db_url):
    upgrade(db_url)  # already at head: nothing to do, no error
    engine = make_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"products", "events", "refresh_watermarks", "served_items", "shared_reports", "alembic_version"} <= tables
    unique = inspect(engine).get_unique_constraints("events") + [
        i for i in inspect(engine).get_indexes("events") if i["unique"]
    ]
    assert any(c["column_names"] == ["idempotency_key"] for c in unique)
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x' / 'shop.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_duplicate_idempotency_keys_are_stored_once(store):
    assert store.add_events([_event("a"), _event("b")]) == {"a", "b"}
    assert store.add_events([_event("a"), _event("c")]) == {"c"}
    assert store.count_events() == 3


def test_event_values_round_trip_exactly(store):
    """PostgreSQL writes a batch as column arrays (unnest): every column, NULLs, non-ASCII ids and
    a key repeated inside one batch come back as they went in (the first row of a repeated key)."""
    rows = [
        _event("k1", value=4.5, request_id="req-1", event="rating", product_id="商品-1", ts=1_700_000_000_123),
        _event("k2", flagged_reason="unknown_product", user_key="ü" * 64),
        _event("k1", value=1.0),  # repeated inside the batch: not stored twice
    ]
    assert store.add_events(rows) == {"k1", "k2"}
    assert store.count_events() == 2
    got = store.user_events(["u1", "ü" * 64])
    assert [(e["event"], e["product_id"], e["value"], e["request_id"], e["flagged_reason"]) for e in got] == [
        ("view", "p1", None, None, "unknown_product"),
        ("rating", "商品-1", 4.5, "req-1", None),
    ]
    assert store.recent_events("u1", ["rating"], 0, 5) == [("商品-1", "rating", 1_700_000_000_123)]


def test_a_batch_is_one_transaction(store):
    store.add_events([_event("a")])
    with pytest.raises(Exception):  # a NOT NULL column missing in the last row: nothing of the batch is kept
        store.add_events([_event("x"), _event("y", product_id=None)])
    assert store.count_events() == 1


def test_served_rows_round_trip_and_a_failed_batch_keeps_nothing(store):
    """The served log's batches skip the statement layer (one SQL string, executemany): every
    column, NULLs and non-ASCII ids come back as written; a bad row fails its whole batch, and
    the connection it used is clean for the next one."""
    from sqlalchemy import select

    from core.store.models import ServedRow

    def served(i: int, **kw) -> dict:
        row = dict(request_id=f"req-{i}", position=i, product_id=f"商品-{i}", user_key=None, surface="recs",
                   recommender_version="r1", generator_version="g1", reason_source="template", degraded=None, ts=10 + i)  # fmt: skip
        return row | kw

    assert store.add_served([served(1, user_key="u1", degraded="ranker"), served(2)]) == 2
    with pytest.raises(Exception):  # NOT NULL product_id missing in the last row
        store.add_served([served(3), served(4, product_id=None)])
    assert store.add_served([served(5)]) == 1
    with store.engine.connect() as conn:
        rows = [r._asdict() for r in conn.execute(select(ServedRow).order_by(ServedRow.position))]
    assert [{k: v for k, v in r.items() if k != "id"} for r in rows] == [
        served(1, user_key="u1", degraded="ranker"), served(2), served(5)
    ]  # fmt: skip
    assert store.count_served() == 3


def test_recent_events_are_the_users_latest_unflagged_in_time_order(store):
    store.add_events(
        [
            _event("1", ts=10, product_id="p1"),
            _event("2", ts=30, product_id="p3"),
            _event("3", ts=20, product_id="p2", event="cart"),
            _event("4", ts=40, product_id="px", flagged_reason="unknown_product"),
            _event("5", ts=50, product_id="p9", event="impression"),
            _event("6", ts=60, product_id="p8", user_key="u2"),
        ]
    )
    got = store.recent_events("u1", ["view", "cart"], since_ms=0, limit=10)
    assert [p for p, _, _ in got] == ["p1", "p2", "p3"]
    assert [p for p, _, _ in store.recent_events("u1", ["view", "cart"], since_ms=0, limit=2)] == ["p2", "p3"]
    assert store.recent_events("u1", ["view"], since_ms=10, limit=10) == [("p3", "view", 30)]


def test_products_put_patch_soft_delete_and_come_back(store):
    put = store.put_product({"product_id": "n1", "title": "Mug", "attributes": {"color": ["red", "blue"]}})
    got = store.get_product("n1")
    assert got["title"] == "Mug" and got["attributes"] == {"color": ["red", "blue"]} and got["deleted_at"] is None
    patched = store.patch_product("n1", {"stock": 0, "in_stock": False}, None)
    assert patched["stock"] == 0 and patched["in_stock"] is False and patched["updated_at"] >= put["updated_at"]
    assert store.delete_product("n1", None) is True
    assert store.delete_product("n1", None) is False  # already deleted
    assert store.get_product("n1")["deleted_at"] is not None
    assert store.patch_product("n1", {"price": 1.0}, None)["deleted_at"] is not None  # not changed
    assert store.get_product("n1")["price"] is None
    store.put_product({"product_id": "n1", "title": "Mug 2"})
    assert store.get_product("n1")["deleted_at"] is None


def test_a_catalog_product_gets_a_row_on_its_first_write(store):
    base = {"product_id": "c1", "title": "From the shards", "price": 5.0, "in_stock": True}
    assert store.patch_product("c1", {"price": 4.0}, None) is None  # unknown everywhere
    assert store.patch_product("c1", {"price": 4.0}, base)["title"] == "From the shards"
    assert store.get_product("c1")["price"] == 4.0
    assert store.delete_product("c2", {"product_id": "c2", "title": "Other"}) is True
    assert store.get_product("c2")["deleted_at"] is not None


def test_changed_products_since_a_time(store):
    first = store.put_product({"product_id": "a", "title": "A"})
    store.put_product({"product_id": "b", "title": "B"})
    store.delete_product("a", None)
    changed = store.changed_products(first["updated_at"])
    assert {p["product_id"] for p in changed} == {"a", "b"}
    assert store.changed_products(10**15) == []


def test_bad_env_keys_are_refused_naming_the_variable(monkeypatch):
    from core.config.online import OnlineConfig
    from core.store.keys import KeyRing

    monkeypatch.setenv("SHOPGRAPH_API_KEYS", "shop:not-a-hash:events:write")
    with pytest.raises(ValueError, match="SHOPGRAPH_API_KEYS entry 1"):
        KeyRing.from_config(OnlineConfig())
    with pytest.raises(ValueError, match="sha256"):
        OnlineConfig(api_keys=[{"name": "x", "sha256": "abc", "scopes": ["admin"]}])


def test_a_server_url_takes_its_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("SHOPGRAPH_DB_PASSWORD", "s3cret")
    engine = make_engine("postgresql+psycopg://shopgraph@db:5432/shopgraph", "SHOPGRAPH_DB_PASSWORD")
    assert engine.url.password == "s3cret"
    engine = make_engine("postgresql+psycopg://shopgraph:given@db:5432/shopgraph", "SHOPGRAPH_DB_PASSWORD")
    assert engine.url.password == "given"  # an explicit one wins


def test_the_key_helper_prints_a_token_and_its_hash(capsys):
    from core.store.keys import KeyRing, main, parse_env_keys

    assert main(["--name", "shop", "--scopes", "events:write"]) == 0
    out = capsys.readouterr().out
    token = out.split("): ")[1].split()[0]
    env = out.split("SHOPGRAPH_API_KEYS=")[1].strip()
    key = KeyRing(parse_env_keys(env, "SHOPGRAPH_API_KEYS")).find(token)
    assert key is not None and key.allows("events:write") and not key.allows("catalog:write")
    with pytest.raises(SystemExit):
        main(["--name", "shop", "--scopes", "events:read"])


def test_replicas_starting_together_migrate_once(db_url):
    """Several processes upgrading a fresh database at once (replicas starting together)."""
    import subprocess
    import sys

    from core.store.pgserver import create_database

    if db_url.startswith("sqlite"):
        fresh = db_url.replace("shop.db", "fresh.db")
    else:
        from sqlalchemy.engine import make_url

        fresh = create_database(db_url, make_url(db_url).database + "_fresh")
    code = "import sys; from core.store import upgrade; upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert Store(make_engine(fresh)).count_events() == 0
