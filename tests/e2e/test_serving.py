"""The whole serving graph with the real vLLM CPU engine and the embedded model, plus the demo
product page in real headless Chromium (screenshot saved under test-output/)."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
PORT = 8124
BASE = f"http://127.0.0.1:{PORT}"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ENGINE: dict[str, str] = {}  # the fixture's Ray metrics URL


@pytest.fixture(scope="module")
def live(serving_artifacts):
    import ray
    from ray import serve

    from core.config import load_config
    from serve.app import build_app
    from serve.catalog import load_catalog

    overrides = [
        *serving_artifacts,
        "serve.budgets.reasons_ms=120000",
        "serve.budgets.page_ms=120000",
        "serve.budgets.request_deadline_ms=240000",
        "serve.budgets.max_wait_ms=60000",  # these tests wait for generation (`wait_ms`); the shop never does
        "serve.generation.max_reasons_per_request=2",
    ]
    from tests.serve.test_ray_metrics import init_ray_exporting_metrics

    metrics_url = init_ray_exporting_metrics()  # Ray's endpoint: the engine's metrics (ray_vllm_*)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app({"overrides": overrides, "engine": "vllm"}), name="shopgraph", route_prefix="/")
    catalog = load_catalog(load_config(overrides=overrides))
    user = sorted(catalog.user_history, key=lambda u: (-len(catalog.user_history[u]), u))[0]
    ENGINE["metrics_url"] = metrics_url
    _wait_for_the_generator()
    yield catalog, user
    serve.shutdown()
    ray.shutdown()


def _wait_for_the_generator(timeout_s: float = 180.0) -> None:
    """Until the ingress's health probe reports the generator `ok`, as a shop waits for readiness before
    sending traffic. Right after start-up, on a busy box, vLLM's first probes can time out: the stage is
    then `busy` or `down`, and reasons are templated without asking it (correct, but not what these
    tests are about)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        last = httpx.get(f"{BASE}/readyz", timeout=30).json()
        if last.get("generator") == "ok":
            return
        time.sleep(1.0)
    raise AssertionError(f"the generator was not ready within {timeout_s:.0f} s: {last}")


def test_recommendations_with_reasons_generated_by_vllm(live):
    from ml.reasons import reason_profile

    catalog, user = live
    r = httpx.post(f"{BASE}/v1/recommendations", json={"user_id": user, "k": 8, "wait_ms": 60000}, timeout=300)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 8
    assert all(i["reason"] for i in items)
    # Only an item whose evidence gives the generator something to explain is sent to it (no evidence,
    # or "popular": the template says it); the first max_reasons_per_request (2) of those are.
    eligible = [i for i in items if reason_profile([{"type": e["type"], **e["detail"]} for e in i["evidence"]])]
    assert eligible, [i["evidence"] for i in items]
    sent = eligible[:2]
    # vLLM answered them: each reason is either shown or was judged by the gates and counted under
    # the gate's why (counted only after the engine returned; a budget or a dead engine is not)
    judged = _fallbacks("generate_reason")
    generated = sum(i["reason_source"] == "generated" for i in sent)
    why = {"degraded": r.json().get("degraded"), "readyz": httpx.get(f"{BASE}/readyz", timeout=30).json()}
    assert generated + sum(judged.values()) >= len(sent), ([i["reason_source"] for i in sent], judged, why)


def _fallbacks(stage: str) -> dict[str, float]:
    """why -> count of `shopgraph_fallbacks_total` for `stage`, from /metrics."""
    import re

    text = httpx.get(f"{BASE}/metrics").text
    pattern = r'shopgraph_fallbacks_total\{stage="' + stage + r'",why="([^"]+)"\} ([0-9.e+]+)'
    return {why: float(n) for why, n in re.findall(pattern, text)}


def test_product_page_through_vllm_is_valid_json_and_grounded(live):
    catalog, user = live
    pid = catalog.popular[0]
    r = httpx.get(f"{BASE}/v1/products/{pid}/page", params={"user_id": user, "wait_ms": 60000}, timeout=300)
    assert r.status_code == 200, r.text
    page = r.json()
    metrics = httpx.get(f"{BASE}/metrics").text
    # Structured outputs make the JSON always parse; the grounding filter may still reject copy.
    assert 'why="invalid_json"' not in metrics
    assert page["sections_source"] in ("generated", "template")
    if page["sections_source"] == "template":  # vLLM answered and a page gate said why not
        assert sum(_fallbacks("generate_page").values()) >= 1, metrics
    from ml.grounding import check, pdp_visible_text
    from serve.catalog import facts_of

    facts = facts_of(catalog.products[pid], catalog.currency)
    # one line per section, as a shopper reads them (joined by spaces, "Pieces: 1000" would run into
    # the description's first sentence and read as one attribute)
    shown = pdp_visible_text(page["sections"])
    assert not check(
        shown, facts, known_brands=sorted({p.brand for p in catalog.products.values() if p.brand})
    ).unsupported


