"""The retriever and ranker deployments, and the typed payloads that cross their handles.

    from serve.deployments import Retriever, Ranker, RetrieveRequest, RankRequest

Each deployment loads its config from the same `AppArgs` as the ingress and wraps a core
class of `serve.recommend` (FAISS retrieval, ranking with business rules), so the whole graph
can be exercised in-process without Serve (bench/serve_overhead.py, tests). What a handle call
takes and returns is a pydantic model, not a dict: a wrong field fails where it is sent.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from core.runtime import freeze_startup_heap
from serve.recommend import Candidates, Scored
from serve.schemas import Filters


class RetrieveRequest(BaseModel):
    """Ingress -> Retriever: whose candidates, and how many."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(
        None, description="Known user whose history seeds retrieval; None for an anonymous session."
    )
    recent_items: list[str] = Field(default_factory=list, description="Product ids of the session, oldest first.")
    n: int = Field(..., ge=1, description="Candidates to return.")
    history: list[int] | None = Field(
        None,
        description="The user's history (item ids, time order) when the ingress merged database events into it "
        "(serve.live); None: the retriever's own copy of the training history.",
    )


class Retrieved(BaseModel):
    """Retriever -> Ingress: the history used (dense item ids, time order) and the candidates."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    history: np.ndarray = Field(
        ..., description="Item ids (int64) of the user's history plus the session's known items."
    )
    candidates: Candidates = Field(..., description="Recommender and text-index candidates, with the cold-start flag.")


class RankFilters(Filters):
    """The request's public filters plus what the ingress excludes."""

    exclude: list[str] = Field(
        default_factory=list, description="Product ids never to return (the session's own items, the viewed product)."
    )


class RankRequest(BaseModel):
    """Ingress -> Ranker: candidates to score, filter and cut to k."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    user_id: str | None = Field(None, description="The user, for already-bought rules; None when anonymous.")
    history: np.ndarray = Field(..., description="Item ids of the history (as Retrieved.history).")
    candidates: Candidates = Field(..., description="What the retriever returned.")
    k: int = Field(..., ge=1, description="Items to return.")
    filters: RankFilters = Field(default_factory=RankFilters, description="Request filters and exclusions.")


@serve.deployment(name="Retriever")
class Retriever:
    def __init__(self, args: dict):
        from core.layout import ArtifactLayout
        from core.runtime import local_dir
        from serve.app import AppArgs
        from serve.catalog import load_catalog
        from serve.recommend import RetrieverCore
        from serve.reload import manifest_stamp, replica_reloader

        cfg = AppArgs(**args).load_config()
        layout = ArtifactLayout(cfg.artifacts.root)
        loaded = manifest_stamp([local_dir(layout.index), local_dir(layout.embeddings)])  # before the load
        self.core = RetrieverCore(cfg, load_catalog(cfg))
        # Catalog writes reach this replica's catalog (new products become reachable by text), and
        # a refreshed index + embeddings are swapped in without a restart (serve.reload).
        self.reloader = replica_reloader(cfg, self.core.catalog)
        self.reloader.watch("text index", self.core.text_dirs, self.core.load_text, self.core.use_text, stamp=loaded)
        self.m_latency, self.m_batch = replica_metrics(batch_sizes=True)
        freeze_startup_heap()

    # No wait: a request that finds the replica idle runs at once; the ones that queue up while
    # it works form the next batch (one SASRec forward and one FAISS search for all of them).
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0)
    async def retrieve(self, requests: list[RetrieveRequest]) -> list[Retrieved]:
        self.reloader.start()
        started = time.perf_counter()
        hidden = self.reloader.live.deleted if self.reloader.live is not None else ()
        resolved = [self.core.history_of(r.user_id, r.recent_items, r.history) for r in requests]
        cands = self.core.retrieve_batch(
            [h for h, _ in resolved], [u for _, u in resolved], max(r.n for r in requests), hidden
        )
        self.m_latency.labels("retrieve_batch").observe(time.perf_counter() - started)
        self.m_batch.labels("retrieve").observe(len(requests))
        return [Retrieved(history=h, candidates=c) for (h, _), c in zip(resolved, cands, strict=True)]

    async def reload_status(self) -> dict:
        """What the background refresh of this replica did (reloads, failures and why, polls)."""
        self.reloader.start()
        return self.reloader.status() | {"text_index_rows": self.core.text.size}

    async def check_health(self) -> None:
        self.reloader.start()  # also runs when no request came yet


@serve.deployment(name="Ranker")
class Ranker:
    def __init__(self, args: dict):
        from serve.app import AppArgs
        from serve.catalog import load_catalog
        from serve.recommend import RankerCore
        from serve.reload import replica_reloader

        cfg = AppArgs(**args).load_config()
        self.core = RankerCore(cfg, load_catalog(cfg))
        # Catalog writes reach this replica: new products are slotted in with their facts, deleted
        # ones never come back, the rules and filters see stock and price as the database has them
        # (the model's own item features stay the trained ones) (serve.reload).
        self.reloader = replica_reloader(cfg, self.core.catalog)
        self.m_latency, _ = replica_metrics()
        freeze_startup_heap()

    # Not batched: ranking is per request (features, rules, evidence), so a batch saved no work
    # and its 2 ms wait was pure latency.
    async def rank(self, r: RankRequest) -> list[Scored]:
        self.reloader.start()
        started = time.perf_counter()
        hidden = self.reloader.live.deleted if self.reloader.live is not None else ()
        out = self.core.rank(r.user_id, r.history, r.candidates, r.k, r.filters.model_dump(), hidden)
        self.m_latency.labels("rank").observe(time.perf_counter() - started)
        return out

    async def reload_status(self) -> dict:
        self.reloader.start()
        return self.reloader.status()

    async def check_health(self) -> None:
        self.reloader.start()


def replica_metrics(batch_sizes: bool = False):
    """The time a retriever or ranker replica spends on a call (queueing and transport excluded, which
    the ingress's `shopgraph_stage_latency_seconds` include), and its batch sizes; exported through
    Ray's metrics (serve.metrics), so one scrape holds every replica. The replica's garbage-collector
    pauses too (`serve.metrics.GcPauses`)."""
    from serve.metrics import GC_PAUSES, MetricSet

    ms = MetricSet()
    GC_PAUSES.watch(ms)
    latency = ms.histogram("shopgraph_replica_latency_seconds", "Time inside a replica per stage", ["stage"])
    batch = (
        ms.histogram("shopgraph_batch_size", "Requests per batched call", ["stage"], buckets=(1, 2, 4, 8, 16, 32))
        if batch_sizes
        else None
    )
    return latency, batch
