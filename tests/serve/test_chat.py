"""Product Q&A on the OpenAI-compatible routes without Ray: the ingress's app (fakes behind the
generator seam, as in test_stream.py) driven by the official `openai` client and by raw HTTP:
answers, citations, abstention, streaming chunks, fallbacks and malformed input.

    pytest -q tests/serve/test_chat.py
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import openai
import pytest
from fastapi.testclient import TestClient

from serve.testing import INVENTED_SENTENCE, echo_facts, half_grounded, invent_claims
from tests.serve.test_http import _error
from tests.serve.test_stream import _ingress

CHAT = "/v1/chat/completions"
NOT_LISTED = "That information is not listed for this product."
SUMMARY = {
    "reviews": 6,
    "aspects": [
        {
            "aspect": "quality",
            "mentions": 5,
            "positive": 4,
            "sentence": "quality: 4 of 5 reviews positive",
            "quote": "solid mug, great quality",
        }
    ],  # fmt: skip
    "note": None,
}


def _client(monkeypatch, respond=echo_facts, **kwargs) -> tuple[TestClient, object]:
    from ray import serve as ray_serve

    ingress = _ingress(respond, **kwargs)
    ingress.review_summaries = {"p1": SUMMARY}
    monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))
    return TestClient(ingress.http_app, raise_server_exceptions=False), ingress


def _openai(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def _ask(client: openai.OpenAI, question: str, product: str = "p1", **kw):
    return client.chat.completions.create(
        model=kw.pop("model", "shopgraph-qa"),
        messages=[{"role": "user", "content": question}],
        metadata={"product_id": product},
        **kw,
    )


def test_the_openai_client_gets_grounded_cited_answers(monkeypatch):
    http, _ = _client(monkeypatch)
    client = _openai(http)
    got = _ask(client, "What colour is this mug?")
    assert got.object == "chat.completion" and got.choices[0].finish_reason == "stop"
    meta = got.model_extra["shopgraph"]
    assert got.choices[0].message.content == "The color is green." and meta["source"] == "generated"
    assert meta["citations"] == [{"type": "fact", "key": "color", "value": "green"}] and meta["language"] == "en"
    template = _ask(client, "What colour is this mug?", model="shopgraph-qa-template")
    assert template.choices[0].message.content == "Color: green."
    assert template.model_extra["shopgraph"]["source"] == "template"
    assert template.model_extra["shopgraph"]["fallback"] == "requested"
    reviews = _ask(client, "What do reviewers say about the quality?")
    assert "4 of 5" in reviews.choices[0].message.content
    assert reviews.model_extra["shopgraph"]["citations"][0]["aspect"] == "quality"
    models = [m.id for m in client.models.list()]
    assert models == ["shopgraph-qa", "shopgraph-qa-template"]


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("Is it machine washable?", NOT_LISTED),
        ("What is the warranty?", NOT_LISTED),
        ("这个杯子有保修吗？", "该商品未列出这项信息。"),
        ("What do reviewers say about the battery?", NOT_LISTED),
    ],
)
def test_what_neither_facts_nor_reviews_say_is_not_listed_never_guessed(monkeypatch, question, answer):
    http, ingress = _client(monkeypatch, invent_claims)
    got = _ask(_openai(http), question)
    assert got.choices[0].message.content == answer
    assert got.model_extra["shopgraph"]["source"] == "abstain" and got.model_extra["shopgraph"]["citations"] == []
    assert ingress.generator.core.engine.calls == 0  # nothing to word: the generator is not asked


def test_streaming_sends_only_grounded_sentences_then_done(monkeypatch):
    http, _ = _client(monkeypatch, half_grounded)
    stream = _ask(_openai(http), "What colour is it?", stream=True)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "The color is green." and "titanium" not in text and INVENTED_SENTENCE not in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["shopgraph"]["source"] == "generated"
    raw = http.post(CHAT, json={"model": "shopgraph-qa", "stream": True, "metadata": {"product_id": "p1"},
                                "messages": [{"role": "user", "content": "What colour is it?"}]})  # fmt: skip
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert "titanium" not in raw.text


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"respond": invent_claims}, ("ungrounded",)),
        ({"fail": True}, ("RuntimeError", "down")),  # down once the health probe has seen it fail
        ({"delay_s": 3.0, "budgets": {"reasons_ms": 200}}, ("budget",)),
        ({"generator": False}, ("disabled",)),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_ungrounded_slow_dead_or_absent_generator_answers_with_the_template(monkeypatch, kwargs, why, stream):
    http, _ = _client(monkeypatch, **kwargs)
    got = _ask(_openai(http), "How much is it?", stream=stream)
    if stream:
        chunks = list(got)
        text, meta = "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].model_extra["shopgraph"]
    else:
        text, meta = got.choices[0].message.content, got.model_extra["shopgraph"]
    assert text == "Price: 12.99 USD." and meta["source"] == "template" and meta["fallback"] in why
    assert "titanium" not in text


def test_an_echoed_question_is_never_sent_as_an_answer(monkeypatch):
    from serve.testing import echo_question

    http, _ = _client(monkeypatch, echo_question)
    got = _ask(_openai(http), "What colour is it?")
    assert got.choices[0].message.content == "The color is green."  # not "Is the ... green? The color ..."


def test_a_chinese_question_is_not_answered_in_english(monkeypatch):
    http, _ = _client(monkeypatch)  # echo_facts answers in English
    got = _ask(_openai(http), "这个杯子是什么颜色？")
    assert got.choices[0].message.content == "Color：green。"
    assert (
        got.model_extra["shopgraph"]["source"] == "template"
        and got.model_extra["shopgraph"]["fallback"] == "ungrounded"
    )


def test_product_from_a_system_message_and_chinese_answers(monkeypatch):
    http, _ = _client(monkeypatch)
    got = _openai(http).chat.completions.create(
        model="shopgraph-qa-template",
        messages=[
            {"role": "system", "content": "You help shoppers. product_id: p1"},
            {"role": "user", "content": [{"type": "text", "text": "这个杯子是什么材质的？"}]},
        ],  # fmt: skip
    )
    assert got.choices[0].message.content == "Material：ceramic。"
    assert got.model_extra["shopgraph"]["product_id"] == "p1" and got.model_extra["shopgraph"]["language"] == "zh"


def test_stop_strings_cut_the_answer(monkeypatch):
    http, _ = _client(monkeypatch)
    got = _ask(_openai(http), "What colour is it?", model="shopgraph-qa-template", stop=["green"])
    assert got.choices[0].message.content == "Color:"


GOOD = {"model": "shopgraph-qa", "metadata": {"product_id": "p1"}, "messages": [{"role": "user", "content": "Colour?"}]}


@pytest.mark.parametrize(
    ("change", "status", "param", "says"),
    [
        ({"messages": []}, 422, "messages", "at least 1"),
        ({"messages": None}, 422, "messages", "list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 422, "messages.0.role", "'user'"),
        ({"messages": [{"role": "user", "content": 42}]}, 422, "messages.0.content", "string"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            422,
            "messages.0.content",
            "text",
        ),  # fmt: skip
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]},
            422,
            "messages.1.role",
            "end with the shopper's question",
        ),  # fmt: skip
        ({"messages": [{"role": "user", "content": "   "}]}, 422, "messages.0.content", "empty"),
        ({"metadata": {"product_id": "nope"}}, 404, "metadata.product_id", "unknown product"),
        ({"metadata": {}}, 422, "metadata.product_id", "which product"),
        ({"model": "gpt-4o"}, 404, "model", "does not exist"),
        ({"model": None}, 422, "model", "string"),
        ({"max_tokens": 10**9}, 422, "max_tokens", "less than or equal to 1024"),
        ({"max_tokens": 0}, 422, "max_tokens", "greater than or equal to 1"),
        ({"temperature": 5}, 422, "temperature", "less than or equal to 2"),
        ({"stream": "yes"}, 422, "stream", "boolean"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 422, "stop", "at most 4"),
        ({"n": 3}, 422, "n", "less than or equal to 1"),
        ({"surprise": 1}, 422, "surprise", "not permitted"),
    ],
)
def test_malformed_requests_get_a_clear_4xx_with_an_openai_style_body(monkeypatch, change, status, param, says):
    http, _ = _client(monkeypatch)
    body = {**GOOD, **change}
    err = _error(http.post(CHAT, json=body), status, param)
    assert says in err["message"], err
    # and the openai client raises the matching error class with that body
    if status == 404 and param == "model":
        with pytest.raises(openai.NotFoundError):
            _ask(_openai(http), "Colour?", model="gpt-4o")


def test_no_body_says_what_the_body_must_be(monkeypatch):
    http, _ = _client(monkeypatch)
    err = _error(http.post(CHAT, content=b"[]", headers={"content-type": "application/json"}), 422)
    assert "messages" in err["message"] and "model" in err["message"]


def test_models_lists_the_generator_and_the_template(monkeypatch):
    http, _ = _client(monkeypatch)
    data = http.get("/v1/models").json()["data"]
    assert data[0]["shopgraph"]["generator"]["version"] == "fake-1" and data[1]["shopgraph"]["answers"] == "template"
    json.dumps(data)


def test_questions_are_rate_limited_like_every_route(monkeypatch):
    from core.config.serve import RateLimitConfig
    from serve.security import RateLimiter

    http, ingress = _client(monkeypatch)
    cfg = RateLimitConfig(enabled=True, per_key_rps=0.01, per_key_burst=1, per_address_rps=0.01, per_address_burst=1)
    monkeypatch.setattr(ingress.http_app.state, "rate_limiter", RateLimiter(cfg))
    client = _openai(http)
    assert _ask(client, "Colour?").choices[0].message.content
    with pytest.raises(openai.RateLimitError):
        _ask(client, "Colour?")
