"""A Chinese shop end to end: the Chinese sample (`data.sample.language=zh`) through the real
pipeline (prepare, splits, embeddings, FAISS, recommender, ranker, sentiment), the real Serve
graph, and its product page in real headless Chromium (screenshot under test-output/).

    pytest -q tests/e2e/test_zh_shop.py

The generator is up (the fake engine: what is under test is that it is *not* asked) with
`serve.generation.languages: [en]`, the default for the embedded SmolLM2-135M, which writes no
usable Chinese: every Chinese product's page and reasons are Chinese template copy, labelled
template, and grounded against the product's facts at serving time. Small for 2 cores.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.cluster.ray_ports import free_ports
from tests.conftest import REPO

pytestmark = pytest.mark.slow
PORT = 8126
BASE = f"http://127.0.0.1:{PORT}"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TINY_ZH = [
    "data.sample.language=zh",
    "data.sample.num_products=300",
    "data.sample.num_users=150",
    "data.sample.num_events=4500",
    "train.recommender.epochs=2",
    "train.recommender.eval_users=100",
    "train.ranker.epochs=2",
    "train.ranker.candidates=30",
    "data.index.recall_sample=50",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory, models_dir):
    import ray
    from ray import serve

    from cluster.pipeline import run_pipeline
    from core.config import load_config
    from serve.app import build_app
    from serve.catalog import load_catalog

    root = tmp_path_factory.mktemp("zh-artifacts")
    overrides = [f"artifacts.root={root}", f"models.dir={models_dir}", *TINY_ZH]
    cfg = load_config(overrides=overrides)
    assert cfg.data.currency == "CNY" and cfg.serve.generation.languages == ["en"]
    run_pipeline(cfg, echo=lambda _: None)
    ray.shutdown()
    # Serve's HAProxy binds fixed stats and metrics ports (8404, 9101) unless told: free ones, so
    # another Serve app on this machine does not make it crash.
    proxy_env = dict(zip(_HAPROXY_PORTS, map(str, free_ports(2)), strict=True))
    saved = {k: os.environ.get(k) for k in proxy_env}
    os.environ.update(proxy_env)
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app({"overrides": overrides, "engine": "fake"}), name="shopgraph", route_prefix="/")
    catalog = load_catalog(cfg)
    user = sorted(catalog.user_history, key=lambda u: (-len(catalog.user_history[u]), u))[0]
    yield catalog, user
    serve.shutdown()
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT")


def test_chinese_page_api_is_chinese_template_copy_and_grounded(live):
    from core.facts import language_of
    from ml.grounding import check
    from ml.reasons import names_evidence, primary_evidence, reason_profile
    from serve.catalog import facts_of
    from serve.content import template_page

    catalog, user = live
    pid = catalog.popular[0]
    r = httpx.get(f"{BASE}/v1/products/{pid}/page", params={"user_id": user, "wait_ms": 2000}, timeout=120)
    assert r.status_code == 200, r.text
    page = r.json()
    facts = facts_of(catalog.products[pid], catalog.currency)
    assert facts["currency"] == "CNY" and page["sections_source"] == "template"
    assert page["sections"]["description"] == template_page(facts)["description"]
    brands = sorted({p.brand for p in catalog.products.values() if p.brand})
    for text in [page["sections"]["description"], *page["sections"]["highlights"]]:
        assert language_of(text) == "zh" and check(text, facts, known_brands=brands).unsupported == [], text
    assert page["also_like"] and all(i["reason_source"] == "template" for i in page["also_like"])
    for item in page["also_like"]:
        item_facts = facts_of(catalog.products[item["product_id"]], catalog.currency)
        assert "你" in item["reason"] or "受欢迎" in item["reason"], item["reason"]
        # as serving checks a reason: against the product's facts and the evidence it names
        # ("你看过山野 L13 15升双肩包…" quotes another product, which the evidence grounds)
        evidence = [{"type": e["type"], **e["detail"]} for e in item["evidence"]]
        profile = reason_profile(evidence)
        assert primary_evidence(evidence) is None or names_evidence(item["reason"], evidence), item["reason"]
        assert check(item["reason"], item_facts, known_brands=brands, profile=profile).unsupported == [], item["reason"]
    metrics = httpx.get(f"{BASE}/metrics").text
    assert 'shopgraph_fallbacks_total{stage="language",why="zh"}' in metrics


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian chromium is not installed (scripts/setup.sh installs it with apt-get as root)",
)
def test_chinese_product_page_in_headless_chromium(live):
    from playwright.sync_api import sync_playwright

    from serve.catalog import facts_of
    from serve.content import template_page

    catalog, user = live
    pid = catalog.popular[0]
    product = catalog.products[pid]
    expected = template_page(facts_of(product, catalog.currency))
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    shot = out / "zh_product_page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        response = page.goto(f"{BASE}/shop/products/{pid}?user_id={user}", timeout=120_000)
        assert response.status == 200
        assert page.get_attribute("html", "lang") == "zh"
        assert page.inner_text("#title") == product.title
        assert page.inner_text("#description") == expected["description"]
        shown = page.locator("#highlights li").all_inner_texts()
        assert shown == expected["highlights"] and shown[0] == f"品牌：{product.brand}"
        assert "商品亮点" in page.inner_text("main") and "猜你喜欢" in page.inner_text("main")
        reasons = page.locator("#also-like .why").all_inner_texts()
        assert reasons and any("你" in r for r in reasons), reasons
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
