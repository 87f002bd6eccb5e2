"""shared_reports: one online evaluation report per refresh for every ingress replica.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shared_reports",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("computed_at", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("took_ms", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("report", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("shared_reports")
