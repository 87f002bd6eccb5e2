"""The HTTP layer of the ingress: the FastAPI app, OpenAI-style error bodies, request-body limits
and the request counter.

    from serve.http import ApiError, make_api

Every error leaves as `{"error": {"message", "type", "param", "code"}}`: `ApiError` raised by a
route, request validation (400 for a body that is not JSON, not UTF-8 or nested deeper than
`MAX_JSON_DEPTH`; 422 otherwise), the framework's own errors (404 unmatched route, 405 wrong
method with its `Allow` header), 413 for bodies over the limit, and anything unexpected (500,
logged). `make_api()` builds the app with these handlers, the body checks and the counter; the
ingress module defines its routes on it and puts its replica's settings on `api.state`:
`max_body_bytes`, `body_limits` (path -> bytes, for the event batches) and `requests` (a
prometheus Counter labelled endpoint, status), and those of `serve.security`'s middleware (rate
limits, CORS, security headers). An unmatched path under `/shop/` (the demo's pages) gets an HTML
error page, escaped like every page.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.pii import install_log_filter
from serve.schemas import ErrorBody, ErrorDetail
from serve.security import Cors, RateLimit, SecurityHeaders

log = logging.getLogger("shopgraph.serve")

# No request of this API nests deeper than 3 (body -> filters -> value); 64 leaves room for
# clients that wrap it, and stops a 5,000-deep body long before the JSON parser recurses.
MAX_JSON_DEPTH = 64
_MAX_ECHO = 200  # characters of a client's path quoted back in an error message


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body: status, message, type and the offending parameter."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


def error_response(
    status: int, message: str, type_: str, param: str | None = None, headers: dict | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(message=message, type=type_, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _api_error(_: Request, e: ApiError):
    return error_response(e.status, e.message, e.type, e.param, e.headers)


def require_scope(scope: str):
    """A route dependency: the request must hold `scope` (`users:erase`, `admin`, ...).

    The replica puts its bearer-key check on `app.state.authorize` (`online.api_keys`, hashed, with
    scopes): 401 without a known key, 403 without the scope. `privacy.allow_unauthenticated_admin:
    true` lets every request through (a private demo only). Without either the route answers 401
    with an OpenAI-style body and `WWW-Authenticate: Bearer`, before it runs."""

    def check(request: Request) -> None:
        if getattr(request.app.state, "allow_unauthenticated_admin", False):
            return
        authorize = getattr(request.app.state, "authorize", None)
        if authorize is not None:
            authorize(request.headers.get("authorization"), scope)
            return
        raise ApiError(
            401,
            f"this route needs an API key with scope '{scope}'; none is configured, and "
            "privacy.allow_unauthenticated_admin is off",
            "authentication_error",
            headers={"WWW-Authenticate": f'Bearer scope="{scope}"'},
        )

    check.scope = scope  # for the OpenAPI description and tests
    return check


def _body_hint(request: Request) -> str:
    """What the route's body must be: its model's `body_hint`, e.g. 'with user_id or recent_items'."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return getattr(model, "body_hint", "")


async def _validation_error(request: Request, e: RequestValidationError):
    errors = e.errors()
    first = errors[0]
    if first.get("type") == "json_invalid":
        return error_response(
            400,
            f"request body is not valid JSON: {first.get('ctx', {}).get('error') or first.get('msg')}",
            "invalid_request_error",
        )

    def path(err) -> str:  # the field or parameter, without where it was (body, query, path, cookie)
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "cookie", "header"):
            loc = loc[1:]
        return ".".join(str(p) for p in loc)

    if first.get("loc") == ("body",) and first.get("type") in (
        "missing",
        "model_attributes_type",
        "dict_type",
        "model_type",
    ):
        # No body, `null`, a list or a string: the body itself is wrong, not one of its fields.
        hint = _body_hint(request)
        return error_response(
            422, "the request body must be a JSON object" + (f" {hint}" if hint else ""), "invalid_request_error"
        )
    too_many = next(
        (err for err in errors if err.get("type") == "too_long" and err.get("loc") == ("body", "events")), None
    )
    if too_many is not None:  # a batch over the schema's bound: the same 413 as over online.max_batch_events
        return error_response(413, f"events: {too_many.get('msg')}", "invalid_request_error", "events")
    param = path(first) or None
    msgs = "; ".join(f"{path(err)}: {err.get('msg')}" if path(err) else str(err.get("msg")) for err in errors[:5])
    return error_response(422, msgs, "invalid_request_error", param)


