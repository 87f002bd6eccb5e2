"""Markup in catalog text, generated text and the URL renders as text in real headless Chromium:
the demo page (serve.page) and its error pages, asserted on the DOM (no element created from
the planted markup, the text shown as text), with the page's Content-Security-Policy applied.

    pytest -q tests/serve/test_page_browser.py

The ingress runs in-process (fake retriever, ranker and engine, as tests/serve/test_http.py)
behind uvicorn on a loopback port; what is under test is the HTML the real page code writes and
what a real browser makes of it.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote

import numpy as np
import pytest

from serve.catalog import Catalog, Product
from serve.content import CacheKey
from serve.security import CSP_PAGE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian chromium is not installed (scripts/setup.sh installs it with apt-get as root)",
)

INJ = "<img src=x onerror=alert(1)><b>injected markup</b>"
SCRIPT = "<script>alert(2)</script><b>bold</b>"
USER = "u-browser"


def _catalog() -> Catalog:
    evil = Product("p1", f"Mug {INJ}", f"Home > {INJ}", f"Brand{SCRIPT}", 12.99, {"color": INJ}, None, True, 0)
    other = Product("p2", f"Jug {SCRIPT}", f"Home > {INJ}", f"Brand{SCRIPT}", 9.5, {"capacity": "1 l"}, None, True, 1)
    return Catalog({"p1": evil, "p2": other}, {0: "p1", 1: "p2"}, {USER: np.asarray([1], np.int64)}, {}, ["p1", "p2"],
                   "test", "USD")  # fmt: skip


@pytest.fixture(scope="module")
def base_url():
    import uvicorn
    from ray import serve as ray_serve

    from core.config.serve import ServeConfig
    from serve.ingress import Ingress
    from serve.testing import fake_ranker, fake_retriever, privacy_for_tests

    ingress_cls = Ingress.func_or_class
    ingress = object.__new__(ingress_cls)
    catalog = _catalog()
    cfg = ServeConfig(generation={"enabled": False})
    pz, tombstones, privacy = privacy_for_tests()
    ingress._setup(
        cfg, catalog, fake_retriever(catalog), fake_ranker(catalog), None, "fake-1",
        pseudonymizer=pz, tombstones=tombstones, privacy=privacy,
    )  # fmt: skip
    # generated copy holding markup, as a model could write it: served from the content cache
    _, fhash = ingress._facts(catalog.products["p1"])
    generated = {"title": f"Mug {INJ}", "highlights": [INJ, f"Color: {SCRIPT}"], "description": f"A mug. {INJ}"}
    ingress.cache.put(CacheKey("p1", "page", "all", "fake-1", fhash), generated)
    saved = ray_serve.get_replica_context
    ray_serve.get_replica_context = lambda: SimpleNamespace(servable_object=ingress)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(ingress.http_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        ray_serve.get_replica_context = saved


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
        )  # fmt: skip
        yield browser
        browser.close()


def _open(browser, url: str):
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    response = page.goto(url, timeout=60_000)
    page.wait_for_load_state("load")
    return page, response, dialogs


def _no_planted_elements(page) -> None:
    for tag in ("img", "b", "script"):
        assert page.locator(tag).count() == 0, (tag, page.content()[:2000])


def test_catalog_and_generated_markup_render_as_text(base_url, browser):
    page, response, dialogs = _open(browser, f"{base_url}/shop/products/p1?user_id={USER}&debug=1")
    assert response.status == 200 and response.headers["content-security-policy"] == CSP_PAGE
    _no_planted_elements(page)
    assert page.inner_text("#title") == f"Mug {INJ}"  # the generated title, as text
    assert INJ in page.inner_text("#highlights") and SCRIPT in page.inner_text("#highlights")
    assert page.inner_text("#description") == f"A mug. {INJ}"
    assert f"Jug {SCRIPT}" in page.inner_text("#also-like")  # another product's title
    assert INJ in page.inner_text(".meta") and SCRIPT in page.inner_text(".meta")  # category and brand
    # the inline stylesheet is allowed by its hash under the CSP: the header is styled
    assert page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor") == "rgb(29, 35, 48)"
    assert dialogs == []
    page.close()


@pytest.mark.parametrize("raw", [INJ, "<img src=x onerror=alert(1)>", SCRIPT])
def test_error_pages_render_the_url_as_text(base_url, browser, raw):
    page, response, dialogs = _open(browser, f"{base_url}/shop/products/{raw}")
    assert response.status == 404 and response.headers["content-security-policy"] == CSP_PAGE
    _no_planted_elements(page)
    assert raw in page.inner_text("#message") or quote(raw, safe="/") in page.inner_text("#message")
    assert dialogs == []
    page.close()
