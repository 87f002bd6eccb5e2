"""The online database's tables (SQLAlchemy 2 declarative models), shared by serving and, later,
the incremental refresh and `data prepare`'s SQL source.

Times are integers: milliseconds since the epoch, UTC, as everywhere in shopgraph's data contracts
(`core.values.as_timestamp_ms`); the same column type on SQLite and PostgreSQL, compared and
indexed without time-zone surprises. The schema is created and changed only by the Alembic
migrations in `core/store/migrations` (`core.store.upgrade(url)`), never by `create_all`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a bigint identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

ONLINE_EVENT_TYPES = ("impression", "view", "click", "cart", "purchase", "rating")
SERVED_SURFACES = ("recommendations", "page")  # POST /v1/recommendations; a page's "you may also like"
MAX_KEY_CHARS = 128  # idempotency keys and request ids
MAX_ID_CHARS = 512  # product ids and user keys (serve.schemas.MAX_ID_CHARS)


class Base(DeclarativeBase):
    pass


class ProductRow(Base):
    """A product's facts as the shop last wrote them. `deleted_at` set = soft-deleted (gone from every
    answer, kept for the refresh to remove it from the index); `updated_at` moves on every write."""

    __tablename__ = "products"

    product_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    brand: Mapped[str | None] = mapped_column(Text)
    price: Mapped[float | None] = mapped_column(Float)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    in_stock: Mapped[bool | None] = mapped_column(Boolean)
    stock: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(BigInteger, index=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)

    def facts(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "title": self.title,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "attributes": self.attributes or {},
            "description": self.description,
            "in_stock": self.in_stock,
            "stock": self.stock,
            "updated_at": self.updated_at,
            "deleted_at": self.deleted_at,
        }


class EventRow(Base):
    """One behaviour event. `user_key` is the user's pseudonym (`core.privacy`), never the raw id;
    `flagged_reason` (e.g. `unknown_product`) marks a stored event the live path does not use."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_user_ts", "user_key", "ts"),
        # online evaluation's attribution (core.store.evaluation): by request_id, else by user + product + time
        Index("ix_events_request_product", "request_id", "product_id", "event"),
        Index("ix_events_user_product_ts", "user_key", "product_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(16))
    user_key: Mapped[str] = mapped_column(String(MAX_ID_CHARS))
    product_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS))
    ts: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float)
    request_id: Mapped[str | None] = mapped_column(String(MAX_KEY_CHARS))
    idempotency_key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS), unique=True)
    received_at: Mapped[int] = mapped_column(BigInteger)
    flagged_reason: Mapped[str | None] = mapped_column(String(64))


class ServedRow(Base):
    """One item of one answer, as it was shown: what online evaluation joins impressions, clicks and
    purchases to (`core.store.evaluation`). Written by the ingress in batches, off the request path
    (`serve.served.ServedLog`). `user_key` is the pseudonym (None: anonymous), never the raw id."""

    __tablename__ = "served_items"
    __table_args__ = (
        Index("ix_served_request_product", "request_id", "product_id"),
        Index("ix_served_user_product_ts", "user_key", "product_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    position: Mapped[int] = mapped_column(Integer)  # 1 = the first item of the answer
    product_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS))
    user_key: Mapped[str | None] = mapped_column(String(MAX_ID_CHARS))
    surface: Mapped[str] = mapped_column(String(16))  # SERVED_SURFACES
    recommender_version: Mapped[str] = mapped_column(String(64))
    generator_version: Mapped[str] = mapped_column(String(64))
    reason_source: Mapped[str] = mapped_column(String(16))
    degraded: Mapped[str | None] = mapped_column(String(64))  # stages the answer did without, comma-separated
    ts: Mapped[int] = mapped_column(BigInteger, index=True)


class RefreshWatermark(Base):
    """Schema only, for the incremental refresh: how far each consumer (`name`) has read
    `products.updated_at` / `events.id`."""

    __tablename__ = "refresh_watermarks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    products_updated_at: Mapped[int] = mapped_column(BigInteger, default=0)
    events_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class SharedReport(Base):
    """A report computed once for every process that reads it (`core.store.evaluation.shared_report`):
    the online evaluation gauges of all ingress replicas come from one computation per refresh.
    `owner` holds the computation until `lease_until` (ms; 0: nobody); `report` is its JSON."""

    __tablename__ = "shared_reports"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[int] = mapped_column(BigInteger, default=0)
    computed_at: Mapped[int] = mapped_column(BigInteger, default=0)  # ms; 0: never
    took_ms: Mapped[int] = mapped_column(BigInteger, default=0)  # how long computing it took
    report: Mapped[str | None] = mapped_column(Text)