async def _http_error(request: Request, e: StarletteHTTPException):
    """The framework's own errors (unmatched route, wrong method, unparseable body) in the API's shape."""
    where = request.url.path[:_MAX_ECHO]
    if e.status_code == 404 and request.url.path.startswith("/shop/"):
        from serve.page import error_page

        return HTMLResponse(error_page(404, f"no page at {where}"), status_code=404)
    if e.status_code == 404:
        return error_response(
            404, f"no route {request.method} {where}; see /docs for the API", "not_found_error", headers=e.headers
        )
    if e.status_code == 405:
        allowed = (e.headers or {}).get("Allow", "")
        return error_response(
            405,
            f"{request.method} is not allowed on {where}; use {allowed or 'another method'}",
            "invalid_request_error",
            headers=e.headers,
        )
    cause = e.__cause__
    if e.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return error_response(
            400, "request body is not valid UTF-8; send JSON encoded as UTF-8", "invalid_request_error"
        )
    if e.status_code == 400 and isinstance(cause, RecursionError):
        return error_response(
            400, f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels", "invalid_request_error"
        )
    kind = "server_error" if e.status_code >= 500 else "invalid_request_error"
    return error_response(e.status_code, str(e.detail), kind, headers=e.headers)


async def _unexpected(_: Request, e: Exception):
    log.exception("unexpected error")
    return error_response(500, f"internal error ({type(e).__name__}); the request was not applied", "server_error")


def json_depth_over(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `body` nests arrays/objects deeper than `limit` (brackets inside strings ignored).
    A body with no more than `limit` brackets in all cannot: the common case costs two C scans."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for c in body:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif c in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


class _CheckBody:
    """Request bodies before any route sees them: 413 over `serve.limits.max_body_bytes`, 400 for
    bytes that are not UTF-8 or JSON nested deeper than `MAX_JSON_DEPTH`. A plain ASGI middleware:
    the `@app.middleware("http")` form (BaseHTTPMiddleware) cost ~8% of the ingress's CPU per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        state = scope["app"].state
        limit = getattr(state, "body_limits", {}).get(scope["path"]) or getattr(state, "max_body_bytes", 64 * 1024)
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > limit:
            return await error_response(
                413, f"request body is {length} bytes; the limit is {limit}", "invalid_request_error"
            )(scope, receive, send)
        messages, chunks, size, more = [], [], 0, True
        while more:  # read it all (with or without a length), check it, then replay it downstream
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await error_response(413, f"request body is over {limit} bytes", "invalid_request_error")(
                    scope, receive, send
                )
        body = b"".join(chunks)
        problem = None
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            problem = f"request body is not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8"
        if problem is None and json_depth_over(body):
            problem = f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels"
        if problem:
            return await error_response(400, problem, "invalid_request_error")(scope, receive, send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


class _CountRequests:
    """Count every response by endpoint (the route template, `unmatched` for none) and status in
    `api.state.requests`, whoever answered: a route, validation, the body checks, the framework's
    404/405, or an unexpected error (500). The outermost middleware but one: Starlette's
    ServerErrorMiddleware sends the 500 outside it, so an exception that gets here counts as 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            counter = getattr(scope["app"].state, "requests", None)
            if counter is not None:
                counter.labels(_endpoint(scope), str(status)).inc()


def _endpoint(scope) -> str:
    """The route template that matched (never the raw path: no product or user ids as labels).
    A body rejected before routing has no route yet: it is matched here, on that rare path."""
    route = scope.get("route")
    if route is None:
        for candidate in scope["app"].routes:
            match, _ = candidate.matches(scope)
            if match != Match.NONE:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


class ReplicaState(State):
    """`app.state` for settings a replica puts there at start-up (limits, its key check, its counters).

    They belong to the process that set them: a copy of the app (`serve.ingress` freezes one with the
    class, and deploying pickles the class again) starts with an empty state. Otherwise a replica
    built in this process, as unit tests and tools do, would ship its live objects inside every later
    deployment of the class, and one that cannot be pickled (a lock, a weak reference, a bound
    metric) makes `serve.run` fail."""

    def __reduce__(self):
        return (type(self), ())


def make_api() -> FastAPI:
    """The ingress's FastAPI app with shopgraph's error handlers, body checks and request counter.
    Also puts `core.pii`'s scrubbing filter on the shopgraph loggers of this process."""
    install_log_filter()
    api = FastAPI(
        title="shopgraph",
        version="1",
        description="Personalized recommendations with readable reasons, and grounded product pages.",
        # every route may answer 429 when serve.security.rate_limit is on
        responses={429: {"model": ErrorBody, "description": "Rate limit exceeded; see the Retry-After header."}},
    )
    api.state = ReplicaState()
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected)
    api.add_middleware(_CheckBody)
    api.add_middleware(RateLimit)  # before the body is read: a flood costs no body reads
    api.add_middleware(Cors)  # outside the limit: preflights are answered, a 429 carries CORS headers
    api.add_middleware(SecurityHeaders)
    api.add_middleware(_CountRequests)  # added last: outermost, so it sees every other answer
    return api
