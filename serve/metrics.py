"""Metrics that a replica's own `/metrics` and Ray's metrics endpoint both see.

Each metric is written twice: to the replica's prometheus_client registry (what the ingress's
`/metrics` route returns: one replica's view, what the unit tests read) and, inside a Ray actor,
to `ray.util.metrics`, which every node's metrics agent exports on `metrics_export_port` (8080 on
KubeRay pods). One scrape of that port therefore holds every replica of the node, each tagged
with its `application`, `deployment` and `replica`; `sum by (...)` over `replica` adds them up.

Ray prefixes application metrics with `ray_`: `shopgraph_requests_total` here is
`ray_shopgraph_requests_total` there. `ray_name` gives that name for a dashboard query.

    ms = MetricSet(registry)                      # ray=None: on when running inside a Ray actor
    requests = ms.counter("shopgraph_requests_total", "Requests", ["endpoint", "status"])
    requests.labels("/v1/x", "200").inc()
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

# Tags every Ray-exported shopgraph metric carries (Serve's own metrics use the same names).
REPLICA_TAGS = ("application", "deployment", "replica")
# Seconds; from 1 ms (a cached page) to 10 s (a generated page on CPU).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def ray_name(name: str) -> str:
    """The name Ray's metrics endpoint exports `name` under."""
    return f"ray_{name}"


def in_ray_actor() -> bool:
    """Whether this process is a Ray actor (a Serve replica): only there do Ray metrics reach an agent."""
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # no Ray, or no worker context: metrics stay local
        return False


def replica_tags() -> dict[str, str]:
    """application / deployment / replica of the Serve replica this runs in ('' outside one)."""
    try:
        from ray import serve

        ctx = serve.get_replica_context()
        rid = ctx.replica_id
        return {"application": ctx.app_name, "deployment": rid.deployment_id.name, "replica": rid.unique_id}
    except Exception:  # not a Serve replica (a plain actor, a test)
        return dict.fromkeys(REPLICA_TAGS, "")


class _Child:
    """One label combination: the prometheus_client child and the Ray tags."""

    def __init__(self, metric: DualMetric, prom, tags: dict[str, str]):
        self.metric, self.prom, self.tags = metric, prom, tags

    def inc(self, value: float = 1.0) -> None:
        self.prom.inc(value)
        if self.metric.ray is not None and value > 0:  # Ray counters refuse 0
            self.metric.ray.inc(value, tags=self.tags)

    def observe(self, value: float) -> None:
        self.prom.observe(value)
        if self.metric.ray is not None:
            self.metric.ray.observe(value, tags=self.tags)

    def set(self, value: float) -> None:
        self.prom.set(value)
        if self.metric.ray is not None:
            self.metric.ray.set(value, tags=self.tags)


class DualMetric:
    """A prometheus_client metric and, optionally, its Ray twin; the prometheus_client API
    (`labels(...)`, `inc`, `observe`, `set`) so call sites do not change."""

    def __init__(self, kind: str, name: str, doc: str, labelnames: Sequence[str], registry, ray_on: bool,
                 buckets: Sequence[float] | None = None, base_tags: dict[str, str] | None = None):  # fmt: skip
        import prometheus_client as pc

        self.name, self.kind, self.labelnames = name, kind, tuple(labelnames)
        extra: dict[str, Any] = {"buckets": tuple(buckets)} if buckets is not None else {}
        cls = {"counter": pc.Counter, "histogram": pc.Histogram, "gauge": pc.Gauge}[kind]
        self.prom = cls(name, doc, self.labelnames, registry=registry, **extra)
        self.base_tags = base_tags or {}
        self.ray = None
        if ray_on:
            from ray.util import metrics as rm

            tag_keys = (*self.labelnames, *self.base_tags)
            if kind == "counter":
                self.ray = rm.Counter(name, doc, tag_keys=tag_keys)
            elif kind == "histogram":
                self.ray = rm.Histogram(name, doc, boundaries=list(buckets or LATENCY_BUCKETS), tag_keys=tag_keys)
            else:
                self.ray = rm.Gauge(name, doc, tag_keys=tag_keys)

    def labels(self, *values: Any) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
        values = tuple(str(v) for v in values)
        return _Child(
            self, self.prom.labels(*values), {**self.base_tags, **dict(zip(self.labelnames, values, strict=True))}
        )

    def _bare(self) -> _Child:
        return _Child(self, self.prom, dict(self.base_tags))

    def inc(self, value: float = 1.0) -> None:
        self._bare().inc(value)

    def observe(self, value: float) -> None:
        self._bare().observe(value)

    def set(self, value: float) -> None:
        self._bare().set(value)