def test_page_stream_through_vllm_shows_only_grounded_text(live):
    from ml.grounding import check
    from serve.catalog import facts_of

    catalog, user = live
    pid = catalog.popular[1]  # not the page test's product: this one is generated, not cached
    facts = facts_of(catalog.products[pid], catalog.currency)
    brands = sorted({p.brand for p in catalog.products.values() if p.brand})
    started, first_section, events = time.perf_counter(), None, []
    with httpx.stream("GET", f"{BASE}/v1/products/{pid}/page/stream", params={"user_id": user}, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
        for name, data in zip(lines[0::2], lines[1::2]):
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
            if events[-1][0] == "section" and events[-1][1]["field"] != "title" and first_section is None:
                first_section = time.perf_counter() - started
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "done" and "sections" in names and "error" not in names, names
    streamed = [d["text"] for e, d in events if e == "section"]
    for text in streamed:  # every piece a shopper saw passes the same check as the page
        assert not check(text, facts, known_brands=brands).unsupported, text
    final = dict(events)["sections"]
    assert final["sections_source"] in ("generated", "template"), final
    if final["sections_source"] == "generated":  # what streamed is what the page keeps
        described = "".join(d["text"] for e, d in events if e == "section" and d["field"] == "description")
        assert described == final["sections"]["description"]
    note = dict(events)["note"]
    assert note["note_source"] in ("generated", "cached", "template") and note["personalized_note"]
    total = time.perf_counter() - started
    print(
        f"\nstream: {len(streamed)} grounded pieces, first generated piece at {first_section} s, {total:.1f} s in all, "
        f"sections {final['sections_source']} ({final['fallback']})"
    )


def test_product_questions_through_vllm_answer_grounded_or_fall_back_labelled(live):
    """The openai client against the real engine: an answer is the generator's grounded sentences
    or, labelled, the template; streamed or not, nothing it shows has an unsupported claim."""
    import openai

    from ml.grounding import check
    from serve.catalog import facts_of

    catalog, _ = live
    pid = next(p for p in catalog.popular[3:] if catalog.products[p].attributes)
    key, value = next(iter(catalog.products[pid].attributes.items()))
    facts = facts_of(catalog.products[pid], catalog.currency)
    brands = sorted({p.brand for p in catalog.products.values() if p.brand})
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0, timeout=300)
    question = [{"role": "user", "content": f"What is the {key.replace('_', ' ')} of this product?"}]
    got = client.chat.completions.create(model="shopgraph-qa", messages=question, metadata={"product_id": pid})
    meta, text = got.model_extra["shopgraph"], got.choices[0].message.content
    assert meta["source"] in ("generated", "template") and meta["citations"][0]["key"] == key, meta
    if meta["source"] == "template":  # vLLM answered, and grounding or relevance said why not
        assert meta["fallback"] in ("ungrounded", "off_topic", "empty"), meta
    assert str(value).split(",")[0].lower() in text.lower() and not check(text, facts, known_brands=brands).unsupported
    chunks = list(client.chat.completions.create(model="shopgraph-qa", messages=question, stream=True,
                                                 metadata={"product_id": pid}))  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and not check(streamed, facts, known_brands=brands).unsupported
    none = client.chat.completions.create(
        model="shopgraph-qa",
        messages=[{"role": "user", "content": "Does it have a warranty?"}],
        metadata={"product_id": pid},
    )
    assert none.choices[0].message.content == "That information is not listed for this product."
    print(f"\nanswer ({meta['source']}, {meta['fallback']}): {text!r}; streamed: {streamed!r}")


