"""Pseudonymous users and erasure in the ingress, without Ray (the in-process harness of
tests/serve/test_stream.py): raw ids sent to every route that takes one never reach a log line,
a metric, a cache, the ingress's state or a prompt; `DELETE /v1/users/{id}` stops every later
answer from using the user's history and purges what it produced; export says what is held;
the admin routes answer 401 unless allowed.

    pytest -q tests/serve/test_privacy.py
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from serve.http import make_api, require_scope
from serve.schemas import RecommendationRequest
from serve.testing import echo_facts, privacy_for_tests
from tests.serve.test_stream import INGRESS, _ingress

PLANTED = [
    "ZQX-PLANTED-USER-7f3a9c",
    "jane.doe@example.com",
    "+1 (415) 555-0132",
    "+86 138 0013 8000",
    "4111 1111 1111 1111",
]


def _shop(respond, privacy=None):
    """An ingress whose catalog (as built from shards) knows every planted user by pseudonym."""
    privacy = privacy or privacy_for_tests()
    ingress = _ingress(respond, privacy=privacy)
    pz = privacy[0]
    for raw in PLANTED:
        ingress.catalog.user_history[pz.user_key(raw)] = np.asarray([1], np.int64)  # viewed p2
        ingress.catalog.user_purchases[pz.user_key(raw)] = {"p2"}
    return ingress


async def _drain(ingress):
    while len(ingress.queue) or ingress.queue.running:
        await asyncio.sleep(0.01)


async def _every_route(ingress, raw: str):
    rec = await INGRESS.recommendations(ingress, RecommendationRequest(user_id=raw, k=2, wait_ms=2000))
    page, _ = await INGRESS._page(ingress, "p1", raw, "2000")
    stream = await INGRESS.product_page_stream(ingress, "p1", raw, "2000")
    body = "".join([chunk async for chunk in stream.body_iterator])
    html = await INGRESS.shop_page(ingress, "p1", user_id=raw, debug="1", shopgraph_user=None)
    return rec, page, body, html.body.decode()


def test_raw_ids_reach_no_log_metric_cache_state_or_prompt(caplog):
    prompts: list[str] = []

    def recording(messages):
        prompts.append(json.dumps(messages, ensure_ascii=False))
        return echo_facts(messages)

    caplog.set_level(logging.DEBUG)
    ingress = _shop(recording)

    async def main():
        out = {}
        for raw in PLANTED:
            out[raw] = await _every_route(ingress, raw)
        await _drain(ingress)
        metrics = (await INGRESS.metrics(ingress)).body.decode()
        return out, metrics

    out, metrics = asyncio.run(main())
    for raw, (rec, page, stream_body, html) in out.items():
        # The raw id was hashed before any lookup: the history stored under the pseudonym was found.
        assert not rec.cold_start and rec.user_id == raw  # the client's own id is echoed in the body
        assert page.note_source in ("generated", "cached") and page.personalized_note
        assert "event: note" in stream_body and raw not in stream_body and raw not in html
    assert prompts, "the fake engine saw no prompt: the scan below would prove nothing"
    held = [
        *prompts,
        metrics,
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        repr(ingress.cache._data),
        repr(dict(ingress._user_keys)),
        repr(ingress.catalog.user_history),
        repr(ingress.catalog.user_purchases),
        repr(ingress.queue.stats()),
    ]
    assert len(ingress._user_keys) == len(PLANTED)  # per-user state exists, under pseudonyms
    for raw in PLANTED:
        assert not [h[:200] for h in held if raw in h], raw


def test_erasure_stops_every_later_answer_from_using_the_history_and_purges_its_copy():
    privacy = privacy_for_tests()
    ingress = _shop(echo_facts, privacy)
    other = _shop(echo_facts, privacy)  # a second replica: same tombstone store, re-read every time
    raw = "jane.doe@example.com"

    async def main():
        before = await INGRESS.recommendations(ingress, RecommendationRequest(user_id=raw, k=2, wait_ms=2000))
        page, _ = await INGRESS._page(ingress, "p1", raw, "2000")
        exported = await INGRESS.export_user(ingress, raw)
        erased = await INGRESS.erase_user(ingress, raw)
        after = await INGRESS.recommendations(ingress, RecommendationRequest(user_id=raw, k=2))
        page_after, _ = await INGRESS._page(ingress, "p1", raw)
        elsewhere = await INGRESS.recommendations(other, RecommendationRequest(user_id=raw, k=2))
        exported_after = await INGRESS.export_user(ingress, raw)
        still = await INGRESS.recommendations(ingress, RecommendationRequest(user_id=PLANTED[0], k=2))
        return before, page, exported, erased, after, page_after, elsewhere, exported_after, still

    before, page, exported, erased, after, page_after, elsewhere, exported_after, still = asyncio.run(main())
    assert not before.cold_start and page.personalized_note
    assert exported["history_product_ids"] == ["p2"] and exported["purchased_product_ids"] == ["p2"]
    assert exported["cached_copy"] and exported["tombstone"] is None and raw not in json.dumps(exported["cached_copy"])
    assert erased["erased"] and erased["new_tombstones"] == 1 and erased["purged"]["cache_entries"] >= 1
    assert erased["store"]["store"] == "none"  # the online store's seam, not wired yet
    pz = privacy[0]
    assert pz.user_key(raw) not in ingress.catalog.user_history and pz.user_key(raw) not in ingress._user_keys
    # No later answer uses the history: the user is anonymous (cold start, no note), on both replicas.
    assert after.cold_start and page_after.personalized_note is None and page_after.note_source == "none"
    assert elsewhere.cold_start
    assert exported_after["history_product_ids"] == [] and exported_after["cached_copy"] == []
    assert exported_after["tombstone"]["user_key"] == pz.user_key(raw) and exported_after["user_id"] == raw
    assert "jane" not in json.dumps({k: v for k, v in exported_after.items() if k != "user_id"})  # only the echo
    assert not still.cold_start  # other users are untouched


def test_admin_routes_check_the_user_id():
    from serve.http import ApiError

    ingress = _shop(echo_facts)
    for bad, needle in (("", "empty"), ("   ", "empty"), ("x" * 600, "characters long")):
        for route in (INGRESS.erase_user, INGRESS.export_user):
            with pytest.raises(ApiError, match=needle) as e:
                asyncio.run(route(ingress, bad))
            assert e.value.status == 422 and e.value.param == "user_id"


def test_admin_routes_answer_401_unless_unauthenticated_admin_is_enabled():
    from serve.ingress import api

    guarded = {
        (route.path, tuple(route.methods)): [d.call for d in route.dependant.dependencies]
        for route in api.routes
        if getattr(route, "path", "").startswith("/v1/users")
    }
    assert set(guarded) == {("/v1/users/{user_id}", ("DELETE",)), ("/v1/users/{user_id}/export", ("GET",))}
    for calls in guarded.values():  # (Serve's class-based routes add their own `self` dependency)
        assert [c.scope for c in calls if hasattr(c, "scope")] == ["users:erase"]

    app = make_api()  # the ingress's error handlers, with one guarded route

    @app.delete("/v1/users/{user_id}", dependencies=[Depends(require_scope("users:erase"))])
    async def erase(user_id: str) -> dict:
        return {"erased": True}

    client = TestClient(app)
    response = client.delete("/v1/users/jane")
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == 401 and "users:erase" in error["message"]
    app.state.allow_unauthenticated_admin = True
    assert client.delete("/v1/users/jane").json() == {"erased": True}


def test_during_a_key_rotation_histories_under_the_old_key_still_serve():
    from core.privacy import Key, Pseudonymizer

    old_pz, tombstones, cfg = privacy_for_tests()
    rotated = Pseudonymizer([Key("t2", b"shopgraph-test-key-rotated-000"), *old_pz.keys])
    ingress = _shop(echo_facts, (rotated, tombstones, cfg))  # history keyed under the new key
    raw = PLANTED[0]
    ingress.catalog.user_history.pop(rotated.user_key(raw))
    ingress.catalog.user_history[old_pz.user_key(raw)] = np.asarray([1], np.int64)  # shards still under t1
    assert ingress._user(raw) == old_pz.user_key(raw)
    rec = asyncio.run(INGRESS.recommendations(ingress, RecommendationRequest(user_id=raw, k=2)))
    assert not rec.cold_start
    assert ingress._user("someone new") == rotated.user_key("someone new")  # new ids: the current key
    erased = asyncio.run(INGRESS.erase_user(ingress, raw))
    assert erased["kids"] == ["t2", "t1"] and erased["new_tombstones"] == 2 and ingress._user(raw) is None
