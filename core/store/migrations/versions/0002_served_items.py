"""served_items: what each answer showed, for online evaluation; events by user, product and time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "served_items",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(512), nullable=False),
        sa.Column("user_key", sa.String(512)),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("recommender_version", sa.String(64), nullable=False),
        sa.Column("generator_version", sa.String(64), nullable=False),
        sa.Column("reason_source", sa.String(16), nullable=False),
        sa.Column("degraded", sa.String(64)),
        sa.Column("ts", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_served_request_product", "served_items", ["request_id", "product_id"])
    op.create_index("ix_served_user_product_ts", "served_items", ["user_key", "product_id", "ts"])
    op.create_index("ix_served_items_ts", "served_items", ["ts"])
    # Events are attributed to served items by request_id + product (covering: no table lookups),
    # else by user + product + time. The new index's prefix serves every request_id lookup.
    op.create_index("ix_events_request_product", "events", ["request_id", "product_id", "event"])
    op.drop_index("ix_events_request_id", "events")
    op.create_index("ix_events_user_product_ts", "events", ["user_key", "product_id", "ts"])


def downgrade() -> None:
    op.drop_index("ix_events_user_product_ts", "events")
    op.create_index("ix_events_request_id", "events", ["request_id"])
    op.drop_index("ix_events_request_product", "events")
    op.drop_index("ix_served_items_ts", "served_items")
    op.drop_index("ix_served_user_product_ts", "served_items")
    op.drop_index("ix_served_request_product", "served_items")
    op.drop_table("served_items")
