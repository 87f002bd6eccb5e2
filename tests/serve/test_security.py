"""Abuse limits and browser-facing safety of the HTTP API (serve.security): rate limits (429 with
Retry-After), CORS off unless configured, Content-Security-Policy on HTML, escaped error pages,
and a bound on every string and array a client can send (walked in the OpenAPI schema).

    pytest -q tests/serve/test_security.py
"""

from __future__ import annotations

import re

import pytest

from core.config.serve import RateLimitConfig, ServeConfig
from serve.security import CSP_PAGE, RateLimiter, TokenBuckets
from tests.serve.test_http import JSON, RECS, _error, client, ingress  # noqa: F401 (fixtures)

INJECTION = "<img src=x onerror=alert(1)><b>injected markup</b>"


# ----------------------------------------------------------------------------- size limits


def _walk(schema, components, path, seen, problems):
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                _walk(components[name], components, f"{name}", seen, problems)
            return
        kind = schema.get("type")
        if kind == "string" and "maxLength" not in schema and "enum" not in schema and "const" not in schema:
            problems.append(f"{path}: string without maxLength")
        if kind == "array" and "maxItems" not in schema:
            problems.append(f"{path}: array without maxItems")
        for key, value in schema.items():
            if key in ("properties",):
                for prop, sub in value.items():
                    _walk(sub, components, f"{path}.{prop}", seen, problems)
            elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
                _walk(value, components, f"{path}[{key}]", seen, problems)
    elif isinstance(schema, list):
        for sub in schema:
            _walk(sub, components, path, seen, problems)


def test_every_string_and_array_a_client_sends_has_a_bound(client):  # noqa: F811
    spec = client.get("/openapi.json").json()
    components = spec.get("components", {}).get("schemas", {})
    problems, checked = [], 0
    for route, methods in spec["paths"].items():
        for method, op in methods.items():
            for param in op.get("parameters", []):
                checked += 1
                _walk(param["schema"], components, f"{method.upper()} {route} {param['name']}", set(), problems)
            for media in op.get("requestBody", {}).get("content", {}).values():
                checked += 1
                _walk(media["schema"], components, f"{method.upper()} {route} body", set(), problems)
    assert checked >= 8, spec["paths"].keys()  # the page routes' parameters and the recommendations body
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "path,param",
    [
        ("/v1/products/p1/page?wait_ms=" + "1" * 17, "wait_ms"),
        ("/v1/products/p1/page?user_id=" + "u" * 513, "user_id"),
        ("/v1/products/" + "p" * 513 + "/page", "product_id"),
        ("/shop/products/p1?debug=" + "1" * 9, "debug"),
    ],
)
def test_over_long_query_and_path_parameters_are_422_naming_them(client, path, param):  # noqa: F811
    err = _error(client.get(path), 422, param)
    assert "at most" in err["message"]


def test_too_many_or_too_long_recent_items_are_422(client):  # noqa: F811
    _error(client.post(RECS, json={"recent_items": ["p1"] * 1001}), 422, "recent_items")
    _error(client.post(RECS, json={"recent_items": ["p" * 513]}), 422, "recent_items.0")


# ----------------------------------------------------------------------------- rate limits


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token in 1/rate s
    now[0] += 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    assert buckets.take("b") == 0.0  # another identity has its own bucket
    buckets.take("c")  # a third evicts the least recently seen ("a"), which starts full again
    assert "a" not in buckets.buckets and len(buckets.buckets) == 2


def test_rate_limits_are_off_by_default(client):  # noqa: F811
    assert ServeConfig().security.rate_limit.enabled is False
    assert client.app.state.rate_limiter is None
    assert all(client.get("/healthz").status_code == 200 for _ in range(30))
    assert all(client.post(RECS, json={"user_id": "u"}).status_code == 200 for _ in range(10))


@pytest.fixture
def limited(client, monkeypatch):  # noqa: F811
    cfg = RateLimitConfig(enabled=True, per_address_rps=0.01, per_address_burst=2, per_key_rps=0.01, per_key_burst=3)
    monkeypatch.setattr(client.app.state, "rate_limiter", RateLimiter(cfg))
    return client


