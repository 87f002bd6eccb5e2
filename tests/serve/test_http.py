"""The HTTP contract without Ray: the ingress's FastAPI app (`Ingress.http_app`) driven by
FastAPI's TestClient around an in-process Ingress (fakes, as in test_stream.py): OpenAI-style
error bodies for every malformed input, every status counted in `/metrics`, and the demo page.

    pytest -q tests/serve/test_http.py
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from serve.http import MAX_JSON_DEPTH, json_depth_over
from tests.serve.test_stream import USER, _ingress

RECS = "/v1/recommendations"
JSON = {"content-type": "application/json"}


@pytest.fixture
def ingress(monkeypatch):
    """An Ingress whose app (`ingress.http_app`) calls it, as Serve binds it on a replica (`servable_object`)."""
    from ray import serve as ray_serve

    ingress = _ingress()
    monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))
    monkeypatch.setattr(ingress.http_app.state, "max_body_bytes", 16 * 1024)
    return ingress


@pytest.fixture
def client(ingress):
    with TestClient(ingress.http_app, raise_server_exceptions=False) as c:
        yield c


def _error(r, status: int, param: str | None = None) -> dict:
    """The response is `status` with an OpenAI-style body; returns its `error`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert err["code"] == status and err["message"] and err["type"] and err["param"] == param, err
    return err


# ----------------------------------------------------------------------------- errors, one per case


def test_invalid_utf8(client):
    err = _error(client.post(RECS, content=b'{"user_id": "\xff\xfe"}', headers=JSON), 400)
    assert "UTF-8" in err["message"]


def test_not_json(client):
    err = _error(client.post(RECS, content=b"{not json", headers=JSON), 400)
    assert "not valid JSON" in err["message"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000])
def test_json_nested_too_deep(client, depth):
    body = b'{"user_id": "u", "k": ' + b"[" * depth + b"]" * depth + b"}"
    err = _error(client.post(RECS, content=body, headers=JSON), 400)
    assert f"deeper than {MAX_JSON_DEPTH}" in err["message"]


def test_json_depth_ignores_brackets_in_strings():
    assert not json_depth_over(json.dumps({"user_id": "[" * 500}).encode())
    assert not json_depth_over(json.dumps({"recent_items": [["x"]] * 100}).encode())
    assert json_depth_over(b"[" * (MAX_JSON_DEPTH + 1))


def test_unmatched_route_is_404(client):
    err = _error(client.get("/v2/nothing/here"), 404)
    assert err["type"] == "not_found_error" and "/v2/nothing/here" in err["message"]


def test_wrong_method_is_405_with_allow(client):
    r = client.get(RECS)
    err = _error(r, 405)
    assert r.headers["allow"] == "POST" and "POST" in err["message"]


def test_body_over_the_limit_is_413(client):
    _error(client.post(RECS, content=b'{"user_id": "' + b"x" * 20_000 + b'"}', headers=JSON), 413)

    def chunks():  # no content-length: read, counted, refused
        yield b'{"user_id": "'
        yield b"x" * 20_000
        yield b'"}'

    _error(client.post(RECS, content=chunks(), headers=JSON), 413)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"user_id": "u", "k": True}, "k", "integer"),
        ({"user_id": "u", "k": "5"}, "k", "integer"),
        ({"user_id": "u", "k": 5.5}, "k", "integer"),
        ({"user_id": "u", "with_reasons": "no"}, "with_reasons", "boolean"),
        ({"user_id": 5}, "user_id", "string"),
        ({"recent_items": [1, 2]}, "recent_items.0", "string"),
        ({"user_id": "u", "filters": {"min_price": 50, "max_price": 10}}, "filters.min_price", "above max_price"),
        ({"user_id": "u", "filters": {"max_price": -1}}, "filters.max_price", "greater than or equal to 0"),
        ({"user_id": "u", "filters": {"min_price": "5"}}, "filters.min_price", "number"),
        ({"user_id": "u", "filters": {"in_stock_only": "yes"}}, "filters.in_stock_only", "boolean"),
        ({"user_id": "u", "k": 0}, "k", "greater than or equal to 1"),
        ({"user_id": "u", "surprise": 1}, "surprise", "not permitted"),
    ],
)
def test_wrong_types_and_ranges_are_422_naming_the_field(client, body, param, says):
    err = _error(client.post(RECS, json=body), 422, param)
    assert says in err["message"] and err["message"].startswith(f"{param}: "), err


@pytest.mark.parametrize("content", [b"", b"{}", b"[]", b"null", b'"u1"'])
def test_empty_or_non_object_body_is_422_saying_what_the_body_must_be(client, content):
    err = _error(client.post(RECS, content=content, headers=JSON), 422)
    assert (
        "must be a JSON object" in err["message"] and "user_id" in err["message"] and "recent_items" in err["message"]
    ), err
    assert not err["message"].startswith(":")


def test_a_good_request_still_passes(client):
    r = client.post(
        RECS, json={"user_id": USER, "k": 2, "with_reasons": False, "filters": {"min_price": 1, "max_price": 1}}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "path", ["/v1/products/p1/page?user_id=", "/v1/products/p1/page?user_id=%20", "/shop/products/p1?user_id=&debug="]
)
def test_an_empty_query_value_is_absent(client, path):
    assert client.get(path).status_code == 200


def test_unexpected_errors_are_500_in_the_same_shape(client, ingress, monkeypatch):
    async def broken(*_):
        raise RuntimeError("bug")

    monkeypatch.setattr(ingress, "_page", broken)
    err = _error(client.get("/v1/products/p1/page"), 500)
    assert err["type"] == "server_error" and "RuntimeError" in err["message"]


