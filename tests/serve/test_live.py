"""The write API and live answers through the ingress's real FastAPI app (TestClient, as in
test_http.py) around in-process stage fakes (serve.testing) and a real online database: every
test runs on SQLite and on PostgreSQL (tests/conftest.py `db_url`).

    pytest -q tests/serve/test_live.py
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config.online import OnlineConfig
from core.config.privacy import PrivacyConfig
from core.config.serve import ServeConfig
from core.store import Store, make_engine
from core.store.keys import KeyRing, token_hash
from serve.catalog import Catalog, Product
from serve.live import LiveState
from serve.testing import fake_ranker, fake_retriever, privacy_for_tests
from tests.serve.test_http import _error
from tests.serve.test_stream import INGRESS

MUGS, PUZZLES = "Home & Kitchen > Coffee Mugs", "Toys & Games > Puzzles"
USER = "u-1"
KEY = privacy_for_tests()[0].user_key(USER)  # the shards and the database hold the pseudonym, never USER
TOKENS = {"events": "sgk_events_token", "catalog": "sgk_catalog_token", "eraser": "sgk_eraser_token"}
SCOPES = {"events": ["events:write"], "catalog": ["catalog:write"], "eraser": ["users:erase"]}


def _auth(who: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def _catalog() -> Catalog:
    def product(pid, title, category, brand, idx):
        return Product(pid, title, category, brand, 10.0 + idx, {"color": "green"}, None, True, item_idx=idx)

    products = {
        "p1": product("p1", "Brewly T76 Coffee Mug", MUGS, "Brewly", 0),
        "p2": product("p2", "Hearthline V33 Coffee Mug", MUGS, "Hearthline", 1),
        "p3": product("p3", "Morrow 500 Piece Puzzle", PUZZLES, "Morrow", 2),
        "p4": product("p4", "Morrow 1000 Piece Puzzle", PUZZLES, "Morrow", 3),
    }
    catalog = Catalog(
        products,
        {0: "p1", 1: "p2", 2: "p3", 3: "p4"},
        {KEY: np.asarray([0], np.int64)},
        {},
        list(products),
        "t",
        "USD",
    )
    catalog.user_history_ts = {KEY: np.asarray([1_704_067_200_000], np.int64)}  # trained on: 2024-01-01
    return catalog


@pytest.fixture
def make_ingress(db_url, monkeypatch):
    """Ingress replicas over one database (each its own catalog copy, as on separate replicas)."""
    monkeypatch.delenv("SHOPGRAPH_API_KEYS", raising=False)
    engines = []

    def make(keys: bool = True, **online):
        api_keys = (
            [{"name": w, "sha256": token_hash(t), "scopes": SCOPES[w]} for w, t in TOKENS.items()] if keys else []
        )
        cfg = OnlineConfig(api_keys=api_keys, poll_ms=10, **online)
        engines.append(make_engine(db_url))
        live = LiveState(Store(engines[-1]), KeyRing.from_config(cfg), cfg, ["view", "click", "cart", "purchase"])
        catalog = _catalog()
        ingress = object.__new__(INGRESS)
        pz, tombstones, _ = privacy_for_tests()
        ingress._setup(
            ServeConfig(), catalog, fake_retriever(catalog), fake_ranker(catalog), None, "t", live=live,
            pseudonymizer=pz, tombstones=tombstones, privacy=PrivacyConfig(),
        )  # fmt: skip
        return ingress

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def client(make_ingress, monkeypatch):
    from ray import serve as ray_serve

    ingress = make_ingress()
    monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))
    with TestClient(ingress.http_app, raise_server_exceptions=False) as c:
        c.ingress = ingress
        yield c


def _use(ingress, monkeypatch):
    from ray import serve as ray_serve

    monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))


def _recs(client, **body) -> list[str]:
    r = client.post("/v1/recommendations", json={"user_id": USER, "k": 2, "with_reasons": False, **body})
    assert r.status_code == 200, r.text
    return [i["product_id"] for i in r.json()["items"]]


def _event(pid: str, key: str, **kw) -> dict:
    return {"event": "view", "user_id": USER, "product_id": pid, "idempotency_key": key, **kw}


def _count(client) -> int:
    return client.ingress.live.store.count_events()


def test_the_default_database_is_sqlite_under_the_artifact_root(tmp_path, monkeypatch):
    from core.config import load_config
    from core.store import database_url
    from serve.live import LiveState

    monkeypatch.setenv("SHOPGRAPH_API_KEYS", f"shop:{'a' * 64}:events:write+catalog:write")
    cfg = load_config(overrides=[f"artifacts.root={tmp_path}"])
    assert database_url(cfg) == f"sqlite:///{tmp_path.resolve() / 'online' / 'shop.db'}"
    live = LiveState.open(cfg)  # what an ingress replica does: create, migrate, read the keys
    assert (tmp_path / "online" / "shop.db").exists() and live.store.count_events() == 0
    assert [(k.name, sorted(k.scopes)) for k in live.keys.keys] == [("shop", ["catalog:write", "events:write"])]
    with pytest.raises(ValueError, match="online.database_url"):
        database_url(load_config(overrides=["artifacts.root=s3://bucket/shopgraph"]))


# ----------------------------------------------------------------------------- live answers


def test_a_users_new_events_change_their_next_recommendation(client):
    assert _recs(client) == ["p1", "p2"]  # trained history: a mug -> mugs first
    r = client.post("/v1/events", json={"events": [_event("p3", "k1")]}, headers=_auth("events"))
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert _recs(client) == ["p3", "p4"]  # the puzzle just viewed (in the database) -> puzzles first
    sent = client.ingress.retriever.requests[-1]
    assert sent.history == [0, 2]  # training history, then the database event, time-ordered


def test_events_merge_by_time_with_the_training_history(client):
    old = 1_600_000_000_000  # before the trained history: the mug stays the latest item
    client.post("/v1/events", json={"events": [_event("p3", "old", ts=old)]}, headers=_auth("events"))
    assert _recs(client) == ["p1", "p2"]
    # the recommendation's own request: a stage health probe may have reached the retriever after it
    mine = [r for r in client.ingress.retriever.requests if r.user_id is not None]
    assert mine[-1].history == [2, 0]


def test_a_deleted_product_disappears_from_every_replica_and_its_page_is_gone(client, make_ingress, monkeypatch):
    other = make_ingress()
    assert "p2" in _recs(client)
    assert client.delete("/v1/products/p2", headers=_auth("catalog")).status_code == 200
    assert "p2" not in _recs(client)  # this replica: at once
    _error(client.get("/v1/products/p2/page"), 410, "product_id")
    _error(client.get("/v1/products/p2"), 410, "product_id")
    time.sleep(0.05)  # past the other replica's online.poll_ms (10 ms here)
    _use(other, monkeypatch)
    with TestClient(other.http_app, raise_server_exceptions=False) as c2:
        assert "p2" not in _recs(c2)
        _error(c2.get("/v1/products/p2/page"), 410, "product_id")
    assert client.delete("/v1/products/p2", headers=_auth("catalog")).status_code == 200  # idempotent


def test_out_of_stock_leaves_answers_and_comes_back(client):
    r = client.patch("/v1/products/p1", json={"stock": 0}, headers=_auth("catalog"))
    assert r.status_code == 200 and r.json()["in_stock"] is False and r.json()["source"] == "database", r.text
    assert "p1" not in _recs(client)
    assert "p1" in _recs(client, filters={"in_stock_only": False})  # the request may relax the rule
    client.patch("/v1/products/p1", json={"stock": 5}, headers=_auth("catalog"))
    assert "p1" in _recs(client)


def test_a_new_product_gets_its_page_at_once(client):
    body = {"title": "Brewly T80 Travel Mug", "brand": "Brewly", "category": MUGS, "price": "$14.50", "stock": 3}
    r = client.put("/v1/products/n1", json=body, headers=_auth("catalog"))
    assert r.status_code == 200, r.text
    assert r.json()["price"] == 14.5 and r.json()["in_stock"] is True  # '$14.50' read as ingest reads prices
    page = client.get("/v1/products/n1/page")
    assert page.status_code == 200 and page.json()["sections"]["title"] == "Brewly T80 Travel Mug"
    assert client.get("/v1/products/n1").json()["source"] == "database"
    assert client.get("/v1/products/p3").json()["source"] == "catalog"


def test_a_price_change_reaches_the_page(client):
    client.patch("/v1/products/p3", json={"price": 7.25}, headers=_auth("catalog"))
    assert client.get("/v1/products/p3/page").json()["price"] == 7.25


# ----------------------------------------------------------------------------- events: bad input


def test_duplicates_are_acknowledged_not_stored_twice(client):
    batch = {"events": [_event("p1", "a"), _event("p2", "b"), _event("p2", "b")]}
    first = client.post("/v1/events", json=batch, headers=_auth("events")).json()
    assert (first["stored"], first["duplicates"], first["duplicate_indices"]) == (2, 1, [2])
    again = client.post("/v1/events", json=batch, headers=_auth("events")).json()
    assert (again["stored"], again["duplicates"]) == (0, 3)
    assert _count(client) == 2


def test_a_product_written_on_another_replica_is_known_at_once(client, make_ingress, monkeypatch):
    other = make_ingress()
    _use(other, monkeypatch)
    with TestClient(other.http_app, raise_server_exceptions=False) as c2:
        assert c2.put("/v1/products/n9", json={"title": "New"}, headers=_auth("catalog")).status_code == 200
    _use(client.ingress, monkeypatch)
    client.ingress.live.next_poll = time.monotonic() + 60  # this replica has not polled since
    r = client.post("/v1/events", json={"events": [_event("n9", "n9-1")]}, headers=_auth("events"))
    assert r.json()["flagged"] == 0, r.text


def test_unknown_products_are_stored_and_flagged_not_used(client):
    r = client.post("/v1/events", json={"events": [_event("nope", "x"), _event("p1", "y")]}, headers=_auth("events"))
    assert r.json() | {} == r.json() and (r.json()["stored"], r.json()["flagged_indices"]) == (2, [0])
    assert client.ingress.live.store.recent_events(KEY, ["view"], 0, 10)[-1][0] == "p1"
    assert client.ingress.live.store.recent_events(USER, ["view"], 0, 10) == []  # no raw id in the database
    assert _count(client) == 2


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"event": "hover"}, "events.1.event"),
        ({"user_id": 5}, "events.1.user_id"),
        ({"idempotency_key": ""}, "events.1.idempotency_key"),
        ({"ts": "yesterday-ish"}, "events.1.ts"),
        ({"ts": int(time.time() * 1000) + 3_600_000}, "events.1.ts"),  # an hour ahead: past the skew
        ({"event": "rating"}, "events.1"),  # a rating needs a value
        ({"extra": 1}, "events.1.extra"),
        ({"ts": True}, "events.1.ts"),
        ({"event": "rating", "value": "4"}, "events.1.value"),
    ],
)
def test_a_bad_event_is_a_422_naming_it_and_nothing_is_stored(client, event, param):
    batch = {"events": [_event("p1", "good"), _event("p2", "bad") | event]}
    err = _error(client.post("/v1/events", json=batch, headers=_auth("events")), 422, param)
    assert err["message"]
    assert _count(client) == 0  # all or nothing


def test_malformed_and_empty_batches(client):
    _error(
        client.post(
            "/v1/events", content=b'{"events": [', headers=_auth("events") | {"content-type": "application/json"}
        ),
        400,
    )
    _error(client.post("/v1/events", json={"events": []}, headers=_auth("events")), 422, "events")
    _error(client.post("/v1/events", json=[], headers=_auth("events")), 422)


def test_an_oversized_batch_is_413(client):
    batch = {"events": [_event("p1", f"k{i}") for i in range(1001)]}
    err = _error(client.post("/v1/events", json=batch, headers=_auth("events")), 413, "events")
    assert "1000" in err["message"]
    assert _count(client) == 0


def test_keys_and_scopes(client):
    batch = {"events": [_event("p1", "k")]}
    r = client.post("/v1/events", json=batch)
    assert _error(r, 401)["type"] == "authentication_error" and r.headers["www-authenticate"].startswith("Bearer")
    _error(client.post("/v1/events", json=batch, headers={"Authorization": "Bearer sgk_wrong"}), 401)
    _error(client.post("/v1/events", json=batch, headers={"Authorization": TOKENS["events"]}), 401)  # no scheme
    assert _error(client.post("/v1/events", json=batch, headers=_auth("catalog")), 403)["type"] == "permission_error"
    _error(client.post("/v1/events", json=batch, headers=_auth("eraser")), 403)
    _error(client.put("/v1/products/p1", json={"title": "x"}, headers=_auth("events")), 403)
    _error(client.delete("/v1/products/p1"), 401)
    assert _count(client) == 0 and client.get("/v1/products/p1").status_code == 200  # reads stay public


def test_without_configured_keys_writes_say_how_to_configure_one(make_ingress, monkeypatch):
    ingress = make_ingress(keys=False)
    _use(ingress, monkeypatch)
    with TestClient(ingress.http_app, raise_server_exceptions=False) as c:
        err = _error(c.post("/v1/events", json={"events": [_event("p1", "k")]}, headers=_auth("events")), 401)
        assert "python -m core.store.keys" in err["message"] and "online.api_keys" in err["message"]


def test_private_reads_need_a_key(make_ingress, monkeypatch):
    ingress = make_ingress(public_reads=False)
    _use(ingress, monkeypatch)
    with TestClient(ingress.http_app, raise_server_exceptions=False) as c:
        _error(c.get("/v1/products/p1"), 401)
        assert c.get("/v1/products/p1", headers=_auth("eraser")).status_code == 200


# ----------------------------------------------------------------------------- products: bad input


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"price": 3}, "title"),  # missing title
        ({"title": "  "}, "title"),
        ({"title": "T", "price": "abc"}, "price"),
        ({"title": "T", "price": -1}, "price"),
        ({"title": "T", "in_stock": "maybe"}, "in_stock"),
        ({"title": "T", "attributes": {"size": {"w": 1}}}, "attributes"),
        ({"title": "T", "attributes": [1, 2, 3]}, "attributes"),
        ({"title": "T", "stock": -1}, "stock"),
        ({"title": "T", "stock": "5"}, "stock"),
        ({"title": "T", "colour": "red"}, "colour"),
        ({"title": {"en": "T"}}, "title"),
    ],
)
def test_put_validates_as_ingest_does(client, body, param):
    _error(client.put("/v1/products/n2", json=body, headers=_auth("catalog")), 422, param)
    _error(client.get("/v1/products/n2"), 404, "product_id")  # nothing written


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 422, None),
        ({"price": "free"}, 422, "price"),
        ({"stock": -2}, 422, "stock"),
        ({"in_stock": "perhaps"}, 422, "in_stock"),
        ({"title": "renamed"}, 422, "title"),  # PATCH changes stock, price, in_stock only
    ],
)
def test_patch_validates(client, body, status, param):
    _error(client.patch("/v1/products/p1", json=body, headers=_auth("catalog")), status, param)
    assert client.get("/v1/products/p1").json()["source"] == "catalog"  # nothing written


def test_unknown_and_deleted_products(client):
    _error(client.patch("/v1/products/zz", json={"stock": 1}, headers=_auth("catalog")), 404, "product_id")
    _error(client.delete("/v1/products/zz", headers=_auth("catalog")), 404, "product_id")
    _error(client.get("/v1/products/zz"), 404, "product_id")
    client.delete("/v1/products/p4", headers=_auth("catalog"))
    _error(client.patch("/v1/products/p4", json={"stock": 1}, headers=_auth("catalog")), 410, "product_id")
    r = client.put("/v1/products/p4", json={"title": "Morrow 1000 Piece Puzzle"}, headers=_auth("catalog"))
    assert r.status_code == 200 and client.get("/v1/products/p4/page").status_code == 200  # back


def test_erasure_deletes_the_users_events_from_the_database_at_once(client):
    assert client.post("/v1/events", json={"events": [_event("p3", "e1")]}, headers=_auth("events")).status_code == 200
    assert client.delete(f"/v1/users/{USER}").status_code == 401  # scope users:erase, by bearer key
    assert client.delete(f"/v1/users/{USER}", headers=_auth("events")).status_code == 403
    export = client.get(f"/v1/users/{USER}/export", headers=_auth("eraser")).json()
    assert export["store"]["store"] == "database" and [e["product_id"] for e in export["store"]["events"]] == ["p3"]
    r = client.delete(f"/v1/users/{USER}", headers=_auth("eraser"))
    assert r.status_code == 200 and r.json()["store"]["events_deleted"] == 1
    assert client.ingress.live.store.recent_events(KEY, ["view", "click", "cart", "purchase"], 0, 10) == []
    assert client.get(f"/v1/users/{USER}/export", headers=_auth("eraser")).json()["store"]["events"] == []
    # no later answer uses the history: the erased id is anonymous
    r = client.post("/v1/recommendations", json={"user_id": USER, "k": 2, "with_reasons": False})
    assert r.status_code == 200 and r.json()["cold_start"] is True


PLANTED_USERS = [
    "jane.doe@example.com",
    "+1 (415) 555-0132",
    "4111 1111 1111 1111",
    "ZQX-PLANTED-USER-7f3a9c",
    "李雷-会员",
]
PLANTED_TEXT = ["seller.amy@example.com", "13912345678", "(415) 555-2671", "5500 0000 0000 0004", "世纪大道100号"]


def _dump(store) -> str:
    """Every row of every table in the database, as text (what `pg_dump --data-only` would show)."""
    import json

    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(store.engine)
    with store.engine.connect() as conn:
        rows = {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in meta.sorted_tables}
    return json.dumps(rows, ensure_ascii=False, default=str)


def test_a_database_dump_holds_no_planted_personal_data(client, caplog):
    """Raw user ids (e-mails, phones, card-like numbers, a marker) in events and personal data in a
    product's text go in through the API; a dump of every table, the logs and the metrics hold none
    of them: users are pseudonyms, catalog text is scrubbed at the edge as ingest scrubs it."""
    import logging

    caplog.set_level(logging.DEBUG)
    events = [
        {"event": "view", "user_id": u, "product_id": "p3", "idempotency_key": f"k{n}", "request_id": f"r{n}"}
        for n, u in enumerate(PLANTED_USERS)
    ]
    r = client.post("/v1/events", json={"events": events}, headers=_auth("events"))
    assert r.status_code == 200 and r.json()["stored"] == len(PLANTED_USERS), r.text
    body = {
        "title": "Steel Bottle - seller mail seller.amy@example.com",
        "description": "Holds 500 ml. Questions: call (415) 555-2671 or 13912345678; returns to 世纪大道100号.",
        "attributes": {"capacity": "500 ml", "contact": "card 5500 0000 0000 0004"},
        "category": "Home & Kitchen > Bottles",
        "price": 12.5,
    }
    r = client.put("/v1/products/p9", json=body, headers=_auth("catalog"))
    assert r.status_code == 200, r.text
    assert "500 ml" in r.text and "[email]" in r.text  # the facts survive; the personal data does not
    for u in PLANTED_USERS:  # answers and exports by the raw id still work (the edge hashes it)
        assert client.post("/v1/recommendations", json={"user_id": u, "k": 2, "with_reasons": False}).status_code == 200
    metrics = client.get("/metrics").text
    dump = _dump(client.ingress.live.store)
    assert "p9" in dump and "Holds 500 ml" in dump and dump.count('"view"') >= len(PLANTED_USERS)  # the scan sees rows
    for needle in PLANTED_USERS + PLANTED_TEXT:
        for where, text in (("database", dump), ("logs", caplog.text), ("metrics", metrics)):
            assert needle not in text, (needle, where)