def test_a_client_address_over_its_limit_gets_429_with_retry_after(limited):
    assert [limited.post(RECS, json={"user_id": "u"}).status_code for _ in range(2)] == [200, 200]
    r = limited.post(RECS, json={"user_id": "u"})
    err = _error(r, 429)
    assert err["type"] == "rate_limit_error" and "client address" in err["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert limited.get("/shop/products/p1").status_code == 429  # every route shares the bucket
    assert limited.get("/healthz").status_code == 200 and limited.get("/readyz").status_code in (200, 503)
    assert limited.get("/metrics").status_code == 200  # probes and scrapes are never limited


def test_each_api_key_has_its_own_bucket_keyed_by_a_hash(limited):
    for token in ("key-one", "key-two"):
        codes = [limited.post(RECS, json={"user_id": "u"}, headers={"Authorization": f"Bearer {token}"}).status_code
                 for _ in range(4)]  # fmt: skip
        assert codes == [200, 200, 200, 429], (token, codes)
    assert limited.post(RECS, json={"user_id": "u"}).status_code == 200  # the address's bucket is separate
    keys = limited.app.state.rate_limiter.by_key.buckets
    assert len(keys) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)  # never the token itself


def test_a_trusted_proxy_header_names_the_client():
    limiter = RateLimiter(RateLimitConfig(enabled=True, forwarded_for_header="X-Forwarded-For"))
    scope = {"headers": [(b"x-forwarded-for", b"198.51.100.7, 203.0.113.9")], "client": ("10.0.0.1", 1)}
    assert limiter.identity(scope) == ("address", "203.0.113.9")
    assert RateLimiter(RateLimitConfig()).identity(scope) == ("address", "10.0.0.1")


# ----------------------------------------------------------------------------- CORS


def test_cors_is_off_by_default(client):  # noqa: F811
    r = client.post(RECS, json={"user_id": "u"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = client.options(RECS, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers and pre.status_code == 405


def test_a_configured_origin_gets_cors_headers_and_others_do_not(client, monkeypatch):  # noqa: F811
    monkeypatch.setattr(client.app.state, "cors_origins", frozenset({"https://shop.example"}))
    r = client.post(RECS, json={"user_id": "u"}, headers={"Origin": "https://shop.example"})
    assert r.headers["access-control-allow-origin"] == "https://shop.example" and "Origin" in r.headers["vary"]
    pre = client.options(
        RECS,
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
    other = client.post(RECS, json={"user_id": "u"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# ----------------------------------------------------------------------------- HTML


def test_html_pages_carry_a_csp_that_allows_no_script_and_only_their_own_style(client):  # noqa: F811
    import base64
    import hashlib

    from serve.page import PAGE_CSS

    r = client.get("/shop/products/p1")
    assert r.status_code == 200 and r.headers["content-security-policy"] == CSP_PAGE
    assert "script-src" not in CSP_PAGE and "default-src 'none'" in CSP_PAGE and "unsafe-inline" not in CSP_PAGE
    style = re.search(r"<style>(.*?)</style>", r.text, re.S).group(1)
    assert style == PAGE_CSS
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in CSP_PAGE
    api = client.post(RECS, json={"user_id": "u"})
    assert "content-security-policy" not in api.headers and api.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/shop/products/" + INJECTION,
        "/shop/products/" + INJECTION.replace("/", "%2F"),
        "/shop/products/x?debug=" + "<b>1",
    ],
)
def test_error_pages_escape_what_the_url_says(client, path):  # noqa: F811
    r = client.get(path)
    assert r.status_code in (404, 422) and r.headers["content-type"].startswith(("text/html", "application/json"))
    assert "<img" not in r.text and "<b>" not in r.text
    if r.headers["content-type"].startswith("text/html"):
        assert r.headers["content-security-policy"] == CSP_PAGE
        assert "&lt;img src=x onerror=alert(1)&gt;" in r.text or "&lt;b&gt;" in r.text


def test_a_non_latin_user_id_signs_in_through_an_encoded_cookie(client):  # noqa: F811
    # found by the fuzzer: the cookie header is Latin-1, so "顾客42" as a raw cookie value was a 500
    r = client.get("/shop/products/p1", params={"user_id": "顾客42"})
    assert r.status_code == 200 and "%E9%A1%BE" in r.headers["set-cookie"]
    again = client.get("/shop/products/p1")  # the client sends the cookie back
    assert again.status_code == 200 and 'id="note"' in again.text  # signed in: a personalized note


def test_the_ingress_logs_through_the_scrubbing_filter(ingress, caplog):  # noqa: F811
    import logging

    from core.pii import ScrubFilter

    log = logging.getLogger("shopgraph.serve")
    assert any(isinstance(f, ScrubFilter) for f in log.filters)  # installed by serve.http.make_api
    with caplog.at_level(logging.WARNING, logger="shopgraph.serve"):
        log.warning("retriever failed for %s", "shopper jo@example.com, tel +44 20 7946 0958")
    assert "jo@example.com" not in caplog.text and "7946" not in caplog.text and "[email]" in caplog.text