# ----------------------------------------------------------------------------- /metrics


def _counts(client) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    pattern = r'^shopgraph_requests_total\{endpoint="([^"]*)",status="(\d+)"\} (\S+)$'
    return {(e, s): float(v) for e, s, v in re.findall(pattern, text, re.M)}


def test_every_status_is_counted_by_route_template(client, ingress, monkeypatch):
    client.post(RECS, json={"user_id": USER, "k": 2, "with_reasons": False})
    client.post(RECS, json={"user_id": USER, "k": "2"})
    client.post(RECS, content=b"\xff", headers=JSON)
    client.post(RECS, content=b"x" * 20_000, headers=JSON)
    client.get(RECS)
    client.get("/v1/products/p1/page")
    client.get("/v1/products/no-such-product/page")
    client.get("/nowhere/P000001")
    client.get("/shop/products/no-such-product")

    async def broken(*_):
        raise RuntimeError("bug")

    monkeypatch.setattr(ingress, "_page", broken)
    client.get("/v1/products/p1/page")
    counts = _counts(client)
    page = "/v1/products/{product_id}/page"
    assert counts == {
        (RECS, "200"): 1,
        (RECS, "422"): 1,
        (RECS, "400"): 1,
        (RECS, "413"): 1,
        (RECS, "405"): 1,
        (page, "200"): 1,
        (page, "404"): 1,
        (page, "500"): 1,
        ("unmatched", "404"): 1,
        ("/shop/products/{product_id}", "404"): 1,
    }, counts
    assert _counts(client)[("/metrics", "200")] == 1  # the first scrape, counted once it was answered


# ----------------------------------------------------------------------------- the demo page


def test_demo_page_is_a_shop_page_debug_only_with_debug(client, ingress):
    r = client.get("/shop/products/p1", params={"user_id": USER})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "Brewly T76 Coffee Mug" in page and 'id="note"' in page
    for debug_only in ('class="src"', "fake-1", "facts ", ">generated<", ">template<", ">cached<"):
        assert debug_only not in page, debug_only
    assert USER not in page  # neither in the header nor in the links
    highlights = re.findall(r"<li>([^<]*)</li>", page)
    assert highlights and all(re.match(r"[A-Z][a-z ]*: ", h) for h in highlights), highlights

    debug = client.get("/shop/products/p1", params={"debug": "1"}).text
    assert 'class="src"' in debug and "model fake-1" in debug and 'id="debug"' in debug
    assert re.search(r">(generated|cached|template)<", debug)
    assert USER not in debug and 'id="note"' in debug  # still signed in, by cookie, not by URL
    assert 'href="/shop/products/p2?debug=1"' in debug

    signed_out = client.get("/shop/products/p1", params={"user_id": ""}).text
    assert 'id="note"' not in signed_out


def test_demo_page_escapes_what_comes_from_the_url_and_the_catalog(client, ingress):
    r = client.get("/shop/products/<script>alert(1)")  # a '/' in the id would be another route
    assert r.status_code == 404 and "<script>" not in r.text and "&lt;script&gt;" in r.text
    ingress.catalog.products["p1"].title = "<script>alert(2)</script> Mug"
    ingress.catalog.products["p1"].brand = '"><img src=x>'
    r = client.get("/shop/products/p1", params={"debug": "<b>"})
    assert r.status_code == 422 and "<b>" not in r.text
    page = client.get("/shop/products/p1").text
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;alert(2)" in page


def test_pages_carry_the_review_summary_and_the_demo_page_shows_it_as_text(client, ingress):
    summary = {
        "reviews": 7,
        "aspects": [
            {"aspect": "size", "mentions": 5, "positive": 4, "sentence": "size: 4 of 5 reviews positive",
             "quote": "The size is just right <b>x</b>"},
        ],
        "note": None,
    }  # fmt: skip
    ingress.review_summaries = {"p1": summary}
    page = client.get("/v1/products/p1/page").json()
    assert page["reviews"] == summary | {"language": "en"}  # summaries written before languages: English
    assert client.get("/v1/products/p2/page").json()["reviews"] is None  # no reviews: no summary, no error
    ingress.review_summaries["p2"] = {"reviews": 2, "aspects": [], "note": "2 reviews; a summary needs 5"}
    html = client.get("/shop/products/p1").text
    assert "What reviewers say" in html and "size: 4 of 5 reviews positive" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html  # review text is shown as text
    assert "2 reviews; a summary needs 5" in client.get("/shop/products/p2").text


def test_a_replica_built_in_this_process_does_not_travel_with_the_deployed_class(ingress):
    """Deploying pickles the Ingress class with its app; what a replica set on `app.state` stays here.
    Before, an in-process replica's objects rode along and a weak reference among them failed `serve.run`."""
    import threading
    import weakref

    import ray.cloudpickle as cloudpickle

    from serve.ingress import Ingress

    ingress.http_app.state.lock = threading.Lock()  # neither of these two can be pickled
    ingress.http_app.state.ref = weakref.ref(ingress)
    assert ingress.http_app.state.requests is not None

    copy = cloudpickle.loads(cloudpickle.dumps(Ingress.func_or_class))
    frozen = next(c for c in copy.__mro__[1:] if c.__name__ == "Ingress")._setup.__globals__["api"]
    assert frozen is not ingress.http_app
    assert vars(frozen.state) == {"_state": {}}
    assert ingress.http_app.state.requests is not None  # this process's replica keeps its own
