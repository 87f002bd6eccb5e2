"""serve.metrics: one replica's metrics written to its own registry (what /metrics shows) and,
inside a Ray actor, to Ray's metrics; the generator counts every output by the gate that
rejected it. The Ray side across replicas is tests/serve/test_ray_metrics.py.

    pytest -q tests/serve/test_metrics.py
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from core.config.serve import GenerationConfig
from serve.engine import FakeEngine
from serve.generator import GeneratorCore
from serve.metrics import MetricSet, in_ray_actor
from serve.testing import MUG_FACTS, echo_facts, invent_claims


def _value(ms: MetricSet, name: str, **labels) -> float:
    return ms.registry.get_sample_value(name, labels) or 0.0


def test_a_metric_set_outside_ray_writes_the_replicas_registry_only():
    assert not in_ray_actor()
    ms = MetricSet()
    assert ms.ray is False and ms.tags == {}
    c = ms.counter("sg_things_total", "Things", ["kind"])
    c.labels("a").inc()
    c.labels("a").inc(0)  # Ray refuses 0; the adapter skips it there, prometheus_client counts nothing
    h = ms.histogram("sg_wait_seconds", "Wait", ["stage"])
    h.labels("x").observe(0.003)
    g = ms.gauge("sg_level", "Level")
    g.set(4)
    assert _value(ms, "sg_things_total", kind="a") == 1
    assert _value(ms, "sg_wait_seconds_count", stage="x") == 1
    assert _value(ms, "sg_wait_seconds_bucket", stage="x", le="0.005") == 1
    assert _value(ms, "sg_level") == 4
    assert "sg_things_total" in generate_latest(ms.registry).decode()


def test_malformed_metric_definitions_and_labels_are_refused():
    ms = MetricSet(ray=False)
    with pytest.raises(ValueError, match="_total"):
        ms.counter("sg_things", "no suffix")
    c = ms.counter("sg_things_total", "Things", ["kind", "why"])
    with pytest.raises(ValueError, match=r"takes labels \('kind', 'why'\)"):
        c.labels("only-one")


def test_the_generator_counts_outputs_by_the_gate_that_rejected_them():
    bad = GeneratorCore(FakeEngine(invent_claims), GenerationConfig())
    out = asyncio.run(bad.page(MUG_FACTS))
    assert out["sections"] is None
    ms = bad.metrics
    assert _value(ms, "shopgraph_generator_outputs_total", kind="page", outcome=out["why"]) == 1
    assert _value(ms, "shopgraph_generator_completions_total", event="finished") == 1
    assert _value(ms, "shopgraph_replica_latency_seconds_count", stage="generate_page") == 1

    good = GeneratorCore(FakeEngine(echo_facts), GenerationConfig())
    assert asyncio.run(good.page(MUG_FACTS))["sections"] is not None
    assert _value(good.metrics, "shopgraph_generator_outputs_total", kind="page", outcome="accepted") == 1

    reason = asyncio.run(bad.reason(MUG_FACTS, {"recent_items": ["Brewly T76 Coffee Mug"]}))
    outcome = "accepted" if reason["text"] is not None else reason["why"]
    assert _value(ms, "shopgraph_generator_outputs_total", kind="reason", outcome=outcome) == 1


def test_a_failed_completion_is_counted():
    core = GeneratorCore(FakeEngine(echo_facts, fail=True), GenerationConfig())
    with pytest.raises(RuntimeError):
        asyncio.run(core.page(MUG_FACTS))
    assert _value(core.metrics, "shopgraph_generator_completions_total", event="failed") == 1


def test_an_answer_is_counted_with_the_sentences_grounding_dropped():
    from ml.qa import QuestionMatcher, plan_answer

    plan = plan_answer("What is it made of?", MUG_FACTS, None, QuestionMatcher())
    core = GeneratorCore(
        FakeEngine(lambda m: "It is made of ceramic. It weighs 12 kg."), GenerationConfig(), ["Brewly"]
    )

    async def run():
        return [e async for e in core.stream_answer("What is it made of?", plan)]

    events = asyncio.run(run())
    assert events[0] == {"text": "It is made of ceramic."} and events[-1]["dropped"] == 1  # 12 kg: not a fact
    assert _value(core.metrics, "shopgraph_generator_outputs_total", kind="answer", outcome="accepted") == 1
    assert _value(core.metrics, "shopgraph_generator_removed_claims_total", kind="answer") == 1
    assert _value(core.metrics, "shopgraph_generator_completions_total", event="finished") == 1


def test_gc_pauses_are_queued_by_the_collector_and_observed_by_the_flush():
    """A collection can start inside any allocation, a metrics call included: the callback only
    queues (generation, seconds); the flush (a thread every few seconds, and each /metrics scrape)
    observes them."""
    import gc

    from serve.metrics import GcPauses

    pauses, ms = GcPauses(flush_s=3600), MetricSet(ray=False)
    hist = pauses.watch(ms)
    try:
        gc.collect()
        gc.collect(0)
        assert len(pauses.pending) >= 2
        assert _value(ms, "shopgraph_gc_pause_seconds_count", generation="2") == 0  # not yet observed
        assert pauses.flush() >= 2 and not pauses.pending
        assert _value(ms, "shopgraph_gc_pause_seconds_count", generation="2") >= 1
        assert _value(ms, "shopgraph_gc_pause_seconds_count", generation="0") >= 1
        assert 0 < _value(ms, "shopgraph_gc_pause_seconds_sum", generation="2") < 10
        assert hist.name == "shopgraph_gc_pause_seconds"
        pauses.watch(ms2 := MetricSet(ray=False))  # the process's latest replica gets them
        gc.collect()
        pauses.flush()
        assert _value(ms2, "shopgraph_gc_pause_seconds_count", generation="2") == 1
    finally:
        gc.callbacks.remove(pauses._on_gc)


def test_a_gc_pause_queue_nobody_flushes_stays_bounded():
    from serve.metrics import GcPauses

    pauses = GcPauses(flush_s=3600)
    for _ in range(pauses.pending.maxlen + 10):
        pauses._on_gc("start", {"generation": 0})
        pauses._on_gc("stop", {"generation": 0})
    assert len(pauses.pending) == pauses.pending.maxlen
    assert pauses.flush() == pauses.pending.maxlen and not pauses.pending  # no metric to observe into: dropped
    pauses._on_gc("stop", {"generation": 1})  # a stop without its start (installed mid-collection)
    assert not pauses.pending
