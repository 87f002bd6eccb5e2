"""The online database: products and events written through the API, read back by serving now
and by the incremental refresh and training later. SQLite embedded, PostgreSQL on clusters.

    from core.store import Store, database_url, make_engine, upgrade

User ids arrive already pseudonymized (`core.privacy.Pseudonymizer.user_key`, at the API edge):
the database never sees a raw id.
"""

from __future__ import annotations

from core.store.db import Store, database_url, make_engine, now_ms, upgrade
from core.store.models import ONLINE_EVENT_TYPES, EventRow, ProductRow, RefreshWatermark

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
]
