"""The content cache shared by ingress replicas through a real Redis (serve.content.SharedCache):
copy generated through one replica is a hit through another, erasure through any replica purges
it, and Redis down costs nothing but the sharing — every request still answers.

    pytest -q tests/serve/test_shared_cache.py
"""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from core.config.serve import CacheConfig
from serve.content import CacheKey, ContentCache, SharedCache, shared_cache
from serve.schemas import RecommendationRequest
from serve.testing import echo_facts
from tests.serve.test_stream import INGRESS, PRIVACY, USER, _ingress

KEY = CacheKey("p:1", "page", "cat:Shoes|price:high", "model-1", "f" * 16)  # ':' and '|' in ids and segments


def _replica(url: str, **kw):
    return _ingress(echo_facts, privacy=PRIVACY, cache={"redis_url": url, "retry_after_s": 0.5, **kw})


async def _drain(ingress):
    while len(ingress.queue) or ingress.queue.running:
        await asyncio.sleep(0.01)


def test_a_value_put_through_one_cache_is_found_through_another(redis_server):
    a = ContentCache(10, SharedCache(redis_server.url))
    b = ContentCache(10, SharedCache(redis_server.url))
    sections = {"title": "Tasse 咖啡杯", "highlights": ["Capacity: 350 ml"], "description": None}
    a.put(KEY, sections)
    assert b.get(KEY) == sections and (b.hits, b.shared_hits, b.misses) == (1, 1, 0)
    assert b.get(KEY) == sections and b.shared_hits == 1  # the second time from b's own LRU
    assert b.get(CacheKey("p:1", "page", "cat:Shoes", "model-1", "f" * 16)) is None  # another segment: a miss
    a.put(CacheKey("p2", "page", "all", "m", "h"), {"x": 1}, share=False)  # precomputed: each replica loads it
    assert b.get(CacheKey("p2", "page", "all", "m", "h")) is None
    assert a.pop(KEY) == 1 and ContentCache(10, SharedCache(redis_server.url)).get(KEY) is None


def test_entries_expire_with_their_ttl(redis_server):
    a = ContentCache(0, SharedCache(redis_server.url, ttl_s=1))  # no local LRU: every get asks Redis
    a.put(KEY, "text")
    assert a.get(KEY) == "text"
    time.sleep(2.1)
    assert a.get(KEY) is None


def test_redis_down_is_skipped_quickly_and_used_again_when_back(redis_server):
    shared = SharedCache(redis_server.url, timeout_ms=50, retry_after_s=0.5)
    cache = ContentCache(10, shared)
    redis_server.stop()
    t0 = time.monotonic()
    cache.put(KEY, "text")  # kept locally, Redis skipped
    assert cache.get(KEY) == "text" and shared.errors == 1 and shared.skipping()
    assert ContentCache(10, shared).get(KEY) is None  # skipped: no second wait on a dead Redis
    assert shared.errors == 1 and time.monotonic() - t0 < 5
    redis_server.start()
    time.sleep(0.6)
    cache.put(KEY, "again")
    assert ContentCache(10, SharedCache(redis_server.url)).get(KEY) == "again"


def test_a_page_generated_through_one_replica_is_a_cache_hit_through_the_other(redis_server):
    async def main():
        a, b = _replica(redis_server.url), _replica(redis_server.url)
        generated, _ = await INGRESS._page(a, "p1", None, "2000")
        cached, _ = await INGRESS._page(b, "p1", None)
        return a, b, generated, cached

    a, b, generated, cached = asyncio.run(main())
    assert generated.sections_source == "generated"
    assert cached.sections_source == "cached" and cached.sections == generated.sections
    assert b.generator.core.engine.calls == 0  # replica b never generated it
    assert b.cache.shared_hits >= 1
    metrics = asyncio.run(INGRESS.metrics(b)).body.decode()
    assert f'shopgraph_content_cache{{what="shared_hits"}} {float(b.cache.shared_hits)}' in metrics


def test_with_redis_down_every_request_still_answers(redis_server):
    async def main():
        a = _replica(redis_server.url)
        redis_server.stop()
        page, _ = await INGRESS._page(a, "p1", USER, "2000")
        recs = await INGRESS.recommendations(a, RecommendationRequest(user_id=USER, k=2, wait_ms=2000))
        ready = await INGRESS.readyz(a)
        return a, page, recs, ready

    a, page, recs, ready = asyncio.run(main())
    assert page.sections_source == "generated" and page.sections.description  # generated, kept in the local LRU
    assert len(recs.items) == 2 and recs.degraded == []
    assert a.cache.shared.errors >= 1
    import json

    assert json.loads(ready.body)["shared_cache"] == "skipped" and ready.status_code == 200


def test_erasure_through_one_replica_purges_copy_made_through_another(redis_server):
    async def main():
        a, b = _replica(redis_server.url), _replica(redis_server.url)
        page, _ = await INGRESS._page(a, "p1", USER, "2000")  # the note is made from USER's history
        await _drain(a)
        erased = await INGRESS.erase_user(b, USER)  # b never served USER
        return a, page, erased

    a, page, erased = asyncio.run(main())
    assert page.note_source == "generated" and page.personalized_note
    assert erased["purged"]["cache_entries"] >= 1
    probe = SharedCache(redis_server.url)
    assert not [k for k in probe.client.keys("shopgraph:*") if ":u:" in k]  # the owner note is gone
    # nothing made from USER's history is left in Redis
    user_keys = [k for keys in a._user_keys.values() for k in keys]
    assert user_keys and all(probe.get(k) is None for k in user_keys)


def test_erasure_with_redis_down_is_a_503_that_can_be_retried(redis_server):
    from serve.http import ApiError

    async def main():
        b = _replica(redis_server.url)
        redis_server.stop()
        with pytest.raises(ApiError) as e:
            await INGRESS.erase_user(b, USER)
        redis_server.start()
        return e.value, await INGRESS.erase_user(b, USER)

    error, erased = asyncio.run(main())
    assert error.status == 503 and "retry" in error.message
    assert erased["erased"]


@pytest.mark.parametrize(
    "bad",
    [
        {"redis_url": "http://cache:6379"},
        {"redis_url": "redis://:secret@cache:6379/0"},
        {"redis_url": "redis://"},
        {"timeout_ms": 0},
        {"key_prefix": "a b"},
        {"ttl_s": 0},
        {"redis": "redis://x"},
    ],
)
def test_bad_cache_config_is_refused_clearly(bad):
    with pytest.raises(ValidationError) as e:
        CacheConfig(**bad)
    assert next(iter(bad)) in str(e.value)


def test_no_redis_url_means_the_local_lru_only():
    assert shared_cache(CacheConfig()) is None
