"""Typed config of the data section (`data:` in the YAML). Unknown keys are rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, le=4096, description="Texts per `map_batches` call of the embedding actors.")
    concurrency: int = Field(1, ge=1, le=512, description="Number of encoder actors in the Ray Data actor pool.")
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per encoder actor (fractional on small nodes).")


class DataConfig(BaseModel):
    """Where raw data comes from and how the Ray Data stages are sized."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field("USD", min_length=3, max_length=3, description="ISO 4217 code of every `price` in the products table.")
    seed: int = Field(0, description="Seed for the embedded sample generator and every sampled split, so reruns are identical.")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig, description="Text-embedding job over product text.")
