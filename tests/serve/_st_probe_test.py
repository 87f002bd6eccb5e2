from types import SimpleNamespace

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from ray import serve as rs

from tests.serve.test_stream import _ingress

ING = _ingress()
schema = schemathesis.openapi.from_asgi("/openapi.json", ING.http_app)


@pytest.fixture(autouse=True)
def ctx(monkeypatch):
    monkeypatch.setattr(rs, "get_replica_context", lambda: SimpleNamespace(servable_object=ING))


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case):
    case.call_and_validate()
