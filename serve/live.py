"""What an ingress replica reads from the online database so that answers change at once.

    live = LiveState.open(cfg)                 # engine, migrations, API keys (in the replica)
    await live.sync(catalog)                   # catalog changes, at most every online.poll_ms
    (the retriever and ranker replicas call it from their background task, serve.reload)
    history, bought = await live.history(user_id, catalog, max_len)

Catalog writes (PUT/PATCH/DELETE, from any replica) reach this replica's catalog within
`online.poll_ms`: one indexed query for the rows written since the last one seen (with an
overlap, so writers with slightly different clocks are not missed; re-applying a row is a no-op).
Deleted products and, where the in-stock rule applies, products out of stock are excluded from
every answer (`hidden`); pages of deleted products are 410. A user's events are read per request
(one indexed query): no delay between an acknowledged event and the next recommendation. On the
embedded SQLite that read runs on the replica's loop (~20 us; a thread hop costs ~100 us), on
PostgreSQL in a thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from core.store import Store, database_url, make_engine, upgrade
from core.store.keys import KeyRing
from serve.catalog import Catalog, Product

OVERLAP_MS = 2_000  # re-read the last 2 s of writes each poll: clocks of replicas differ a little


class LiveState:
    def __init__(self, store: Store, keys: KeyRing, online, interaction_events: list[str]):
        self.store, self.keys, self.cfg = store, keys, online
        self.types = [e for e in interaction_events if e != "impression"]
        self.deleted: set[str] = set()
        self.out_of_stock: set[str] = set()
        self.applied: dict[str, int] = {}  # product_id -> updated_at applied
        self.seen_ms = 0
        self.next_poll = 0.0
        self.polls = 0
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, cfg) -> LiveState:
        engine = make_engine(database_url(cfg), cfg.online.password_env)
        upgrade(engine)
        return cls(Store(engine), KeyRing.from_config(cfg.online), cfg.online, list(cfg.data.splits.interaction_events))

    # -- catalog

    async def sync(self, catalog: Catalog, on_change=None, force: bool = False) -> None:
        """Apply catalog writes made since the last poll (at most every online.poll_ms; `force`:
        now, as serve.reload does before it swaps in refreshed artifacts)."""
        if not force and time.monotonic() < self.next_poll:
            return
        async with self._lock:
            if not force and time.monotonic() < self.next_poll:  # another request polled while this one waited
                return
            rows = await asyncio.to_thread(self.store.changed_products, max(0, self.seen_ms - OVERLAP_MS))
            self.next_poll = time.monotonic() + self.cfg.poll_ms / 1000
            self.polls += 1
            for row in rows:
                self.apply(row, catalog, on_change)

    def apply(self, row: dict[str, Any], catalog: Catalog, on_change=None) -> None:
        """One stored product row into this replica's catalog (idempotent)."""
        pid, stamp = row["product_id"], row["updated_at"]
        self.seen_ms = max(self.seen_ms, stamp)
        if self.applied.get(pid) == stamp:
            return
        self.applied[pid] = stamp
        if row.get("deleted_at") is not None:
            self.deleted.add(pid)
        else:
            self.deleted.discard(pid)
            old = catalog.products.get(pid)
            catalog.products[pid] = product_of(row, old.item_idx if old else None)
        (self.out_of_stock.add if row.get("in_stock") is False else self.out_of_stock.discard)(pid)
        if on_change is not None:
            on_change(pid)

    def hidden(self, in_stock_only: bool) -> set[str]:
        """Products no answer may show: deleted ones, and out-of-stock ones under the in-stock rule."""
        return self.deleted | self.out_of_stock if in_stock_only else set(self.deleted)

    # -- users

    async def history(self, user_id: str, catalog: Catalog, max_len: int) -> tuple[np.ndarray | None, set[str]]:
        """The user's training history merged with their latest database events, time-ordered,
        the last `max_len` items; None when the database has no events of theirs (the
        retriever's own copy is then the same). Also the products they bought (events)."""
        if self.cfg.user_events == 0:
            return None, set()
        args = (user_id, self.types, 0, self.cfg.user_events)
        rows = (
            self.store.recent_events(*args)
            if self.store.inline_reads
            else await asyncio.to_thread(self.store.recent_events, *args)
        )
        if not rows:
            return None, set()
        return merge_history(catalog, user_id, rows, max_len), {p for p, e, _ in rows if e == "purchase"}


def merge_history(catalog: Catalog, user_id: str, rows: list[tuple[str, str, int]], max_len: int) -> np.ndarray:
    """Training items (with their times) and database events, in time order; an event already in
    the training history (same item, same time: it was trained on) counts once. Products the
    recommender has no id for (added since training) cannot be part of its input."""
    items = catalog.user_history.get(user_id, np.zeros(0, np.int64))
    times = catalog.user_history_ts.get(user_id)
    if times is None or len(times) != len(items):
        times = np.full(len(items), -1, np.int64)  # unknown: older than anything in the database
    merged = [(int(t), 0, n, int(i)) for n, (t, i) in enumerate(zip(times.tolist(), items.tolist()))]
    known = {(i, t) for t, _, _, i in merged}
    for n, (pid, _, ts) in enumerate(rows):
        idx = catalog.item_idx(pid)
        if idx is not None and (idx, ts) not in known:
            merged.append((ts, 1, n, idx))
    merged.sort()
    return np.asarray([i for *_, i in merged[-max_len:]], np.int64)


def product_of(row: dict[str, Any], item_idx: int | None) -> Product:
    return Product(
        row["product_id"],
        row["title"],
        row.get("category"),
        row.get("brand"),
        row.get("price"),
        row.get("attributes") or {},
        row.get("description"),
        row.get("in_stock"),
        item_idx,
    )


class OnlineUserData:
    """Erasure and export of the online database's rows (`core.privacy.UserDataStore`): a user's
    events are deleted at once on `DELETE /v1/users/{id}` and listed by its export."""

    name = "database"

    def __init__(self, store):
        self.store = store

    async def erase(self, user_keys: list[str]) -> dict:
        deleted = await asyncio.to_thread(self.store.erase_users, list(user_keys))
        return {"store": self.name, "events_deleted": deleted, "profile_deleted": False}

    async def export(self, user_keys: list[str]) -> dict:
        events = await asyncio.to_thread(self.store.user_events, list(user_keys))
        return {"store": self.name, "events": events, "profile": None}
