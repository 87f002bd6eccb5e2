"""Serving pieces without Ray: the content cache, grounding of generated copy, template copy."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.config.serve import GenerationConfig
from serve.catalog import Product
from serve.content import CacheKey, ContentCache, template_page
from serve.engine import FakeEngine
from serve.generator import GeneratorCore, ground_page
from serve.recommend import template_reason
from serve.testing import MUG_FACTS as FACTS
from serve.testing import echo_facts, invent_claims

PROFILE = {
    "recent_items": ["Hearthline V33 Coffee Mug"],
    "top_categories": ["Home & Kitchen > Coffee Mugs"],
    "top_brands": ["Hearthline"],
}


def test_cache_is_lru_and_keyed_by_facts_hash():
    cache = ContentCache(capacity=2)
    k1 = CacheKey("p1", "page", "all", "m1", "hash-a")
    cache.put(k1, {"x": 1})
    assert cache.get(k1) == {"x": 1}
    # Facts changed -> new hash -> the old entry is never found (stale content is never served).
    assert cache.get(CacheKey("p1", "page", "all", "m1", "hash-b")) is None
    # A new model version invalidates too.
    assert cache.get(CacheKey("p1", "page", "all", "m2", "hash-a")) is None
    cache.put(CacheKey("p2", "page", "all", "m1", "h"), 2)
    cache.put(CacheKey("p3", "page", "all", "m1", "h"), 3)
    assert cache.get(k1) is None and len(cache) == 2
    assert cache.hits == 1 and cache.misses == 3


def test_generated_page_is_grounded_and_hallucinations_removed():
    core = GeneratorCore(FakeEngine(invent_claims), GenerationConfig())
    out = asyncio.run(core.page(FACTS))
    # Every sentence of the invented description is unsupported: the page falls back.
    assert out["sections"] is None and "unsupported" in out["error"]
    good = asyncio.run(GeneratorCore(FakeEngine(echo_facts), GenerationConfig()).page(FACTS))
    assert good["sections"]["title"] == FACTS["title"]
    assert "material: ceramic" in good["sections"]["highlights"]


def test_invalid_json_page_falls_back():
    out = ground_page("{not json", FACTS, [])
    assert out["sections"] is None and "JSON" in out["error"]
    out = ground_page(json.dumps({"title": "x", "highlights": []}), FACTS, [])
    assert out["sections"] is None


def test_reason_keeps_profile_mentions_and_drops_invented_claims():
    core = GeneratorCore(FakeEngine(invent_claims), GenerationConfig())
    assert asyncio.run(core.reason(FACTS, PROFILE))["text"] is None  # "weighs 12 kg", "titanium"
    from ml.grounding import check

    brands = ["Hearthline", "Brewly", "Morrow"]
    assert not check(
        "Since you like Hearthline mugs, this Brewly mug is a good match.", FACTS, known_brands=brands, profile=PROFILE
    ).unsupported
    assert check("This Morrow mug is 500 ml.", FACTS, known_brands=brands, profile=PROFILE).unsupported


def test_engine_failure_propagates_for_the_ingress_to_fall_back():
    core = GeneratorCore(FakeEngine(echo_facts, fail=True), GenerationConfig())
    with pytest.raises(RuntimeError):
        asyncio.run(core.reason(FACTS, PROFILE))


def test_template_copy_states_only_facts():
    page = template_page(FACTS)
    from ml.grounding import check

    text = " ".join([page["title"], *page["highlights"], page["description"]])
    assert not check(text, FACTS).unsupported
    product = Product("p1", FACTS["title"], FACTS["category"], "Brewly", 12.99, FACTS["attributes"], None, True)
    assert (
        template_reason(product, [{"type": "same_brand", "brand": "Brewly"}])
        == "It is from Brewly, a brand you have chosen before."
    )
    assert template_reason(product, [{"type": "popular", "category": FACTS["category"]}]) == (
        "It is popular with shoppers right now in Coffee Mugs."
    )
    assert template_reason(product, []) == f"Recommended for you: {FACTS['title']}."
