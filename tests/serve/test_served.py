"""Online evaluation through the ingress's real FastAPI app (TestClient) and a real online database,
SQLite and PostgreSQL (tests/conftest.py `db_url`): every answer's items reach `served_items` off the
request path; a full queue or a failing database never fails a request and is counted; impressions
and clicks sent with the answer's request_id come out of `shopgraph train evaluate --online` as CTR;
the /metrics gauges are computed in the background, not per scrape.

    pytest -q tests/serve/test_served.py
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.config.online import OnlineConfig
from core.config.privacy import PrivacyConfig
from core.config.serve import ServeConfig
from core.store import Store, make_engine, upgrade
from core.store.keys import KeyRing, token_hash
from serve.live import LiveState
from serve.testing import fake_ranker, fake_retriever, privacy_for_tests
from tests.serve.test_live import KEY, SCOPES, TOKENS, USER, _auth, _catalog
from tests.serve.test_stream import INGRESS


@pytest.fixture
def make_client(db_url, monkeypatch):
    """A TestClient around one ingress over the test database; `online` overrides OnlineConfig."""
    from ray import serve as ray_serve

    monkeypatch.delenv("SHOPGRAPH_API_KEYS", raising=False)
    opened = []

    def make(**online):
        # The background writer waits a minute unless a test says otherwise: the tests write what is
        # queued themselves (write_pending, what it runs), so a slow machine cannot race them.
        online["served_log"] = {"flush_ms": 60_000, **online.get("served_log", {})}
        api_keys = [{"name": w, "sha256": token_hash(t), "scopes": SCOPES[w]} for w, t in TOKENS.items()]
        cfg = OnlineConfig(api_keys=api_keys, poll_ms=10, **online)
        engine = make_engine(db_url)
        live = LiveState(Store(engine), KeyRing.from_config(cfg), cfg, ["view", "click", "cart", "purchase"])
        catalog = _catalog()
        ingress = object.__new__(INGRESS)
        pz, tombstones, _ = privacy_for_tests()
        ingress._setup(
            ServeConfig(), catalog, fake_retriever(catalog), fake_ranker(catalog), None, "gen-1", live=live,
            pseudonymizer=pz, tombstones=tombstones, privacy=PrivacyConfig(),
        )  # fmt: skip
        monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))
        client = TestClient(ingress.http_app, raise_server_exceptions=False).__enter__()
        client.ingress = ingress
        opened.append((client, ingress, engine))
        return client

    yield make
    for client, ingress, engine in opened:
        client.__exit__(None, None, None)
        ingress.__del__()
        engine.dispose()


def _recommend(client, k: int = 2, **body) -> dict:
    r = client.post("/v1/recommendations", json={"user_id": USER, "k": k, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _metric(client, line_start: str) -> float | None:
    text = client.get("/metrics").text
    found = [ln for ln in text.splitlines() if ln.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else None


def test_recommend_then_impression_and_click_give_ctr_1_for_that_version(make_client, db_url, capsys):
    from cluster.evaluate import main

    client = make_client()
    answer = _recommend(client)
    first = answer["items"][0]
    assert client.ingress.served.write_pending() == 2  # what the background writer does every flush_ms
    rows = client.ingress.live.store.count_served()
    assert rows == 2
    events = [
        {"event": e, "user_id": USER, "product_id": first["product_id"], "request_id": answer["request_id"],
         "idempotency_key": f"{e}-1"}
        for e in ("impression", "click")
    ]  # fmt: skip
    assert client.post("/v1/events", json={"events": events}, headers=_auth("events")).status_code == 200

    assert main(["--online", "--window", "1h", "--set", f"online.database_url={db_url}"]) == 0
    report = json.loads(capsys.readouterr().out)["online"]
    version = report["by_generator_version"][answer["model_version"]]
    assert (version["served"], version["impressions"], version["clicks"], version["ctr"]) == (2, 1, 1, 1.0)
    assert report["by_recommender_version"]["t"]["ctr"] == 1.0  # the catalog's (recommender + ranker + index)
    assert report["by_reason_source"][first["reason_source"]]["ctr"] == 1.0
    assert report["unattributed"] == {"with_request_id": {}, "without_request_id": {}}


def test_served_rows_carry_position_versions_source_and_the_pseudonym(make_client):
    from sqlalchemy import select

    from core.store.models import ServedRow

    client = make_client()
    answer = _recommend(client, k=3, with_reasons=False)
    page = client.get("/v1/products/p3/page", params={"user_id": USER}).json()
    client.ingress.served.write_pending()
    with client.ingress.live.store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(ServedRow).order_by(ServedRow.id))]
    recs = [r for r in rows if r["surface"] == "recommendations"]
    assert [(r["position"], r["product_id"]) for r in recs] == [
        (n, item["product_id"]) for n, item in enumerate(answer["items"], start=1)
    ]
    assert {(r["request_id"], r["user_key"], r["recommender_version"], r["generator_version"], r["reason_source"])
            for r in recs} == {(answer["request_id"], KEY, "t", "gen-1", "none")}  # fmt: skip
    assert all(USER not in str(v) for r in rows for v in r.values())  # the raw id never reaches the table
    on_page = [r for r in rows if r["surface"] == "page"]
    assert [r["product_id"] for r in on_page] == [i["product_id"] for i in page["also_like"]]
    assert {r["request_id"] for r in on_page} == {page["request_id"]}


def test_a_failing_database_does_not_fail_the_request_and_is_counted(make_client):
    client = make_client()

    class Down:
        def add_served(self, rows):
            raise ConnectionError("database down")

    client.ingress.served.store = Down()
    assert len(_recommend(client)["items"]) == 2  # answered as usual
    assert client.ingress.served.write_pending() == 0
    assert _metric(client, 'shopgraph_served_log_rows_total{outcome="failed"}') == 2.0
    assert _metric(client, "shopgraph_served_log_queue ") == 0.0  # dropped, not retried forever


def test_a_full_queue_drops_whole_answers_and_counts_them(make_client):
    client = make_client(served_log={"queue_rows": 3})  # and no background write between the two
    _recommend(client)  # 2 rows: queued
    _recommend(client)  # 2 more do not fit: dropped, the request still answers
    assert _metric(client, 'shopgraph_served_log_rows_total{outcome="dropped"}') == 2.0
    assert _metric(client, "shopgraph_served_log_queue ") == 2.0
    client.ingress.__del__()  # replica shutdown: what waits is written
    assert client.ingress.live.store.count_served() == 2
    _recommend(client)  # after close: counted as dropped, never an error
    assert _metric(client, 'shopgraph_served_log_rows_total{outcome="dropped"}') == 4.0


def test_the_background_writer_flushes_without_being_asked(make_client):
    client = make_client(served_log={"flush_ms": 10})
    _recommend(client)
    for _ in range(200):
        if client.ingress.live.store.count_served() == 2:
            break
        asyncio.run(asyncio.sleep(0.01))
    assert client.ingress.live.store.count_served() == 2
    assert _metric(client, 'shopgraph_served_log_rows_total{outcome="written"}') == 2.0


def test_online_gauges_come_from_the_background_refresh_not_the_scrape(make_client):
    client = make_client(evaluation={"metrics_refresh_s": 3600})
    answer = _recommend(client)
    client.ingress.served.write_pending()
    item = answer["items"][0]
    events = [
        {"event": e, "user_id": USER, "product_id": item["product_id"], "request_id": answer["request_id"],
         "idempotency_key": f"g-{e}"}
        for e in ("impression", "click")
    ] + [{"event": "click", "user_id": USER, "product_id": "p4", "request_id": "nothing-served", "idempotency_key": "g-x"}]  # fmt: skip
    client.post("/v1/events", json={"events": events}, headers=_auth("events"))
    gauges = client.ingress.online_gauges
    for _ in range(500):  # the first refresh runs when the replica starts, in the background
        if gauges.refreshes:
            break
        asyncio.run(asyncio.sleep(0.01))
    before = gauges.refreshes
    assert before == 1
    client.get("/metrics")
    client.get("/metrics")
    assert gauges.refreshes == before  # a scrape reads the gauges, it does not query
    # an hour (metrics_refresh_s) later, the background task computes the report again
    with gauges.engine.begin() as conn:
        conn.execute(text("UPDATE shared_reports SET computed_at = computed_at - 3600001"))
    asyncio.run(gauges.refresh())
    assert gauges.refreshes == before + 1 and gauges.computed == 2
    labels = f'generator_version="gen-1",reason_source="{item["reason_source"]}",recommender_version="t"'
    assert _metric(client, f"shopgraph_online_ctr{{{labels}}}") == 1.0
    assert _metric(client, f"shopgraph_online_impressions{{{labels}}}") == 1.0
    assert _metric(client, 'shopgraph_online_unattributed_events{event="click",with_request_id="true"}') == 1.0


def test_bad_online_cli_input_is_a_clear_error(capsys, tmp_path):
    from cluster.evaluate import main

    for argv, says in (
        (
            ["--online", "--window", "7 days"],
            "argument --window: --window is '7 days'; use a positive number and a unit",
        ),
        (["--online", "--window", "0h"], "use a positive number and a unit"),
        (["--online", "--since", "yesterday"], "argument --since: unparsable --since 'yesterday'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and says in capsys.readouterr().err
    url = f"online.database_url=sqlite:///{tmp_path / 'empty.db'}"
    assert main(["--online", "--set", url]) == 1
    assert "has no served_items table" in capsys.readouterr().err
    assert main(["--online", "--parts", "ranker", "--set", url]) == 1
    assert "leave out --parts" in capsys.readouterr().err
    assert main(["--window", "1h", "--set", url]) == 1
    assert "apply to --online only" in capsys.readouterr().err
    assert main(["--set", "online.evaluation.window=soon"]) == 2
    assert "online.evaluation.window is 'soon'" in capsys.readouterr().err


def test_the_cli_passes_online_flags(monkeypatch):
    from typer.testing import CliRunner

    from cluster import evaluate
    from cluster.cli import app

    seen = []
    monkeypatch.setattr(evaluate, "main", lambda argv: seen.append(argv) or 0)
    result = CliRunner().invoke(app, ["train", "evaluate", "--online", "--window", "24h", "--since", "2026-12-01"])
    assert result.exit_code == 0, result.output
    assert seen == [["--since", "2026-12-01", "--window", "24h", "--online"]]


def test_a_slow_online_report_runs_niced_and_at_most_a_tenth_of_the_time(monkeypatch, tmp_path):
    """A day of served rows is seconds of CPU on a big shop: the refresh runs in a thread at the
    lowest priority, and one that took t seconds waits at least 9t (not metrics_refresh_s) before
    the next, so it never keeps a core more than 10% busy."""
    import os
    import sys
    import threading
    import time

    from prometheus_client import CollectorRegistry

    import serve.served as served

    upgrade(f"sqlite:///{tmp_path}/shop.db")
    engine = make_engine(f"sqlite:///{tmp_path}/shop.db")
    gauges = served.OnlineGauges(
        engine, OnlineConfig().evaluation.model_copy(update={"metrics_refresh_s": 1}), CollectorRegistry()
    )
    seen = {}

    def slow_report(*args):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        time.sleep(0.3)
        return {"groups": [], "unattributed": {}}

    monkeypatch.setattr("core.store.evaluation.online_report", slow_report)
    waits, real_sleep, here = [], asyncio.sleep, threading.get_ident()

    async def sleep(delay):
        # The patch is on the asyncio module: event loops that earlier tests left running in
        # other threads (Ray's, Serve's handles) call asyncio.sleep too, and must go on as before.
        if threading.get_ident() != here:
            return await real_sleep(delay)
        waits.append(delay)
        raise asyncio.CancelledError  # one round is enough

    async def main():
        monkeypatch.setattr(served.asyncio, "sleep", sleep)
        try:
            await gauges._run()
        except asyncio.CancelledError:
            pass
        monkeypatch.setattr(served.asyncio, "sleep", real_sleep)

    asyncio.run(main())
    gauges.close()
    engine.dispose()
    assert gauges.refreshes == 1 and len(waits) == 1 and waits[0] >= 9 * 0.3
    if sys.platform.startswith("linux"):
        assert seen["nice"] == 19


def test_two_ingress_replicas_share_one_online_report_per_refresh(monkeypatch, tmp_path):
    """Every ingress replica used to run a day's report every refresh; now one of them does and
    the others apply what it stored, with the time it was computed."""
    from prometheus_client import CollectorRegistry

    import serve.served as served

    url = f"sqlite:///{tmp_path}/shop.db"
    upgrade(url)
    engine = make_engine(url)
    cfg = OnlineConfig().evaluation.model_copy(update={"metrics_refresh_s": 60})
    calls = []

    def report(*args):
        calls.append(args)
        return {"groups": [], "unattributed": {"with_request_id": {"click": 3}, "without_request_id": {}}}

    monkeypatch.setattr("core.store.evaluation.online_report", report)
    replicas = [served.OnlineGauges(engine, cfg, CollectorRegistry()) for _ in range(2)]
    for gauges in replicas:
        asyncio.run(gauges.refresh())
    assert len(calls) == 1
    assert [(g.refreshes, g.computed) for g in replicas] == [(1, 1), (1, 0)]
    for g in replicas:
        assert g.unattributed.labels("click", "true")._value.get() == 3
    assert replicas[0].updated._value.get() == replicas[1].updated._value.get()
    for g in replicas:
        g.close()
    engine.dispose()
