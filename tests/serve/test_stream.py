"""The product-page stream without Ray: grounding while streaming (`GroundedPageStream`), and the
ingress's SSE route around an in-process generator (fake engine): events, sources, fallbacks,
deadlines, `user_id` and bad input.

    pytest -q tests/serve/test_stream.py
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from core.config.serve import GenerationConfig, ServeConfig
from ml.grounding import check
from serve.catalog import Catalog, Product, facts_hash, facts_of
from serve.content import CacheKey
from serve.engine import FakeEngine
from serve.generator import GeneratorCore, GroundedPageStream, ground_page
from serve.http import ApiError, _api_error
from serve.ingress import Ingress
from serve.schemas import PageSections
from serve.testing import (
    GROUNDED_SENTENCE,
    INVENTED_SENTENCE,
    LocalGenerator,
    echo_facts,
    fake_ranker,
    fake_retriever,
    half_grounded,
    privacy_for_tests,
)
from serve.testing import MUG_FACTS as FACTS

BRANDS = ["Brewly", "Hearthline", "Morrow"]
RAW = json.dumps(
    {
        "title": 'The "best" mug',
        "highlights": ["Capacity: 350 ml", "Made of titanium", "Color: green"],
        "description": "A green ceramic mug. It weighs 12 kg. Holds 350 ml; from Brewly. Morrow made it; in ceramic. Great for tea",
    }
)


def _pieces(raw: str, step: int) -> list[dict]:
    stream = GroundedPageStream(FACTS, BRANDS)
    out = []
    for i in range(0, len(raw), step):
        out += stream.feed(raw[i : i + step])
    return out + stream.finish()


@pytest.mark.parametrize("step", [1, 2, 5, 13, 10_000])
def test_streamed_pieces_are_exactly_what_the_page_keeps(step):
    pieces = _pieces(RAW, step)
    page = ground_page(RAW, FACTS, BRANDS)["sections"]
    assert (
        [p["text"] for p in pieces if p["field"] == "highlights"]
        == page["highlights"]
        == ["Capacity: 350 ml", "Color: green"]
    )
    assert [p["index"] for p in pieces if p["field"] == "highlights"] == [0, 1]
    description = "".join(p["text"] for p in pieces if p["field"] == "description")
    # Checked clause by clause, as the page is: "Morrow made it;" goes, " in ceramic." stays;
    # "Great for tea", left unfinished when the string closed, is dropped.
    assert description == page["description"] == "A green ceramic mug. Holds 350 ml; from Brewly. in ceramic."
    for p in pieces:
        assert not check(p["text"], FACTS, known_brands=BRANDS).unsupported, p
        assert "12 kg" not in p["text"] and "titanium" not in p["text"] and "Morrow" not in p["text"]


def test_a_sentence_is_sent_only_when_it_is_complete():
    head = '{"title":"x","highlights":[],"description":"A green mug. It costs $12.'
    stream = GroundedPageStream(FACTS, BRANDS)
    assert [p["text"] for p in stream.feed(head)] == ["A green mug."]
    # "$12." may go on as "$12.99": held back, never cut at the decimal point ...
    assert stream.feed("99") == []
    # ... and a sentence still being written is never sent (`sentences` keeps everything after
    # a decimal number in one piece, so nothing more goes out before the field ends).
    later = stream.feed(" USD. It is made")
    assert all(p["text"].endswith(".") and "made" not in p["text"] for p in later)
    tail = ' of steel."}'
    later += stream.feed(tail) + stream.finish()
    raw = head + "99 USD. It is made" + tail
    streamed = "A green mug." + "".join(p["text"] for p in later)
    assert streamed == ground_page(raw, FACTS, BRANDS)["sections"]["description"] and "steel" not in streamed


def test_an_answer_cut_off_by_the_token_limit_never_sends_its_fragment():
    stream = GroundedPageStream(FACTS, BRANDS)
    got = stream.feed('{"title":"x","highlights":["Color: gr')
    got += stream.feed('een", "Capacity: 35')
    got += stream.feed('0 ml"],"description":"A green mug. Holds 350 ml. It is made')
    got += stream.finish()
    assert [p["text"] for p in got] == ["Color: green", "Capacity: 350 ml", "A green mug.", " Holds 350 ml."]


def test_escapes_and_unicode_are_decoded_before_the_check():
    raw = json.dumps(
        {
            "title": "t",
            "highlights": ['Color: green \u2014 "ceramic"'],
            "description": "A green mug.\nMade of ceramic \u2014 it holds 350 ml.",
        },
        ensure_ascii=True,
    )
    pieces = _pieces(raw, 3)
    assert pieces[0] == {"field": "highlights", "index": 0, "text": 'Color: green \u2014 "ceramic"'}
    assert "".join(p["text"] for p in pieces[1:]) == "A green mug.\nMade of ceramic \u2014 it holds 350 ml."


def test_generator_stream_yields_only_grounded_text_then_the_page():
    core = GeneratorCore(FakeEngine(half_grounded), GenerationConfig(), BRANDS)

    async def run():
        return [e async for e in core.stream_page(FACTS)]

    events = asyncio.run(run())
    sections = [e["section"] for e in events[:-1]]
    assert sections[0] == {"field": "title", "text": FACTS["title"]}
    streamed = " ".join(s["text"] for s in sections)
    assert GROUNDED_SENTENCE.format(brand="Brewly") in streamed
    assert INVENTED_SENTENCE not in streamed and "titanium" not in streamed and "100 m" not in streamed
    final = events[-1]["sections"]
    assert "".join(s["text"] for s in sections if s["field"] == "description") == final["description"]


# ----------------------------------------------------------------------------- the ingress route

USER = "u-1"  # what a client sends; the catalog (built from shards) holds its pseudonym
PRIVACY = privacy_for_tests()
USER_KEY = PRIVACY[0].user_key(USER)
# The class as written, under the wrapper `serve.ingress` puts around it (whose async __del__
# expects a running replica).
INGRESS = next(c for c in Ingress.func_or_class.__mro__[1:] if c.__name__ == "Ingress")


def _catalog() -> Catalog:
    products = {
        "p1": Product(
            "p1", FACTS["title"], FACTS["category"], "Brewly", 12.99, FACTS["attributes"], None, True, item_idx=0
        ),
        "p2": Product(
            "p2",
            "Hearthline V33 Coffee Mug",
            FACTS["category"],
            "Hearthline",
            9.5,
            {"capacity": "300 ml"},
            None,
            True,
            item_idx=1,
        ),
    }
    return Catalog(products, {0: "p1", 1: "p2"}, {USER_KEY: np.asarray([1], np.int64)}, {}, ["p1", "p2"], "test", "USD")


def _ingress(
    respond=half_grounded,
    *,
    delay_s: float = 0.0,
    fail: bool = False,
    budgets: dict | None = None,
    generator: bool = True,
    stages: bool = True,
    privacy=None,
    live=None,
    cache: dict | None = None,
):
    cfg = ServeConfig(budgets=budgets or {}, cache=cache or {})
    catalog = _catalog()
    ingress = object.__new__(INGRESS)
    handle = (
        LocalGenerator(GeneratorCore(FakeEngine(respond, delay_s=delay_s, fail=fail), cfg.generation, BRANDS))
        if generator
        else None
    )
    retriever, ranker = (fake_retriever(catalog), fake_ranker(catalog)) if stages else (None, None)
    pz, tombstones, privacy_cfg = privacy or privacy_for_tests()
    ingress._setup(
        cfg, catalog, retriever, ranker, handle, "fake-1", pseudonymizer=pz, tombstones=tombstones, privacy=privacy_cfg,
        live=live,
    )  # fmt: skip
    return ingress


def _stream(ingress, product_id: str = "p1", user_id: str | None = None) -> list[tuple[str, dict]]:
    """Run the route and parse its body into (event, data) pairs, checking the SSE framing."""

    async def run():
        response = await INGRESS.product_page_stream(ingress, product_id, user_id)
        assert response.media_type == "text/event-stream"
        return "".join([chunk async for chunk in response.body_iterator])

    body = asyncio.run(run())
    events = []
    for block in body.split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: "), block
            events.append((name[7:], json.loads(data[6:])))
    return events


def _texts(events) -> str:
    return "\n".join(d["text"] for e, d in events if e == "section")


def test_stream_sends_grounded_sentences_only_then_sections_and_done():
    ingress = _ingress()
    events = _stream(ingress)
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-2:] == ["sections", "done"] and "section" in names
    assert names.count("done") == 1 and "error" not in names
    assert GROUNDED_SENTENCE.format(brand="Brewly") in _texts(events)
    for _, data in events:  # not in any event at all: deltas, final sections, nothing
        assert (
            "titanium" not in json.dumps(data) and "12 kg" not in json.dumps(data) and "100 m" not in json.dumps(data)
        )
    final = dict(events)["sections"]
    assert final["sections_source"] == "generated" and final["fallback"] is None
    assert final["sections"]["title"] == FACTS["title"]
    assert (
        "".join(d["text"] for e, d in events if e == "section" and d["field"] == "description")
        == final["sections"]["description"]
    )
    # The page endpoint now finds the same sections in the cache.
    key = CacheKey("p1", "page", "all", "fake-1", facts_hash(_catalog().products["p1"], "USD"))
    assert PageSections(**ingress.cache.get(key)).model_dump() == final["sections"]  # as served: one highlight style
    again = _stream(ingress)
    assert [e for e, _ in again] == ["start", "sections", "done"] and dict(again)["sections"][
        "sections_source"
    ] == "cached"


def test_nothing_grounded_falls_back_to_template_copy():
    from serve.testing import invent_claims

    events = _stream(_ingress(invent_claims))
    final = dict(events)["sections"]
    assert final["sections_source"] == "template" and final["fallback"] == "ungrounded"
    assert "titanium" not in _texts(events) and "12 kg" not in _texts(events)
    assert events[-1][0] == "done"


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"fail": True}, "RuntimeError"),
        ({"delay_s": 3.0, "budgets": {"page_ms": 300}}, "budget"),
        ({"delay_s": 3.0, "budgets": {"page_ms": 30_000, "request_deadline_ms": 300}}, "budget"),
        ({"generator": False}, None),
    ],
)
def test_dead_slow_or_absent_generator_gives_template_and_done_within_the_deadline(kwargs, why):
    started = time.perf_counter()
    events = _stream(_ingress(echo_facts, **kwargs))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5, elapsed  # a 0.3 s budget or deadline; the 3 s generation is not waited for
    final = dict(events)["sections"]
    assert final["sections_source"] == "template" and final["fallback"] == why and final["sections"]["description"]
    assert events[-1][0] == "done" and "error" not in dict(events)
    if why != "budget":  # no text at all from a generator that never answered
        assert [e for e, _ in events] == ["start", "sections", "done"]


def _stream_to_the_end(ingress) -> str:
    """The whole SSE body of p1's page stream, after the work it left in the background finished."""

    async def run():
        response = await INGRESS.product_page_stream(ingress, "p1", None)
        body = "".join([chunk async for chunk in response.body_iterator])
        await asyncio.gather(*ingress._background)
        return body

    return asyncio.run(run())


