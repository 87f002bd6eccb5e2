"""The `online` section: the database that events and catalog writes go to, and the API keys
that may write.

    shopgraph cluster show-config --set online.database_url=postgresql+psycopg://shopgraph@db:5432/shopgraph
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["events:write", "catalog:write", "users:erase", "admin"]


class ApiKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., min_length=1, max_length=64, description="Who holds the key (shown in logs, never the token)."
    )
    sha256: str = Field(
        ...,
        description="Hex sha256 of the bearer token; the token itself is never stored. Mint one: `python -m core.store.keys --name shop --scopes events:write,catalog:write`.",
    )
    scopes: list[Scope] = Field(
        ..., min_length=1, description="What the key may do: events:write, catalog:write, users:erase, admin (all)."
    )

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(
                "must be 64 lowercase hex characters (sha256 of the token); print it with python -m core.store.keys"
            )
        return value


class ServedLogConfig(BaseModel):
    """What each answer showed (request_id, position, product, versions, reason source) goes to the
    database's `served_items` for online evaluation: queued in memory, written in batches by a
    background task, never on the request path."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Record every recommendation answer's items (and a page's 'you may also like')."
    )
    queue_rows: int = Field(
        20_000,
        ge=1,
        description='Items waiting to be written, per ingress replica, at most; past it new items are dropped and counted (shopgraph_served_log_rows_total{outcome="dropped"}).',
    )
    flush_ms: int = Field(
        1000,
        ge=10,
        le=60_000,
        description="How often the background task writes the waiting items (sooner when batch_rows are waiting).",
    )
    batch_rows: int = Field(1000, ge=1, le=100_000, description="Items per write: one transaction each.")


class OnlineEvaluationConfig(BaseModel):
    """Online evaluation (`shopgraph train evaluate --online`, the shopgraph_online_* gauges of /metrics)."""

    model_config = ConfigDict(extra="forbid")

    window: str = Field(
        "7d",
        description="Served items of this long before now are evaluated (a number and a unit: ms, s, m, h, d, w); --window overrides it on the command line.",
    )
    attribution_window: str = Field(
        "24h",
        description="A click, cart or purchase without a request_id counts for the latest item shown to the same user for the same product at most this long before it.",
    )
    metrics_window: str = Field(
        "24h",
        description="The shopgraph_online_* gauges of /metrics cover items served this long before now (shorter than window: each refresh reads it all).",
    )
    metrics_refresh_s: int = Field(
        60,
        ge=0,
        description="How often (at most) each ingress replica recomputes the shopgraph_online_* gauges in the background, in a thread at the lowest CPU priority; a refresh that took t seconds waits at least 9t before the next (a day of rows is seconds of CPU on a big shop); 0: no gauges.",
    )

    @field_validator("window", "attribution_window", "metrics_window")
    @classmethod
    def _duration(cls, value: str, info) -> str:
        from core.values import as_duration_ms

        as_duration_ms(value, f"online.evaluation.{info.field_name}")
        return value


class OnlineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Serve the write API and read the database for live answers (events, stock, deletions)."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the online database. None: SQLite at <artifacts.root>/online/shop.db. Clusters: postgresql+psycopg://user@host:5432/db without a password (see password_env).",
    )
    password_env: str = Field(
        "SHOPGRAPH_DB_PASSWORD",
        description="Environment variable whose value is the database password (set from a Kubernetes Secret in the rendered manifests); used when database_url has none.",
    )
    password_secret: str | None = Field(
        None,
        description="Kubernetes Secret holding the database password, put into password_env of every Ray pod; None = no password from a Secret.",
    )
    password_key: str = Field("password", description="Key inside password_secret whose value is the password.")
    api_keys: list[ApiKeyConfig] = Field(
        default_factory=list,
        description="Write keys (sha256 of each token, name, scopes). More come from the environment variable api_keys_env.",
    )
    api_keys_env: str = Field(
        "SHOPGRAPH_API_KEYS",
        description="Environment variable with more keys, read when a replica starts: 'name:sha256:scope+scope' entries separated by ','.",
    )
    public_reads: bool = Field(
        True, description="GET /v1/products/{id} without a key; false: it needs a valid key (any scope)."
    )
    max_batch_events: int = Field(1000, ge=1, le=10_000, description="Events per POST /v1/events at most (413 above).")
    max_batch_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest POST /v1/events body (413 above); other routes keep serve.limits.max_body_bytes.",
    )
    max_clock_skew_ms: int = Field(
        300_000, ge=0, description="How far in the future an event's ts may lie (client clock skew) before it is a 422."
    )
    poll_ms: int = Field(
        250,
        ge=10,
        le=1000,
        description="How often (at most) a replica reads catalog changes from the database: deletions, stock and prices reach answers within this.",
    )
    user_events: int = Field(
        200,
        ge=0,
        description="Latest database events per user merged into the recommender's input (capped again at the model's max_len).",
    )
    served_log: ServedLogConfig = Field(
        default_factory=ServedLogConfig, description="Recording what each answer showed (online evaluation)."
    )
    evaluation: OnlineEvaluationConfig = Field(
        default_factory=OnlineEvaluationConfig,
        description="Online evaluation: CTR and conversion per model version and reason source.",
    )
