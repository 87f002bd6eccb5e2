"""The online database: products and events written through the API, read back by serving now
and by the incremental refresh and training later. SQLite embedded, PostgreSQL on clusters.

    from core.store import Store, database_url, make_engine, upgrade, user_key
"""

from __future__ import annotations

from core.store.db import Store, database_url, make_engine, now_ms, upgrade
from core.store.models import ONLINE_EVENT_TYPES, EventRow, ProductRow, RefreshWatermark


def user_key(raw: str) -> str:
    """The key a user's events are stored and looked up under. Every user id that reaches the
    database or a live lookup goes through here (identity for now; keyed pseudonymisation plugs
    in here, and only here)."""
    return raw


__all__ = [
    "ONLINE_EVENT_TYPES",
    "EventRow",
    "ProductRow",
    "RefreshWatermark",
    "Store",
    "database_url",
    "make_engine",
    "now_ms",
    "upgrade",
    "user_key",
]
