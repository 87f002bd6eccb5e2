"""The online database: products and events written through the API, read back by serving now
and by the incremental refresh and training later. SQLite embedded, PostgreSQL on clusters.

    from core.store import Store, database_url, make_engine, upgrade, user_key
"""

from __future__ import annotations

from core.store.db import Store, database_url, make_engine, now_ms, upgrade
from core.store.models import ONLINE_EVENT_TYPES, EventRow, ProductRow, RefreshWatermark


def user_key(raw: str) -> str:
    """The key a user's events are stored and looked up under: callers pass the pseudonym the
    ingress made at the edge (`core.privacy.Pseudonymizer.user_key`), so this is the identity; the
    database never sees a raw id."""
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
