"""Abuse limits and browser-facing headers of the ingress's HTTP API (`serve.security` config).

    from serve.security import TokenBuckets, RateLimit, Cors, SecurityHeaders, CSP_PAGE

Plain ASGI middleware (as `serve.http`'s body checks), each reading its replica's settings from
`api.state`, which the ingress sets up (`Ingress._setup`):

- `RateLimit` (`api.state.rate_limiter`, a `TokenBuckets` or None when off): one token bucket per
  identity, the API key (sha256 of the bearer token: the token itself is never kept) when the
  request carries an `Authorization` header, else the client address (or a trusted proxy's
  forwarded-for header). Over the limit -> 429 with `Retry-After` and an OpenAI-style body.
  Health, readiness and metrics are never limited (probes must not be starved by a flood).
- `Cors` (`api.state.cors_origins`): off unless origins are configured. A configured origin gets
  `Access-Control-Allow-Origin` (and `Vary: Origin`) on its responses and an answer to its
  preflight; any other origin gets no CORS header at all, so browsers keep the same-origin rule.
- `SecurityHeaders`: `X-Content-Type-Options: nosniff` on every response, and on HTML responses
  a Content-Security-Policy: the shop pages allow no script at all and only their own inline
  stylesheet, by hash (`CSP_PAGE`); FastAPI's /docs and /redoc (static pages that load Swagger
  UI / ReDoc from a CDN and reflect nothing from the request) get `CSP_DOCS`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict

from serve.page import PAGE_CSS

_UNLIMITED = ("/healthz", "/readyz", "/metrics")
_DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def _style_hash(css: str) -> str:
    import base64

    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode() + "'"


CSP_PAGE = (
    f"default-src 'none'; style-src {_style_hash(PAGE_CSS)}; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
CSP_DOCS = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; font-src https://fonts.gstatic.com; "
    "base-uri 'none'; frame-ancestors 'none'"
)


class TokenBuckets:
    """Token buckets by identity: `rate` tokens per second up to `burst`; `take(key)` spends one
    and returns 0.0, or returns the seconds until one is available. At most `max_keys` buckets:
    the least recently used is dropped first (that client starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000, clock=time.monotonic):
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, last = self.buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self.buckets[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        while len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return wait


class RateLimiter:
    """The two limits of `serve.security.rate_limit`: per API key and per client address."""

    def __init__(self, cfg):
        self.header = cfg.forwarded_for_header.lower().encode("latin-1") if cfg.forwarded_for_header else None
        self.by_key = TokenBuckets(cfg.per_key_rps, cfg.per_key_burst, cfg.max_clients)
        self.by_address = TokenBuckets(cfg.per_address_rps, cfg.per_address_burst, cfg.max_clients)

    def identity(self, scope) -> tuple[str, str]:
        """("key", sha256 of the bearer token) or ("address", the client address)."""
        headers = dict(scope.get("headers") or ())
        auth = headers.get(b"authorization")
        if auth:
            return "key", hashlib.sha256(auth.strip()).hexdigest()
        if self.header is not None and (forwarded := headers.get(self.header)):
            return "address", forwarded.decode("latin-1").split(",")[-1].strip()[:64]
        client = scope.get("client")
        return "address", client[0] if client else "unknown"

    def check(self, scope) -> tuple[str, float]:
        kind, who = self.identity(scope)
        return kind, (self.by_key if kind == "key" else self.by_address).take(who)


class RateLimit:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        limiter = getattr(scope["app"].state, "rate_limiter", None) if scope["type"] == "http" else None
        if limiter is None or scope["path"] in _UNLIMITED or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        kind, wait = limiter.check(scope)
        if wait > 0:
            from serve.http import error_response

            retry = max(1, math.ceil(wait))
            who = "API key" if kind == "key" else "client address"
            return await error_response(
                429,
                f"rate limit exceeded for this {who}; retry after {retry} s (serve.security.rate_limit)",
                "rate_limit_error",
                headers={"Retry-After": str(retry)},
            )(scope, receive, send)
        return await self.app(scope, receive, send)


class Cors:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        origins = getattr(scope["app"].state, "cors_origins", ()) if scope["type"] == "http" else ()
        origin = next((v for k, v in scope.get("headers") or () if k == b"origin"), None) if origins else None
        if origin is None or origin.decode("latin-1") not in origins:
            return await self.app(scope, receive, send)
        allow = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        headers = dict(scope["headers"])
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:  # a preflight
            allow += [
                (b"access-control-allow-methods", b"GET, POST, DELETE"),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", b"600"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": allow})
            return await send({"type": "http.response.body", "body": b""})

        async def with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *allow]}
            await send(message)

        return await self.app(scope, receive, with_cors)


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = (CSP_DOCS if scope["path"] in _DOCS else CSP_PAGE).encode("latin-1")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
                kind = next((v for k, v in headers if k == b"content-type"), b"")
                if kind.startswith(b"text/html"):
                    headers += [(b"content-security-policy", csp), (b"referrer-policy", b"same-origin")]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, with_headers)
