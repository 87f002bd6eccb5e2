"""serve.reload without Serve: committed directories watched by their manifests, swapped whole,
a failed load keeping the old version; the content cache's replacement of superseded entries;
catalog writes reaching a replica's catalog in the background (real SQLite and PostgreSQL).

    pytest -q tests/serve/test_reload.py
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from core.config import load_config
from core.manifest import staged_dir, write_manifest
from serve.content import CacheKey, ContentCache
from serve.reload import Reloader, manifest_stamp


def _commit(final, value: str) -> None:
    """A committed directory holding one file, written as every stage writes (core.manifest)."""
    with staged_dir(final) as staging:
        (staging / "value.json").write_text(json.dumps(value))
        write_manifest(staging, {"stage": "test"})


def _read(final) -> str:
    from core.manifest import verify_dir

    verify_dir(final)
    return json.loads((final / "value.json").read_text())


def test_a_new_commit_is_loaded_and_swapped_in_and_a_broken_one_keeps_the_old(tmp_path, caplog):
    d = tmp_path / "index"
    _commit(d, "v1")
    served = {"value": _read(d)}
    r = Reloader(interval_s=0.05)
    w = r.watch("thing", [d], lambda: _read(d), lambda v: served.update(value=v))

    async def scenario():
        assert await r.check() == []  # nothing changed: nothing loaded
        _commit(d, "v2")
        assert await r.check() == ["thing"] and served["value"] == "v2"
        _commit(d, "v3")
        (d / "value.json").write_text('"truncated')  # size no longer matches the manifest
        with caplog.at_level(logging.WARNING, logger="shopgraph.serve"):
            assert await r.check() == []
        assert served["value"] == "v2" and w.failures == 1 and "value.json" in w.last_error
        assert "old one keeps serving" in caplog.text
        assert await r.check() == []  # the same broken commit is not retried at every check
        _commit(d, "v4")  # the next commit is
        assert await r.check() == ["thing"] and served["value"] == "v4"

    asyncio.run(scenario())
    assert w.status()["reloads"] == 2 and w.failed is None


def test_a_directory_being_replaced_or_missing_is_waited_for(tmp_path):
    import shutil

    d = tmp_path / "content"
    served = []
    r = Reloader(interval_s=0.05)
    w = r.watch("content", [d], lambda: _read(d), served.append)
    assert manifest_stamp([d]) == (None,)

    async def scenario():
        assert await r.check() == []  # no content yet, none now: nothing to do
        _commit(d, "first")
        assert await r.check() == ["content"] and served == ["first"]
        shutil.rmtree(d)  # what staged_dir does just before it renames the new one in
        assert await r.check() == [] and w.failures == 0  # not a failed load: nothing to load yet
        _commit(d, "second")
        assert await r.check() == ["content"] and served == ["first", "second"]

    asyncio.run(scenario())


def test_the_background_task_reloads_within_the_poll_interval(tmp_path):
    d = tmp_path / "index"
    _commit(d, "v1")
    served = {"value": "v1"}
    r = Reloader(interval_s=0.02)
    r.watch("thing", [d], lambda: _read(d), lambda v: served.update(value=v))

    async def scenario():
        r.start()
        r.start()  # idempotent: one task
        _commit(d, "v2")
        for _ in range(200):
            if served["value"] == "v2":
                break
            await asyncio.sleep(0.01)
        r._task.cancel()

    asyncio.run(scenario())
    assert served["value"] == "v2"


def test_nothing_to_refresh_starts_no_task():
    async def scenario():
        r = Reloader(interval_s=0.05)
        r.start()
        return r._task

    assert asyncio.run(scenario()) is None


def test_refreshed_content_replaces_the_entries_it_supersedes():
    cache = ContentCache(100)
    old = CacheKey("p1", "page", "all", "m1", "facts-old")
    other = CacheKey("p2", "page", "all", "m1", "facts-2")
    reason = CacheKey("p1", "reason", "seg", "m1", "facts-old")
    segment = CacheKey("p1", "page", "price:low", "m1", "facts-old")  # a shopper segment's page (ml.segments)
    for key in (old, other, reason, segment):
        cache.put(key, key.product_id)
    new = CacheKey("p1", "page", "all", "m1", "facts-new")
    assert cache.replace([(new, {"title": "new"})]) == 2
    assert cache.peek(old) is None and cache.peek(segment) is None and cache.peek(new) == {"title": "new"}
    assert cache.peek(other) == "p2" and cache.peek(reason) == "p1"  # other products and kinds stay


def test_reload_poll_ms_is_validated():
    assert load_config().serve.reload_poll_ms == 1000
    from core.config import ConfigError

    with pytest.raises(ConfigError, match=r"serve.reload_poll_ms: Input should be greater than or equal to 50"):
        load_config(overrides=["serve.reload_poll_ms=0"])
    with pytest.raises(ConfigError, match=r"serve.reload_poll_ms: .*integer"):
        load_config(overrides=["serve.reload_poll_ms=soon"])


# ----------------------------------------------------------------------------- catalog in the background


def test_catalog_writes_reach_a_replica_catalog_in_the_background(db_url):
    """What the retriever and ranker replicas run: no request needed, one query per poll."""
    from core.config.online import OnlineConfig
    from core.store import Store, make_engine
    from core.store.keys import KeyRing
    from serve.catalog import Catalog, Product
    from serve.live import LiveState

    engine = make_engine(db_url)
    cfg = OnlineConfig(poll_ms=10)
    live = LiveState(Store(engine), KeyRing.from_config(cfg), cfg, ["view"])
    p1 = Product("p1", "Brewly T76 Coffee Mug", "Mugs", "Brewly", 10.0, {}, None, True, item_idx=0)
    catalog = Catalog({"p1": p1}, {0: "p1"}, {}, {}, ["p1"], "t", "USD")
    writer = Store(engine)
    changed: list[str] = []
    r = Reloader(interval_s=1.0, live=live, catalog=catalog, on_change=changed.append)

    async def until(condition) -> bool:
        for _ in range(300):
            if condition():
                return True
            await asyncio.sleep(0.01)
        return False

    async def scenario():
        r.start()
        new = {"product_id": "n1", "title": "Brewly T80 Travel Mug", "category": "Mugs", "brand": "Brewly"}
        await asyncio.to_thread(writer.put_product, {**new, "price": 14.5, "in_stock": True, "attributes": {}})
        assert await until(lambda: "n1" in catalog.products)
        assert catalog.products["n1"].item_idx is None  # a new item: reachable by text only
        await asyncio.to_thread(writer.delete_product, "p1", p1.as_record())
        assert await until(lambda: "p1" in live.deleted)
        r._task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
    assert {"n1", "p1"} <= set(changed) and live.polls >= 2


# ----------------------------------------------------------------------------- the ingress's content


def test_the_ingress_reloads_refreshed_content_and_serves_it(tmp_path):
    """A refresh regenerated a product's reason after its price changed: the ingress serves the
    new text under the new facts, and the entry for the old facts is gone from its cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serve.catalog import facts_hash
    from serve.content import content_dir, read_precomputed
    from serve.schemas import RecommendationRequest
    from tests.serve.test_stream import INGRESS, USER, _ingress

    ingress = _ingress(generator=False)
    catalog = ingress.catalog
    req = RecommendationRequest(user_id=USER, k=1, with_reasons=True)
    scored = asyncio.run(ingress._recommend(req, 1e12))[0][0]
    _, key = ingress._reason_input(scored, np.asarray([1], np.int64))
    pid = scored.product_id
    root = content_dir(load_config(overrides=[f"artifacts.root={tmp_path}"]))

    def commit(text: str) -> None:
        row = {"product_id": [pid], "key": [key], "model_version": ["fake-1"]}
        row |= {"facts_hash": [facts_hash(catalog.products[pid], "USD")], "text": [text]}
        with staged_dir(root) as staging:
            (staging / "reasons").mkdir()
            pq.write_table(pa.table(row), staging / "reasons" / "0.parquet")
            write_manifest(staging, {"stage": "test"})

    commit("Picked for you from your favourite mugs.")
    ingress.cache.replace(read_precomputed(root, "fake-1", catalog))
    ingress.reloader = Reloader(interval_s=0.05)
    ingress.reloader.watch("content", [root], lambda: read_precomputed(root, "fake-1", catalog), ingress._use_content)

    def reason() -> tuple[str, str]:
        item = asyncio.run(INGRESS.recommendations(ingress, req)).items[0]
        return item.reason_source, item.reason

    assert reason() == ("cached", "Picked for you from your favourite mugs.")
    catalog.products[pid].price = 99.0  # the shop changed the price (serve.live applies it so:)
    ingress._forget(pid)
    commit("Picked for you; now 99 USD.")  # the refresh regenerated it for the new facts
    assert asyncio.run(ingress.reloader.check()) == ["content"]
    assert reason() == ("cached", "Picked for you; now 99 USD.")
    assert ingress.precomputed == 1 and len(ingress.cache) == 1  # the old facts' entry was dropped


def test_a_database_that_fails_does_not_hold_a_reload_back(tmp_path):
    class DownLive:
        cfg, polls = SimpleNamespace(poll_ms=10), 0

        async def sync(self, catalog, on_change=None, force=False):
            raise ConnectionError("database unreachable")

    d = tmp_path / "index"
    _commit(d, "v1")
    served = {"value": "v1"}
    r = Reloader(interval_s=0.05, live=DownLive(), catalog=None)
    r.watch("thing", [d], lambda: _read(d), lambda v: served.update(value=v))
    _commit(d, "v2")
    assert asyncio.run(r.check()) == ["thing"] and served["value"] == "v2"
