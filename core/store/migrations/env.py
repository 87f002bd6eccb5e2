"""Alembic environment of the online database: run by `core.store.upgrade(url)` with an open
connection in `config.attributes["connection"]` (never from an alembic.ini)."""

from __future__ import annotations

from alembic import context

from core.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