def test_a_late_stream_is_cached_for_the_next_request():
    # Past the request's deadline, within the page budget: the generation goes on and is cached.
    ingress = _ingress(echo_facts, delay_s=0.5, budgets={"page_ms": 5_000, "request_deadline_ms": 100})

    assert '"sections_source": "template"' in _stream_to_the_end(ingress)
    assert dict(_stream(ingress))["sections"]["sections_source"] == "cached"


def test_a_stream_past_the_page_budget_is_cancelled_not_cached():
    ingress = _ingress(echo_facts, delay_s=1.0, budgets={"page_ms": 200, "request_deadline_ms": 100})

    assert '"sections_source": "template"' in _stream_to_the_end(ingress)
    assert ingress.generator.streams[-1].cancelled and len(ingress.cache) == 0


def test_signed_in_user_gets_a_grounded_note_and_empty_user_id_is_anonymous():
    events = _stream(_ingress(), user_id=USER)
    assert [e for e, _ in events][-3:] == ["sections", "note", "done"]
    note = dict(events)["note"]
    assert note["note_source"] in ("generated", "template") and note["personalized_note"]
    assert not check(
        note["personalized_note"],
        facts_of(_catalog().products["p1"], "USD"),
        known_brands=BRANDS,
        profile={
            "recent_items": ["Hearthline V33 Coffee Mug"],
            "top_categories": [FACTS["category"]],
            "top_brands": ["Hearthline"],
        },
    ).unsupported
    for blank in ("", "  "):
        anonymous = _stream(_ingress(), user_id=blank)
        assert "note" not in dict(anonymous) and anonymous[-1][0] == "done"


