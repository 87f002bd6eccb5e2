"""The ingress's request flow without Ray, around in-process fake stages (serve.testing): answers
that never wait on generation unless asked, background generation filling the cache, stages that
die or hang (skipped, labelled `degraded`, never `cold_start` for a known user), readiness from
cached probes, and the batch job's precomputed reasons.

    pytest -q tests/serve/test_ingress.py
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from serve.http import ApiError
from serve.schemas import RecommendationRequest
from tests.serve.test_stream import INGRESS, USER, _catalog, _ingress


def _recs(ingress, **body):
    return INGRESS.recommendations(ingress, RecommendationRequest(**{"user_id": USER, "k": 2, **body}))


async def _drain(ingress):
    while len(ingress.queue) or ingress.queue.running:
        await asyncio.sleep(0.01)


def test_reasons_never_wait_unless_asked_and_the_queue_fills_the_cache():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, delay_s=0.2)
        first = await _recs(ingress)
        assert {i.reason_source for i in first.items} == {"template"} and first.degraded == []
        assert not first.cold_start and all(i.reason for i in first.items)
        assert ingress.queue.events["submitted"] == len(first.items)
        again = await _recs(ingress)  # still generating: the same jobs, not new ones
        assert ingress.queue.events["deduplicated"] == len(again.items)
        await _drain(ingress)
        cached = await _recs(ingress)
        assert {i.reason_source for i in cached.items} == {"cached"}

    asyncio.run(main())


def test_a_client_may_wait_for_generation_within_its_wait_ms():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, delay_s=0.05)
        waited = await _recs(ingress, wait_ms=2000)
        assert {i.reason_source for i in waited.items} == {"generated"} and waited.content_source == "generated"

    asyncio.run(main())


def test_wait_ms_is_validated_and_capped_by_config():
    async def main():
        ingress = _ingress(budgets={"max_wait_ms": 500})
        with pytest.raises(ApiError) as e:
            await _recs(ingress, wait_ms=501)
        assert e.value.status == 422 and e.value.param == "wait_ms" and "500" in e.value.message
        for bad in ("soon", "-1", "9999"):
            with pytest.raises(ApiError) as e:
                await INGRESS._page(ingress, "p1", None, bad)
            assert e.value.status == 422 and e.value.param == "wait_ms"

    asyncio.run(main())
    with pytest.raises(ValueError):  # strict JSON types, as every field
        RecommendationRequest(user_id=USER, wait_ms="100")


def test_page_waits_for_sections_note_and_reasons_at_the_same_time():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, delay_s=0.3)
        engine = ingress.generator.core.engine
        peak = [0]

        async def watch():
            while True:
                peak[0] = max(peak[0], engine.active)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        page, _ = await INGRESS._page(ingress, "p1", USER, "2000")
        watcher.cancel()
        assert page.sections_source == "generated" and page.note_source == "generated"
        assert [i.reason_source for i in page.also_like] == ["generated"]
        assert peak[0] >= 3  # sections, note and the also-like reason generated at once, not one after another

    asyncio.run(main())


def test_an_uncached_page_answers_at_once_with_template_copy():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, delay_s=0.2)
        page, _ = await INGRESS._page(ingress, "p1", USER)
        assert page.sections_source == "template" and page.note_source == "template" and page.degraded == []
        await _drain(ingress)
        page, _ = await INGRESS._page(ingress, "p1", USER)
        assert page.sections_source == "cached" and page.note_source == "cached"

    asyncio.run(main())


def test_a_hung_generator_is_cancelled_after_its_budget_and_aborts_the_engine():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, delay_s=30.0, budgets={"reasons_ms": 100})
        engine = ingress.generator.core.engine
        r = await _recs(ingress, wait_ms=50)
        assert {i.reason_source for i in r.items} == {"template"}
        await _drain(ingress)
        assert ingress.queue.events["timeout"] == len(r.items)
        await asyncio.sleep(0.05)  # the cancellation reaches the engine's stream
        assert engine.active == 0 and engine.aborted == len(r.items)
        assert ingress.generator.core.completions["cancelled"] == len(r.items)

    asyncio.run(main())


def test_a_dead_generator_is_skipped_at_once_and_labelled():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, fail=True)
        await ingress.monitor.probe_once()
        assert ingress.monitor.state("generator") == "down" and ingress.breakers["generator"].state == "open"
        r = await _recs(ingress, wait_ms=2000)
        assert r.degraded == ["generator"] and not r.cold_start
        assert {i.reason_source for i in r.items} == {"template"} and ingress.queue.events["submitted"] == 0
        page, _ = await INGRESS._page(ingress, "p1", USER, "2000")
        assert page.degraded == ["generator"] and page.sections_source == "template"
        # Back: the next probe closes the breaker and generation resumes.
        ingress.generator.core.engine.fail = False
        await ingress.monitor.probe_once()
        r = await _recs(ingress, wait_ms=2000)
        assert r.degraded == [] and {i.reason_source for i in r.items} == {"generated"}

    asyncio.run(main())


def test_a_full_queue_sheds_and_says_the_generator_was_lost():
    from serve.testing import echo_facts

    async def main():
        ingress = _ingress(echo_facts, delay_s=5.0)
        ingress.queue.max_length = 0
        r = await _recs(ingress)
        assert r.degraded == ["generator"] and ingress.queue.events["shed"] == 1
        await ingress.monitor.probe_once()  # it answers, but cannot take more: busy, not down
        assert (
            ingress.monitor.state("generator") == "busy" and "queue full" in ingress.monitor.health["generator"].detail
        )
        assert ingress.breakers["generator"].state == "closed"
        await ingress.queue.close()

    asyncio.run(main())


@pytest.mark.parametrize("stage", ["retriever", "ranker"])
def test_a_dead_stage_is_labelled_never_cold_start_and_skipped_once_its_breaker_opens(stage):
    async def main():
        ingress = _ingress(generator=False)
        handle = ingress.retriever if stage == "retriever" else ingress.ranker
        handle.fail = True
        for _ in range(3):  # serve.health.breaker_failures
            r = await _recs(ingress)
            assert r.degraded == [stage] and not r.cold_start and r.items
        calls = handle.calls
        r = await _recs(ingress)
        assert handle.calls == calls and r.degraded == [stage]  # open: not called at all
        if stage == "ranker":  # the retriever's candidates, under the same rules
            assert [i.evidence[0].type for i in r.items] == ["recommended", "recommended"]
        else:
            assert {i.evidence[0].type for i in r.items} == {"popular"}
        anonymous_unknown = await INGRESS.recommendations(
            ingress, RecommendationRequest(user_id="someone-new", k=2, with_reasons=False)
        )
        assert anonymous_unknown.cold_start  # a user with no history is a cold start, stage or not

    asyncio.run(main())


@pytest.mark.parametrize("stage", ["retriever", "ranker"])
def test_an_overloaded_stage_is_skipped_per_request_and_never_counted_as_down(stage):
    """A stage whose queue is full (Serve's max_queued_requests) refuses at once: that request is
    answered degraded, as for a dead stage, but the breaker stays closed (the next request tries
    it again), the probe reads busy, not down, and the metrics name the cause."""

    async def main():
        ingress = _ingress(generator=False)
        handle = ingress.retriever if stage == "retriever" else ingress.ranker
        await _recs(ingress)  # the first request also waits for the first probe round
        handle.overloaded, calls = True, handle.calls
        for _ in range(5):  # more than serve.health.breaker_failures
            r = await _recs(ingress)
            assert r.degraded == [stage] and not r.cold_start and len(r.items) == 2
        assert ingress.breakers[stage].state == "closed" and handle.calls == calls + 5  # tried every time
        await ingress.monitor.probe_once()
        assert ingress.monitor.state(stage) == "busy" and "overload" in ingress.monitor.health[stage].detail
        assert ingress.breakers[stage].state == "closed"
        text = (await INGRESS.metrics(ingress)).body.decode()
        assert f'shopgraph_fallbacks_total{{stage="{stage}",why="overloaded"}} 5.0' in text
        handle.overloaded = False  # drained: used again at once
        r = await _recs(ingress)
        assert r.degraded == [] and handle.calls == calls + 7  # the probe, then this request
        await ingress.monitor.close()

    asyncio.run(main())


def test_a_background_generation_refused_for_overload_never_opens_the_generators_breaker():
    """The generation queue reports Serve's refusal as cause `overloaded`: counted as a fallback
    with that cause, never as a failure of the generator; a real failure still counts."""

    async def main():
        ingress = _ingress(generator=True)
        failures = ingress.breakers["generator"].failures
        for _ in range(failures + 1):
            ingress._job_outcome("failed", "overloaded")
        assert ingress.breakers["generator"].state == "closed"
        text = (await INGRESS.metrics(ingress)).body.decode()
        assert f'shopgraph_fallbacks_total{{stage="generator",why="overloaded"}} {failures + 1}.0' in text
        for _ in range(failures):
            ingress._job_outcome("failed", "RuntimeError")
        assert ingress.breakers["generator"].state == "open"
        await ingress.monitor.close()

    asyncio.run(main())


def test_a_hung_stage_costs_its_budget_once_then_nothing():
    async def main():
        ingress = _ingress(generator=False, budgets={"retrieval_ms": 50})
        ingress.retriever.delay_s = 10.0
        await ingress.monitor.probe_once()
        await ingress.monitor.probe_once()  # two probe timeouts: down
        assert ingress.monitor.state("retriever") == "down"
        r = await _recs(ingress)
        assert r.degraded == ["retriever"] and "retrieve" not in r.timings_ms

    asyncio.run(main())


def test_readyz_reads_cached_probes_and_is_503_only_without_retriever_or_ranker():
    from serve.testing import echo_facts

    def body(response):
        return response.status_code, json.loads(response.body)

    async def main():
        ingress = _ingress(echo_facts, fail=True)
        status, ready = body(await INGRESS.readyz(ingress))  # the first call waits for the first probe round
        assert status == 200 and ready["ready"] and ready["recommendations"] == "ok"
        assert ready["generator"] == "down" and ready["stages"]["retriever"]["state"] == "ok"
        assert set(ready["queue"]) >= {"waiting", "running", "shed", "expired"}
        ingress.ranker.fail = True
        await ingress.monitor.probe_once()
        ingress.ranker.delay_s = 60  # /readyz does not call the stages: it answers anyway
        status, ready = body(await asyncio.wait_for(INGRESS.readyz(ingress), 0.1))
        assert status == 503 and not ready["ready"] and ready["stages"]["ranker"]["state"] == "down"
        assert "ranker" in ready["recommendations"]
        await ingress.monitor.close()

    asyncio.run(main())


def test_metrics_count_fallbacks_by_stage_and_cause():
    async def main():
        ingress = _ingress(generator=False, budgets={"retrieval_ms": 50})
        ingress.retriever.delay_s = 10.0
        await _recs(ingress)
        ingress.retriever.delay_s, ingress.retriever.fail = 0.0, True
        await _recs(ingress)
        text = (await INGRESS.metrics(ingress)).body.decode()
        assert 'shopgraph_fallbacks_total{stage="retriever",why="timeout"} 1.0' in text
        assert 'shopgraph_fallbacks_total{stage="retriever",why="RuntimeError"} 1.0' in text
        assert "shopgraph_generation_queue" in text and "shopgraph_stage_up" in text

    asyncio.run(main())


# ----------------------------------------------------------------------------- precomputed reasons


def test_precomputed_reasons_are_loaded_under_the_key_the_ingress_looks_up(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.config import load_config
    from core.layout import ArtifactLayout
    from core.manifest import write_manifest
    from serve.catalog import facts_hash
    from serve.content import load_precomputed

    catalog = _catalog()
    ingress = _ingress(generator=False)
    scored = asyncio.run(ingress._recommend(RecommendationRequest(user_id=USER, k=1), 1e12))[0][0]
    history = np.asarray([1], np.int64)
    _, key = ingress._reason_input(scored, history)
    pid = scored.product_id
    fhash = facts_hash(catalog.products[pid], "USD")
    rows = [
        (pid, key, "fake-1", fhash, "Picked for you from your favourite mugs."),  # current
        (pid, "other|key", "fake-1", "stale-hash", "Old facts."),  # the facts changed since
        (pid, "other|key", "old-model", fhash, "Another model wrote this."),
        ("gone", key, "fake-1", fhash, "A product no longer sold."),
        (pid, "empty|key", "fake-1", fhash, "  "),
    ]
    cfg = load_config(overrides=[f"artifacts.root={tmp_path}"])
    content = Path(ArtifactLayout(cfg.artifacts.root).content)
    (content / "reasons").mkdir(parents=True)
    columns = ["product_id", "key", "model_version", "facts_hash", "text"]
    pq.write_table(
        pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)}), content / "reasons" / "0.parquet"
    )
    pq.write_table(pa.table({"product_id": [pid]}), content / "reasons" / "not-reasons.parquet")  # skipped, logged
    write_manifest(content, {})

    assert load_precomputed(cfg, ingress.cache, "fake-1", catalog) == 1
    r = asyncio.run(_recs(ingress, k=1))
    assert r.items[0].reason_source == "cached" and r.items[0].reason == "Picked for you from your favourite mugs."
