"""Typed config of the data section (`data:` in the YAML). Unknown keys are rejected."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config.ingest import PrepareConfig, SampleConfig, SourceConfig


class EmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, le=4096, description="Texts per `map_batches` call of the embedding actors.")
    concurrency: int = Field(
        2,
        ge=1,
        le=512,
        description="Number of encoder actors in the Ray Data actor pool. A fractional-CPU actor gets one torch thread, so on a 2-core node one actor per core matches a plain loop using both.",
    )
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per encoder actor (fractional on small nodes).")
    threads_per_actor: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch intra-op threads per encoder actor; None = Ray's default (num_cpus rounded down, at least 1). On a small node a fractional-CPU actor can still use every core.",
    )


EventType = Literal["view", "click", "cart", "purchase", "rating"]


class SplitsConfig(BaseModel):
    """Filters and splits applied to events before training (see data/splits.py)."""

    model_config = ConfigDict(extra="forbid")

    interaction_events: list[EventType] = Field(
        default_factory=lambda: ["view", "click", "cart", "purchase", "rating"],
        description="Event types that count as interactions in sequences and splits (all by default; see data/splits.py for why views are kept).",
    )
    dedup_consecutive: bool = Field(
        True, description="Drop an interaction that repeats the user's previous item (page refreshes, repeated views)."
    )
    k_core: int = Field(
        5,
        ge=0,
        description="Iterative k-core: keep users and items with at least k interactions until stable (5 as in SASRec/BERT4Rec preprocessing); 0 or 1 = off.",
    )
    temporal_test_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Global temporal split: the latest this fraction of interactions (by timestamp quantile) is test, the rest train.",
    )
    keep_item_ids: bool = Field(
        False,
        description="Keep every item index of the previous id map (<artifacts>/data/id_maps/items.parquet) and give new items the next ones, so `shopgraph train recommender --warm-start` finds each known item's row where the last model had it. Items absent from the new events keep their index. False: dense ids 1..N in natural id order.",
    )
    popularity_half_life_days: float = Field(
        7.0,
        gt=0,
        description="Half-life of the recency-weighted popularity score, relative to the last event in the data.",
    )

    @field_validator("interaction_events")
    @classmethod
    def _non_empty_unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "must list at least one event type; use e.g. [purchase] or [view, click, cart, purchase, rating]"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"lists an event type twice ({value}); list each once")
        return value


class CorpusConfig(BaseModel):
    """Fine-tuning corpora for the generator LM (see data/corpus.py)."""

    model_config = ConfigDict(extra="forbid")

    eval_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of products (by a stable hash of product_id) whose examples go to the eval split of both corpora.",
    )
    max_highlights: int = Field(
        5, ge=1, le=20, description="Most attribute facts turned into PDP highlights per product."
    )
    profile_recent_items: int = Field(5, ge=1, le=50, description="Recent items (titles) shown in a user profile.")
    profile_top_k: int = Field(3, ge=1, le=20, description="Top categories and brands shown in a user profile.")
    max_reason_examples: int = Field(
        50000,
        ge=0,
        description="Cap on personalized-reason examples (one per user, users in id order); 0 = no reason corpus.",
    )


class IndexConfig(BaseModel):
    """FAISS index over product vectors, inner product on L2-normalized vectors (see data/index.py)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["flat", "ivf", "hnsw"] = Field(
        "hnsw", description="flat (exact), ivf (IndexIVFFlat) or hnsw (IndexHNSWFlat)."
    )
    nlist: int | None = Field(
        None, ge=1, description="IVF cells; None = 4*sqrt(N), capped so every cell gets at least 39 training vectors."
    )
    nprobe: int = Field(32, ge=1, description="IVF cells searched per query (higher = better recall, slower).")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW neighbours per node (M).")
    ef_construction: int = Field(200, ge=8, description="HNSW candidate list size while building (efConstruction).")
    ef_search: int = Field(
        256,
        ge=10,
        description="HNSW candidate list size per query (efSearch); at least 10, the recall@k that is reported. At 1M vectors (M 32) 128 gave recall@10 0.94, 256 gave 0.97 at 39x exact QPS (bench/faiss_index.py).",
    )
    recall_sample: int = Field(
        1000,
        ge=0,
        description="Seeded sample of indexed vectors used as queries for the manifest's recall@10 vs exact; 0 = skip.",
    )

    @model_validator(mode="after")
    def _nprobe_within_nlist(self) -> IndexConfig:
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ValueError(
                f"nprobe ({self.nprobe}) exceeds nlist ({self.nlist}); set data.index.nprobe <= data.index.nlist"
            )
        return self


class RefreshConfig(BaseModel):
    """Incremental refresh from the online database (see data/refresh.py)."""

    model_config = ConfigDict(extra="forbid")

    overlap_ms: int = Field(
        2000,
        ge=0,
        le=3_600_000,
        description="Re-read products written up to this long before the watermark: a write whose transaction committed after the last run read past its updated_at is still seen (re-applying a change is a no-op).",
    )
    rebuild_dead_fraction: float = Field(
        0.2,
        gt=0,
        le=1,
        description="When dead rows (old vectors of changed or deleted products) exceed this share of the text index, the refresh rebuilds it in full instead of appending.",
    )


class DataConfig(BaseModel):
    """Where raw data comes from and how the Ray Data stages are sized."""

    model_config = ConfigDict(extra="forbid")

    currency: str | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="ISO 4217 code of every `price` in the products table; null = the embedded sample's own (USD, or CNY for data.sample.language zh) when data.sources is empty, else USD.",
    )
    seed: int = Field(
        0, description="Seed for the embedded sample generator and every sampled split, so reruns are identical."
    )
    embedding: EmbeddingConfig = Field(
        default_factory=EmbeddingConfig, description="Text-embedding job over product text."
    )
    sources: list[SourceConfig] = Field(
        default_factory=list,
        description="Raw inputs read by `shopgraph data prepare` (see core/config/ingest.py); empty = use the embedded sample generator (data.sample).",
    )
    sample: SampleConfig = Field(
        default_factory=SampleConfig, description="Size of the embedded sample catalog and behaviour log."
    )
    prepare: PrepareConfig = Field(
        default_factory=PrepareConfig, description="Parsing, validation and sharding of `shopgraph data prepare`."
    )
    splits: SplitsConfig = Field(
        default_factory=SplitsConfig,
        description="Sequences, id maps, leave-one-out and temporal splits, popularity features.",
    )
    corpus: CorpusConfig = Field(
        default_factory=CorpusConfig, description="Fine-tuning corpora (PDP sections, personalized reasons)."
    )
    index: IndexConfig = Field(default_factory=IndexConfig, description="FAISS index over product embeddings.")
    refresh: RefreshConfig = Field(
        default_factory=RefreshConfig,
        description="`shopgraph data refresh`: products changed in the online database -> embeddings, index, content.",
    )

    @model_validator(mode="after")
    def _resolve_currency(self) -> DataConfig:
        if self.currency is None:  # resolved here, so every stage (and its fingerprint) sees one code
            self.currency = "CNY" if not self.sources and self.sample.language == "zh" else "USD"
        return self
