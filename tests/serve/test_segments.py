"""Pages per shopper segment through the ingress (in-process generator, fake engine): two shoppers
of different segments get different, grounded pages of one product; the segment is in the cache
key, the JSON page, the stream and the demo page's debug line; anonymous shoppers get "all"; a
segment's page is generated on its own and falls back to the cached "all" page in the segment's
order; erasure purges what a shopper's segment produced; bad input is a 4xx.

    pytest -q tests/serve/test_segments.py
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from core.config.serve import ServeConfig
from ml.grounding import check, pdp_visible_text
from serve.catalog import Catalog, Product, facts_hash, facts_of
from serve.content import CacheKey
from serve.engine import FakeEngine
from serve.generator import GeneratorCore
from serve.http import ApiError, _api_error
from serve.testing import LocalGenerator, echo_facts, fake_ranker, fake_retriever, invent_claims, privacy_for_tests
from tests.ml.test_segments import BRANDS, PRODUCTS
from tests.serve.test_stream import INGRESS

PRIVACY = privacy_for_tests()
BARGAIN, LOYAL, NEW = "u-bargain", "u-loyal", "u-new"
HISTORY = {BARGAIN: [2, 6, 1], LOYAL: [3, 4]}  # item_idx: cheap Morrow/Hearthline; premium Brewly
BARGAIN_SEGMENT = "cat:Home & Kitchen|brand:Morrow|price:low|lang:en"
LOYAL_SEGMENT = "cat:Home & Kitchen|brand:Brewly|price:high|lang:en"


def _catalog() -> Catalog:
    products = {
        f"p{i}": Product(
            f"p{i}", r["title"], r["category"], r["brand"], r["price"], dict(r["attributes"]), None, True, i
        )
        for i, r in enumerate(PRODUCTS)
    }
    history = {PRIVACY[0].user_key(u): np.asarray(items, np.int64) for u, items in HISTORY.items()}
    return Catalog(products, {i: f"p{i}" for i in range(len(PRODUCTS))}, history, {}, list(products), "test", "USD")


def _ingress(respond=echo_facts, serve: dict | None = None, privacy=PRIVACY):
    cfg = ServeConfig(**(serve or {}))
    catalog = _catalog()
    ingress = object.__new__(INGRESS)
    handle = LocalGenerator(GeneratorCore(FakeEngine(respond), cfg.generation, BRANDS))
    pz, tombstones, privacy_cfg = privacy
    ingress._setup(
        cfg, catalog, fake_retriever(catalog), fake_ranker(catalog), handle, "fake-1",
        pseudonymizer=pz, tombstones=tombstones, privacy=privacy_cfg,
    )  # fmt: skip
    return ingress


def _page(ingress, user=None, wait="2000", accept_language=None, product="p0"):
    return asyncio.run(INGRESS._page(ingress, product, user, wait, accept_language))[0]


def _grounded(page) -> None:
    facts = facts_of(_catalog().products[page.product_id], "USD")
    shown = pdp_visible_text(page.sections.model_dump())
    assert not check(shown, facts, known_brands=BRANDS).unsupported, shown


@pytest.mark.parametrize("source", ["generated", "template"])
def test_two_segments_get_different_grounded_pages_of_one_product(source):
    ingress = _ingress(echo_facts if source == "generated" else invent_claims)
    bargain, loyal = _page(ingress, BARGAIN), _page(ingress, LOYAL)
    assert (bargain.segment, loyal.segment) == (BARGAIN_SEGMENT, LOYAL_SEGMENT)
    assert bargain.sections_source == loyal.sections_source == source
    assert bargain.sections_segment == BARGAIN_SEGMENT and loyal.sections_segment == LOYAL_SEGMENT
    # the bargain hunter reads the price first; the brand's loyal shopper does not
    assert bargain.sections.highlights[0] == "Price: 12.99 USD" and "Price: 12.99 USD" not in loyal.sections.highlights
    assert (bargain.sections.highlights, bargain.sections.description) != (
        loyal.sections.highlights,
        loyal.sections.description,
    )
    _grounded(bargain)
    _grounded(loyal)


def test_the_generator_prompt_carries_the_segment_profile_and_all_the_trained_prompt():
    seen = []

    def respond(messages):
        seen.append(messages[-1]["content"])
        return echo_facts(messages)

    ingress = _ingress(respond)
    _page(ingress, LOYAL)
    _page(ingress)
    page_prompts = [p for p in seen if "highlights" in p]
    assert any('"favourite_brand": "Brewly"' in p and '"price_band": "high"' in p for p in page_prompts)
    assert any("<profile>" not in p for p in page_prompts)  # the anonymous page: no profile block


def test_the_segment_is_in_the_cache_key_and_anonymous_or_new_shoppers_get_all():
    ingress = _ingress()
    fhash = facts_hash(_catalog().products["p0"], "USD")
    for user, segment in ((LOYAL, LOYAL_SEGMENT), (None, "all"), (NEW, "all"), ("", "all")):
        page = _page(ingress, user)
        assert page.segment == segment
        assert ingress.cache.peek(CacheKey("p0", "page", segment, "fake-1", fhash)) is not None
    again = _page(ingress, LOYAL)
    assert again.sections_source == "cached" and again.segment == LOYAL_SEGMENT


def test_accept_language_sets_the_language_of_a_known_shopper_only():
    ingress = _ingress()
    assert _page(ingress, LOYAL, accept_language="zh-CN,zh;q=0.9").segment == LOYAL_SEGMENT.replace(
        "lang:en", "lang:zh"
    )
    assert _page(ingress, None, accept_language="zh-CN").segment == "all"


def test_segments_off_serves_everyone_the_all_page():
    ingress = _ingress(serve={"segments": {"enabled": False}})
    assert {_page(ingress, u).segment for u in (BARGAIN, LOYAL, None)} == {"all"}


def test_a_segment_without_its_own_page_gets_the_cached_all_page_in_its_order_while_its_own_is_made():
    ingress = _ingress()
    fhash = facts_hash(_catalog().products["p0"], "USD")
    precomputed = {"title": "Brewly T76 Coffee Mug", "highlights": ["Color: green", "Capacity: 350 ml"],
                   "description": "A green ceramic mug that holds 350 ml."}  # fmt: skip
    ingress.cache.put(CacheKey("p0", "page", "all", "fake-1", fhash), precomputed)  # as the batch job's pages are

    async def main():  # one event loop: the queued generation runs on it
        page, _ = await INGRESS._page(ingress, "p0", BARGAIN)
        while len(ingress.queue) or ingress.queue.running:
            await asyncio.sleep(0.01)
        own, _ = await INGRESS._page(ingress, "p0", BARGAIN)
        return page, own

    page, own = asyncio.run(main())
    assert page.sections_source == "cached" and page.segment == BARGAIN_SEGMENT and page.sections_segment == "all"
    assert page.sections.highlights == ["Price: 12.99 USD", "Capacity: 350 ml", "Color: green"]
    assert page.sections.description == precomputed["description"]
    assert own.sections_source == "cached" and own.sections_segment == BARGAIN_SEGMENT


def _stream(ingress, user=None, accept_language=None):
    async def run():
        response = await INGRESS.product_page_stream(ingress, "p0", user, None, accept_language)
        return "".join([chunk async for chunk in response.body_iterator])

    events = []
    for block in asyncio.run(run()).split("\n\n"):
        if block:
            name, data = block.split("\n")
            events.append((name[7:], json.loads(data[6:])))
    return dict(events)


def test_the_stream_says_the_segment_and_writes_for_it():
    ingress = _ingress()
    loyal, bargain, anonymous = _stream(ingress, LOYAL), _stream(ingress, BARGAIN), _stream(ingress)
    assert loyal["start"]["segment"] == LOYAL_SEGMENT and anonymous["start"]["segment"] == "all"
    assert bargain["sections"]["sections_segment"] == BARGAIN_SEGMENT
    assert bargain["sections"]["sections"]["highlights"][0] == "Price: 12.99 USD"
    assert bargain["sections"]["sections"]["highlights"] != loyal["sections"]["sections"]["highlights"]
    # the JSON page finds what the stream cached, under the same segment
    assert _page(ingress, BARGAIN, wait=None).sections_source == "cached"


def test_the_demo_page_shows_the_segment_only_in_debug():
    ingress = _ingress()

    async def run(debug):
        return (await INGRESS.shop_page(ingress, "p0", LOYAL, debug, None, None)).body.decode()

    assert "segment cat:Home &amp; Kitchen|brand:Brewly" in asyncio.run(run("1"))
    assert 'id="debug"' not in asyncio.run(run(None)) and "Brewly|" not in asyncio.run(run(None))


@pytest.mark.parametrize("header", ["en;q=abc", "zh_CN", "<b>"])
def test_a_malformed_accept_language_is_a_422_on_every_page_route(header):
    ingress = _ingress()
    for call in (
        lambda: INGRESS._page(ingress, "p0", LOYAL, None, header),
        lambda: INGRESS.product_page_stream(ingress, "p0", None, None, header),
    ):
        with pytest.raises(ApiError) as e:
            asyncio.run(call())
        body = json.loads(asyncio.run(_api_error(None, e.value)).body)
        assert body["error"]["code"] == 422 and body["error"]["param"] == "accept-language"
        assert "Accept-Language" in body["error"]["message"]
    html = asyncio.run(INGRESS.shop_page(ingress, "p0", LOYAL, None, None, header))
    assert html.status_code == 422 and "Accept-Language" in html.body.decode()


@pytest.mark.parametrize(("user", "status"), [("u" * 600, 422)])
def test_a_bad_user_id_is_refused_before_any_segment_work(user, status):
    with pytest.raises(ApiError) as e:
        _page(_ingress(), user)
    assert e.value.status == status and e.value.param == "user_id"


def test_erasing_a_shopper_purges_their_segment_page_and_makes_them_all():
    ingress = _ingress(privacy=privacy_for_tests())  # its own tombstones: the other tests' shoppers stay
    fhash = facts_hash(_catalog().products["p0"], "USD")
    assert _page(ingress, LOYAL).segment == LOYAL_SEGMENT
    key = CacheKey("p0", "page", LOYAL_SEGMENT, "fake-1", fhash)
    assert ingress.cache.peek(key) is not None
    exported = asyncio.run(INGRESS.export_user(ingress, LOYAL))
    assert any(c["kind"] == "page" for c in exported["cached_copy"])
    erased = asyncio.run(INGRESS.erase_user(ingress, LOYAL))
    assert erased["purged"]["cache_entries"] >= 1 and ingress.cache.peek(key) is None
    assert _page(ingress, LOYAL).segment == "all"


def test_the_accept_language_header_through_http(monkeypatch):
    from types import SimpleNamespace

    from fastapi.testclient import TestClient
    from ray import serve as ray_serve

    ingress = _ingress()
    monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))
    with TestClient(ingress.http_app, raise_server_exceptions=False) as client:
        page = client.get("/v1/products/p0/page", params={"user_id": LOYAL}, headers={"Accept-Language": "zh-CN"})
        assert page.status_code == 200 and page.json()["segment"].endswith("|lang:zh")
        assert client.get("/v1/products/p0/page").json()["segment"] == "all"
        for path in ("/v1/products/p0/page", "/v1/products/p0/page/stream"):
            r = client.get(path, headers={"Accept-Language": "en;q=abc"})
            assert r.status_code == 422 and r.json()["error"]["param"] == "accept-language", r.text
            r = client.get(path, headers={"Accept-Language": "en," * 300})  # over the schema's 512 characters
            assert r.status_code == 422 and r.json()["error"]["code"] == 422, r.text
        stream = client.get("/v1/products/p0/page/stream", params={"user_id": BARGAIN}).text
        assert f'"segment": "{BARGAIN_SEGMENT}"' in stream
        assert client.get("/shop/products/p0", headers={"Accept-Language": "zh_CN"}).status_code == 422


def test_a_segment_page_is_shared_through_redis_and_an_erasure_through_another_replica_purges_it(redis_server):
    from serve.content import SharedCache

    privacy = privacy_for_tests()  # one tombstone store, as replicas of one deployment share
    fhash = facts_hash(_catalog().products["p0"], "USD")
    key = CacheKey("p0", "page", LOYAL_SEGMENT, "fake-1", fhash)

    async def main():
        shared = {"cache": {"redis_url": redis_server.url, "retry_after_s": 0.5}}
        a, b = _ingress(serve=shared, privacy=privacy), _ingress(serve=shared, privacy=privacy)
        made, _ = await INGRESS._page(a, "p0", LOYAL, "2000")
        found, _ = await INGRESS._page(b, "p0", LOYAL)  # b never generated it
        in_redis = SharedCache(redis_server.url).get(key) is not None
        erased = await INGRESS.erase_user(b, LOYAL)
        return made, found, in_redis, erased, b.cache.shared_hits

    made, found, in_redis, erased, b_shared_hits = asyncio.run(main())
    assert made.sections_source == "generated" and made.segment == LOYAL_SEGMENT and in_redis
    assert found.sections_source == "cached" and found.sections == made.sections and b_shared_hits >= 1
    assert erased["purged"]["cache_entries"] >= 1 and SharedCache(redis_server.url).get(key) is None