@pytest.mark.parametrize(
    ("product_id", "user_id", "status", "param"),
    [
        ("no-such-product", None, 404, "product_id"),
        ("p" * 600, None, 422, "product_id"),
        ("p1", "u" * 600, 422, "user_id"),
    ],
)
def test_bad_input_is_an_openai_style_error_before_the_stream_starts(product_id, user_id, status, param):
    ingress = _ingress()
    with pytest.raises(ApiError) as e:
        asyncio.run(INGRESS.product_page_stream(ingress, product_id, user_id))
    response = asyncio.run(_api_error(None, e.value))
    body = json.loads(response.body)
    assert response.status_code == status and body["error"]["code"] == status and body["error"]["param"] == param
    assert body["error"]["message"] and body["error"]["type"]


def test_page_endpoint_treats_user_id_the_same_way():
    ingress = _ingress()
    with pytest.raises(ApiError) as e:
        asyncio.run(INGRESS._page(ingress, "p1", "u" * 600))
    assert e.value.status == 422 and e.value.param == "user_id"
    assert ingress._user_param("") is None and ingress._user_param(" ") is None and ingress._user_param(USER) == USER


def test_highlights_without_a_value_or_repeated_are_never_streamed():
    raw = json.dumps({"title": "t", "highlights": ["Color:", "Color: green", "color: green", "Capacity: 350 ml"],
                      "description": "A green ceramic mug that holds 350 ml."})  # fmt: skip
    pieces = _pieces(raw, 4)
    page = ground_page(raw, FACTS, BRANDS)["sections"]
    assert [p["text"] for p in pieces if p["field"] == "highlights"] == page["highlights"]
    assert page["highlights"] == ["Color: green", "Capacity: 350 ml"]


def test_the_stream_says_what_reviewers_say_at_once():
    summary = {
        "reviews": 6,
        "aspects": [
            {
                "aspect": "size",
                "mentions": 5,
                "positive": 4,
                "sentence": "size: 4 of 5 reviews positive",
                "quote": "true to size",
            }
        ],  # fmt: skip
        "note": None,
        "language": "en",
    }
    ingress = _ingress()
    ingress.review_summaries = {"p1": summary}
    events = _stream(ingress)
    assert [e for e, _ in events][:2] == ["start", "reviews"]  # before any section: it is precomputed
    assert dict(events)["reviews"]["reviews"] == summary
    assert "reviews" not in [e for e, _ in _stream(ingress, "p2")]  # no summary built for p2: no event