class MetricSet:
    """Metrics of one replica. `ray=None`: export through Ray when running inside a Ray actor."""

    def __init__(self, registry=None, *, ray: bool | None = None):
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry()
        self.ray = in_ray_actor() if ray is None else ray
        self.tags = replica_tags() if self.ray else {}
        self.metrics: dict[str, DualMetric] = {}

    def _add(self, kind, name, doc, labelnames, buckets=None) -> DualMetric:
        m = DualMetric(kind, name, doc, labelnames, self.registry, self.ray, buckets, self.tags)
        self.metrics[name] = m
        return m

    def counter(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> DualMetric:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r}: end counter names with _total (what both exporters show)")
        return self._add("counter", name, doc, labelnames)

    def histogram(self, name: str, doc: str, labelnames: Sequence[str] = (), buckets=LATENCY_BUCKETS) -> DualMetric:
        return self._add("histogram", name, doc, labelnames, buckets)

    def gauge(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> DualMetric:
        return self._add("gauge", name, doc, labelnames)


# Seconds; a young-generation pass is ~0.1-1 ms, a full one over an unfrozen heap ~100 ms.
GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class GcPauses:
    """The cyclic garbage collector's pauses in this process: while one runs, every request the
    process holds waits, so they show in the tail latency and nowhere else.

    One `gc.callbacks` entry per process times each collection and appends (generation, seconds)
    to a bounded queue, nothing more (a collection can start inside any allocation, even inside a
    metrics call: observing there could deadlock on the metric's own lock). A daemon thread moves
    the queue into `shopgraph_gc_pause_seconds{generation}` of the replica's MetricSet every
    `flush_s`. `watch(ms)` points it at a replica's metrics (the latest replica in the process
    wins: Serve runs one per process)."""

    def __init__(self, flush_s: float = 5.0):
        from collections import deque

        self.flush_s = flush_s
        self.pending: deque[tuple[int, float]] = deque(maxlen=100_000)  # a full one drops the oldest
        self.histogram: DualMetric | None = None
        self._started_at: float | None = None
        self._thread = None

    def _on_gc(self, phase: str, info: dict) -> None:
        # runs at every collection, several per second under load: nothing but the clock and an append
        if phase == "start":
            self._started_at = perf_counter()
        elif self._started_at is not None:
            self.pending.append((info["generation"], perf_counter() - self._started_at))
            self._started_at = None

    def watch(self, ms: MetricSet) -> DualMetric:
        import gc
        import threading

        self.histogram = ms.histogram(
            "shopgraph_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector in this replica's process, by generation (2: full)",
            ["generation"],
            buckets=GC_BUCKETS,
        )
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        if self._thread is None:
            self._thread = threading.Thread(target=self._flush_forever, name="gc-pauses", daemon=True)
            self._thread.start()
        return self.histogram

    def flush(self) -> int:
        """Observe what is queued; returns how many pauses."""
        n = 0
        while True:
            try:  # the flush thread and a /metrics scrape may drain at once: popleft, not check-then-pop
                generation, seconds = self.pending.popleft()
            except IndexError:
                return n
            if self.histogram is not None:
                self.histogram.labels(generation).observe(seconds)
            n += 1

    def _flush_forever(self) -> None:
        import time

        while True:
            time.sleep(self.flush_s)
            try:
                self.flush()
            except Exception:  # a metric is never worth a replica
                pass


GC_PAUSES = GcPauses()


# Every shopgraph metric and the labels it carries, for the dashboard test and the README: the
# ingress's (serve.ingress), the retriever's and ranker's (serve.recommend), the generator's
# (serve.generator). The engine's are vLLM's own (`vllm_*`, see `ENGINE_METRICS`).
def exported_names(metric_sets: Sequence[MetricSet]) -> set[str]:
    """Prometheus series names these sets export (counters' and histograms' suffixes included)."""
    out = set()
    for ms in metric_sets:
        for m in ms.metrics.values():
            if m.kind == "histogram":
                out |= {f"{m.name}_bucket", f"{m.name}_count", f"{m.name}_sum"}
            else:
                out.add(m.name)
    return out


# vLLM's metrics as RayPrometheusStatLogger exports them (':' becomes '_'), the ones the
# dashboard reads: tokens/s, time to first token, queue, KV-cache use.
ENGINE_METRICS = {
    "vllm_prompt_tokens_total": "counter",
    "vllm_generation_tokens_total": "counter",
    "vllm_time_to_first_token_seconds": "histogram",
    "vllm_e2e_request_latency_seconds": "histogram",
    "vllm_num_requests_running": "gauge",
    "vllm_num_requests_waiting": "gauge",
    "vllm_kv_cache_usage_perc": "gauge",
    "vllm_request_success_total": "counter",
}
