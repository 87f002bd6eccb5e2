"""A Chinese shop through the ingress without Ray: products from the Chinese sample shop
(`data.sample.language: zh`) beside an English one in one catalog. Each product's language comes
from its own text; a generator that does not write Chinese (serve.generation.languages: [en]) is
never asked about the Chinese products, which get Chinese template copy and reasons, labelled
template and grounded; the English product in the same catalog is still generated.

    pytest -q tests/serve/test_zh_shop.py
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from core.config.ingest import SampleConfig
from core.config.serve import ServeConfig
from core.facts import facts_language, language_of
from data.sample import generate
from ml.grounding import check
from serve.catalog import Catalog, Product, facts_of
from serve.content import template_page
from serve.engine import FakeEngine
from serve.generator import GeneratorCore
from serve.page import render_page
from serve.testing import LocalGenerator, echo_facts, fake_ranker, fake_retriever, privacy_for_tests
from tests.serve.test_stream import INGRESS

USER = "u-zh"


def _zh_products(n: int = 6) -> list[dict]:
    products, _ = generate(SampleConfig(num_products=60, num_users=20, num_events=400, language="zh"), seed=5)
    rows = [r for r in products.to_pylist() if r["in_stock"]][:n]
    for r in rows:
        r["attributes"] = dict(r["attributes"])
    return rows


def _catalog() -> tuple[Catalog, list[str]]:
    rows = _zh_products()
    products = {
        f"z{i}": Product(f"z{i}", r["title"], r["category"], r["brand"], r["price"], r["attributes"], None, True, i)
        for i, r in enumerate(rows)
    }
    products["e1"] = Product(
        "e1", "Brewly A1 Coffee Mug, 350 ml, White", "Home & Kitchen > Coffee Mugs", "Brewly", 12.99,
        {"capacity": "350 ml", "material": "ceramic"}, None, True, len(rows),
    )  # fmt: skip
    by_idx = {p.item_idx: pid for pid, p in products.items()}
    pz, _, _ = privacy_for_tests()
    history = {pz.user_key(USER): np.asarray([0, 1], np.int64)}
    brands = sorted({p.brand for p in products.values()})
    return Catalog(products, by_idx, history, {}, list(products), "test", "CNY"), brands


def _ingress(languages: list[str]):
    """(ingress, the languages of the products the engine was asked about, catalog, brands)."""
    from serve.testing import _facts

    cfg = ServeConfig(generation={"languages": languages})
    catalog, brands = _catalog()
    asked: list[str] = []

    def respond(messages):
        asked.append(facts_language(_facts(messages)))
        return echo_facts(messages)

    engine = FakeEngine(respond)
    handle = LocalGenerator(GeneratorCore(engine, cfg.generation, brands))
    ingress = object.__new__(INGRESS)
    pz, tombstones, privacy = privacy_for_tests()
    ingress._setup(
        cfg, catalog, fake_retriever(catalog), fake_ranker(catalog), handle, "fake-1",
        pseudonymizer=pz, tombstones=tombstones, privacy=privacy,
    )  # fmt: skip
    return ingress, asked, catalog, brands


def test_language_is_detected_per_product_from_its_text():
    assert language_of("森屿 A12 纯棉T恤 白色") == "zh" and language_of("128GB") == "en"
    assert language_of("李宁 Running Shoes, Road, Black") == "en"  # a Chinese brand in an English title
    for r in _zh_products():
        assert facts_language(facts_of(Product("x", r["title"], r["category"], r["brand"], r["price"], r["attributes"], None, True), "CNY")) == "zh"  # fmt: skip
    assert facts_language({"title": "Brewly A1 Coffee Mug", "attributes": {"material": "ceramic"}}) == "en"


def test_chinese_template_page_states_only_the_facts():
    rows = _zh_products()
    brands = sorted({r["brand"] for r in rows})
    for r in rows:
        facts = facts_of(Product("x", r["title"], r["category"], r["brand"], r["price"], r["attributes"], None, True), "CNY")  # fmt: skip
        page = template_page(facts)
        assert page["highlights"][0] == f"品牌：{r['brand']}" and all("：" in h for h in page["highlights"])
        assert page["description"].startswith(r["title"]) and page["description"].endswith("元。")
        assert language_of(page["description"]) == "zh"
        for text in [page["description"], *page["highlights"]]:
            assert check(text, facts, known_brands=brands).unsupported == [], text


def test_chinese_products_get_chinese_template_copy_while_english_ones_are_generated():
    async def main():
        ingress, asked, catalog, brands = _ingress(["en"])
        page, product = await INGRESS._page(ingress, "z0", USER, 2000)
        assert "zh" not in asked  # nothing Chinese went to a generator that cannot write it
        assert page.sections_source == "template" and page.note_source in ("template", "none")
        facts = facts_of(product, "CNY")
        assert page.sections.description == template_page(facts)["description"]
        assert page.sections.highlights[0].startswith("品牌：")
        zh_items = [i for i in page.also_like if i.product_id.startswith("z")]
        assert zh_items and all(i.reason_source == "template" and "你" in i.reason for i in zh_items)
        for item in zh_items:  # grounded at serving time: each reason against its own product's facts
            item_facts = facts_of(catalog.products[item.product_id], "CNY")
            assert check(item.reason, item_facts, known_brands=brands).unsupported == [], item.reason
        html = render_page(page, product, "CNY")
        assert '<html lang="zh">' in html and "商品亮点" in html and "猜你喜欢" in html
        # the English product of the same catalog still goes to the generator
        english, _ = await INGRESS._page(ingress, "e1", None, 2000)
        assert "en" in asked and "zh" not in asked and english.sections_source == "generated"
        assert '<html lang="en">' in render_page(english, catalog.products["e1"], "CNY")

    asyncio.run(main())


def test_a_generator_that_writes_chinese_is_asked():
    async def main():
        ingress, asked, _, _ = _ingress(["en", "zh"])
        await INGRESS._page(ingress, "z0", None, 2000)
        assert "zh" in asked

    asyncio.run(main())


def test_the_stream_says_why_a_chinese_page_is_template():
    from tests.serve.test_stream import _stream

    ingress, asked, _, _ = _ingress(["en"])
    events = dict(_stream(ingress, "z0"))
    assert events["sections"]["sections_source"] == "template" and events["sections"]["fallback"] == "language"
    assert events["sections"]["sections"]["highlights"][0].startswith("品牌：") and asked == []


@pytest.mark.parametrize(
    "override, key",
    [
        ("serve.generation.languages=[fr]", "serve.generation.languages"),
        ("data.sample.language=fr", "data.sample.language"),
    ],
)
def test_bad_language_settings_are_rejected_naming_the_key(override, key):
    from core.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert key in str(e.value) and "'en' or 'zh'" in str(e.value)


def test_the_demo_refuses_a_bad_language_before_any_work():
    from tests.conftest import REPO, run_cli

    # this checkout's code, whichever checkout the console script was installed from
    result = run_cli("demo", "--set", "data.sample.language=fr", timeout=300, env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "data.sample.language" in result.stderr and "'zh'" in result.stderr


def test_chinese_popular_reason_names_its_evidence():
    from ml.reasons import names_evidence, template_reason

    evidence = [{"type": "popular", "category": "服饰 > 上衣 > T恤"}]
    text = template_reason(evidence, "森屿 A12 纯棉T恤 白色")
    assert text == "这款在T恤里正受欢迎。" and names_evidence(text, evidence)
