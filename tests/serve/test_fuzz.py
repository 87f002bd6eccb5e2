"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), in the suite:
every operation gets generated valid and invalid requests; no answer may be a server error (5xx),
break its documented schema, status, content type or headers, or accept a request the schema
forbids. Bounded: `FUZZ_EXAMPLES` examples per operation (about 40 s in all on two cores).

    pytest -q tests/serve/test_fuzz.py
    python scripts/fuzz_api.py --minutes 5      # the longer campaign, with its figures

The app is the ingress's FastAPI app around an in-process Ingress (fake stages and engine, as
tests/serve/test_http.py), called as ASGI.
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serve.test_stream import _ingress

FUZZ_EXAMPLES = 25
# What the suite holds the API to. positive_data_acceptance is left out on purpose: the schema's
# bounds are the API's widest (MAX_WAIT_MS, MAX_ID_CHARS); a deployment's limits may be stricter
# (serve.budgets.max_wait_ms, serve.limits), and a value between the two is a documented 422.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# An invalid body may be rejected for its size before its content is read: 413 is a rejection too.
FUZZ_TOKEN = "sgk_fuzz_token"  # the write key: every scope
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def _live():
    """The write routes over a real online database (SQLite in a temporary directory, migrated), with
    one key for every scope: fuzzed requests without it get the documented 401."""
    import tempfile

    from core.config.online import OnlineConfig
    from core.store.db import Store, make_engine, upgrade
    from core.store.keys import KeyRing, token_hash
    from serve.live import LiveState

    scopes = ["events:write", "catalog:write", "users:erase", "admin"]
    cfg = OnlineConfig(api_keys=[{"name": "fuzz", "sha256": token_hash(FUZZ_TOKEN), "scopes": scopes}])
    engine = make_engine(f"sqlite:///{tempfile.mkdtemp(prefix='shopgraph-fuzz-')}/shop.db")
    upgrade(engine)
    return LiveState(Store(engine), KeyRing.from_config(cfg), cfg, ["view", "click", "cart", "purchase"])


INGRESS = _ingress(live=_live())


def api_schema(ingress):
    schema = schemathesis.openapi.from_asgi("/openapi.json", ingress.http_app)
    schema.config.checks.negative_data_rejection.expected_statuses = REJECTED
    return schema


schema = api_schema(INGRESS)


@pytest.fixture(autouse=True)
def _replica(monkeypatch):
    """The app calls the Ingress that Serve would bind on a replica (`servable_object`)."""
    from ray import serve as ray_serve

    monkeypatch.setattr(ray_serve, "get_replica_context", lambda: SimpleNamespace(servable_object=INGRESS))


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
def test_api_fuzz(case):
    known_product(case)
    case.call_and_validate(checks=CHECKS)


def known_product(case) -> None:
    """A valid request names a product of the catalog (p1, p2) in two of three cases: a random id
    is only ever a 404, and the pages' real work (with fuzzed query parameters) is what matters.
    Likewise it carries the write key in two of three cases: a random bearer token is only ever a
    401, and the write routes' real work (validation, the database) is what must hold."""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    params = case.path_parameters or {}
    pick = zlib.crc32(repr(sorted((case.query or {}).items())).encode()) % 3
    if "product_id" in params and positive and pick:
        params["product_id"] = f"p{pick}"
    keyed = any(p.name.lower() == "authorization" for p in case.operation.headers)
    drawn = repr((params, case.headers, case.query)) + repr(case.body).split(" at 0x")[0]  # no object address
    if positive and keyed and zlib.crc32(drawn.encode()) % 3:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, "Authorization": f"Bearer {FUZZ_TOKEN}"}