def _segment_pair(catalog, overrides):
    """(product, bargain shopper, other shopper, their segments): two shoppers the catalog's
    segments (`ml.segments`) set apart on one product: one reads the price first, one not."""
    from core.config import load_config
    from ml.segments import SegmentIndex
    from serve.catalog import facts_of

    index = SegmentIndex(catalog.products.values(), load_config(overrides=overrides).serve.segments)
    shoppers = {}
    for user in sorted(catalog.user_history):
        items = [
            catalog.products[catalog.by_item_idx[int(i)]]
            for i in catalog.user_history[user]
            if int(i) in catalog.by_item_idx
        ]
        shoppers[user] = index.segment_of(items)
    for pid in catalog.popular[2:60]:  # not the other tests' products: generated here, not cached
        facts = facts_of(catalog.products[pid], catalog.currency)
        cares = {u: index.cares_about(s, facts) for u, s in shoppers.items()}
        price = [u for u, c in cares.items() if c[:1] == ["price"]]
        other = [u for u, c in cares.items() if c and "price" not in c]
        if price and other:
            return pid, price[0], other[0], shoppers[price[0]].id, shoppers[other[0]].id
    pytest.fail("the sample shop has no product whose page two segments read differently")


def test_two_segments_get_different_grounded_pages_through_vllm(live, serving_artifacts):
    from ml.grounding import check, pdp_visible_text
    from serve.catalog import facts_of

    catalog, _ = live
    pid, bargain, other, bargain_segment, other_segment = _segment_pair(catalog, serving_artifacts)
    facts = facts_of(catalog.products[pid], catalog.currency)
    brands = sorted({p.brand for p in catalog.products.values() if p.brand})
    pages = {}
    for user, segment in ((bargain, bargain_segment), (other, other_segment)):
        r = httpx.get(f"{BASE}/v1/products/{pid}/page", params={"user_id": user, "wait_ms": 60000}, timeout=300)
        assert r.status_code == 200, r.text
        page = pages[segment] = r.json()
        assert page["segment"] == page["sections_segment"] == segment, page
        assert page["sections_source"] in ("generated", "template"), page
        assert not check(pdp_visible_text(page["sections"]), facts, known_brands=brands).unsupported, page["sections"]
    a, b = pages[bargain_segment]["sections"], pages[other_segment]["sections"]
    assert a["highlights"][0].startswith("Price:") and (a["highlights"], a["description"]) != (
        b["highlights"],
        b["description"],
    )
    anonymous = httpx.get(f"{BASE}/v1/products/{pid}/page", timeout=300).json()
    assert anonymous["segment"] == "all"
    print(f"\nsegments {bargain_segment} ({a['highlights'][:2]}) vs {other_segment} ({b['highlights'][:2]}); "
          f"sources {pages[bargain_segment]['sections_source']}, {pages[other_segment]['sections_source']}")  # fmt: skip


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian chromium is not installed (scripts/setup.sh installs it with apt-get as root)",
)
def test_demo_page_in_headless_chromium(live):
    from playwright.sync_api import sync_playwright

    catalog, user = live
    pid = catalog.popular[0]
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    shot = out / "demo_product_page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        response = page.goto(f"{BASE}/shop/products/{pid}?user_id={user}", timeout=300_000)
        assert response.status == 200
        assert page.inner_text("#title") == catalog.products[pid].title
        assert page.locator("#also-like .card").count() >= 1
        assert page.locator("#highlights li").count() >= 1
        assert page.locator("#note").count() == 1  # a signed-in user gets a personalized note
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")


def test_the_engines_metrics_reach_rays_endpoint(live):
    """vLLM's Ray stat logger (serve.engine.engine_stat_loggers) in the Generator replica: tokens,
    time to first token, queue and KV-cache use in one scrape of Ray's metrics endpoint."""
    from serve.metrics import ENGINE_METRICS, ray_name
    from tests.serve.test_ray_metrics import poll, total

    catalog, user = live
    r = httpx.get(f"{BASE}/v1/products/{catalog.popular[1]}/page", params={"wait_ms": 60000}, timeout=300)
    assert r.status_code == 200, r.text

    def seen(got):
        return (
            total(got.get(ray_name("vllm_generation_tokens_total"), [])) > 0
            and ray_name("vllm_time_to_first_token_seconds_count") in got
        )

    got = poll(ENGINE["metrics_url"], seen)
    assert total(got[ray_name("vllm_prompt_tokens_total")]) > 0
    assert total(got[ray_name("vllm_generation_tokens_total")]) > 0
    assert total(got[ray_name("vllm_time_to_first_token_seconds_count")]) >= 1
    for name, kind in ENGINE_METRICS.items():
        series = ray_name(f"{name}_count" if kind == "histogram" else name)
        assert series in got, f"{series} not exported"
    replicas = {labels.get("ReplicaId") for labels, _ in got[ray_name("vllm_generation_tokens_total")]}
    assert replicas and "" not in replicas  # tagged with the Generator replica
