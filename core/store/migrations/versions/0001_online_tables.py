"""products, events and the refresh watermark.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(512), primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.Text()),
        sa.Column("brand", sa.Text()),
        sa.Column("price", sa.Float()),
        sa.Column("attributes", sa.JSON()),
        sa.Column("description", sa.Text()),
        sa.Column("in_stock", sa.Boolean()),
        sa.Column("stock", sa.Integer()),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger()),
    )
    op.create_index("ix_products_updated_at", "products", ["updated_at"])
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("user_key", sa.String(512), nullable=False),
        sa.Column("product_id", sa.String(512), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("request_id", sa.String(128)),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("flagged_reason", sa.String(64)),
    )
    op.create_index("ix_events_user_ts", "events", ["user_key", "ts"])
    op.create_index("ix_events_request_id", "events", ["request_id"])
    op.create_table(
        "refresh_watermarks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("products_updated_at", sa.BigInteger(), nullable=False),
        sa.Column("events_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("refresh_watermarks")
    op.drop_index("ix_events_request_id", "events")
    op.drop_index("ix_events_user_ts", "events")
    op.drop_table("events")
    op.drop_index("ix_products_updated_at", "products")
    op.drop_table("products")
