"""Cost of the per-request read of a shopper's live events (`Store.recent_events`), the one
database query on the path of every recommendation of a known user, and of the served log's
batch writes (`Store.add_served`: k rows per answer, written off the request path).

    .venv/bin/python bench/store_read.py [--database sqlite|postgres] [--users 2000] [--n 3000]

Fills a fresh database (SQLite in a temporary directory, or a throwaway PostgreSQL started as the
tests start it) with `--users` users x 20 events, then times, per call and for users with and
without events: the SQLAlchemy Core statement the store used before (built and compiled per
call), `Store.recent_events` (one fixed SQL string on a pooled DBAPI connection), and the same
through `asyncio.to_thread` (what a server database costs the ingress's loop). Checks that both
paths return the same rows. Then writes batches of `--served-batch` served rows both ways in turn (the
statement layer's executemany before, `Store.add_served` now) and reports the cost per row.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TYPES = ["view", "click", "cart", "purchase", "rating"]


def core_statement(store, user_key: str, types: list[str], since_ms: int, limit: int):
    """The statement-layer read (the store's implementation before the lean path)."""
    from sqlalchemy import select

    from core.store.models import EventRow

    stmt = (
        select(EventRow.product_id, EventRow.event, EventRow.ts)
        .where(
            EventRow.user_key == user_key,
            EventRow.ts > since_ms,
            EventRow.event.in_(types),
            EventRow.flagged_reason.is_(None),
        )
        .order_by(EventRow.ts.desc(), EventRow.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(stmt)][::-1]


def core_served_insert(store, rows: list[dict]) -> None:
    """The statement-layer batch insert (the store's `add_served` before the lean path)."""
    from core.store.models import ServedRow

    with store.engine.begin() as conn:
        conn.execute(ServedRow.__table__.insert(), rows)


def served_rows(batch: int, start: int) -> list[dict]:
    return [
        {"request_id": f"req-{(start + i) // 10}", "position": (start + i) % 10 + 1, "product_id": f"p{i % 5000}",
         "user_key": f"u{i % 300}", "surface": "recommendations", "recommender_version": "sasrec-abc",
         "generator_version": "gen-abc", "reason_source": "template", "degraded": None, "ts": 1_700_000_000_000 + i}
        for i in range(batch)
    ]  # fmt: skip


def served_writes(store, batch: int, batches: int) -> dict:
    """Both ways, batch by batch in turn, so neither is measured on a smaller table."""
    ways = {"add_served": store.add_served, "core_statement": lambda r: core_served_insert(store, r)}
    spent = dict.fromkeys(ways, 0.0)
    for write in ways.values():
        write(served_rows(batch, 0))
    for b in range(batches):
        for name, write in ways.items():
            rows = served_rows(batch, (2 * b + 1 + (name == "core_statement")) * batch)
            t0 = time.perf_counter()
            write(rows)
            spent[name] += time.perf_counter() - t0
    out = {"batch_rows": batch}
    out |= {f"{name}_us_per_row": round(1e6 * t / (batch * batches), 2) for name, t in spent.items()}
    out["rows_written"] = store.count_served()
    return out


def per_call_us(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return round(1e6 * (time.perf_counter() - t0) / n, 1)


async def per_call_thread_us(fn, n: int) -> float:
    await asyncio.to_thread(fn)
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.to_thread(fn)
    return round(1e6 * (time.perf_counter() - t0) / n, 1)


def run(url: str, users: int, n: int, served_batch: int = 200, served_batches: int = 50) -> dict:
    from core.store import Store, make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    rows = [
        {"event": TYPES[(u + k) % 4], "user_key": f"u{u}", "product_id": f"p{(u * 7 + k) % 5000}",
         "ts": 1_700_000_000_000 + k * 1000, "value": None, "request_id": None,
         "idempotency_key": f"k{u}-{k}", "received_at": 1_700_000_000_000, "flagged_reason": None}
        for u in range(users) for k in range(20)
    ]  # fmt: skip
    for i in range(0, len(rows), 1000):
        store.add_events(rows[i : i + 1000])
    known, unknown = "u7", "nobody"
    same = all(store.recent_events(u, TYPES, 0, 50) == core_statement(store, u, TYPES, 0, 50) for u in (known, unknown))
    out = {"events": len(rows), "same_rows": same, "inline_reads": store.inline_reads}
    for who, user in (("user_with_events", known), ("user_without", unknown)):
        out[who] = {
            "core_statement_us": per_call_us(lambda u=user: core_statement(store, u, TYPES, 0, 50), n),
            "recent_events_us": per_call_us(lambda u=user: store.recent_events(u, TYPES, 0, 50), n),
            "recent_events_in_thread_us": asyncio.run(
                per_call_thread_us(lambda u=user: store.recent_events(u, TYPES, 0, 50), n)
            ),
        }
    out["served_writes"] = served_writes(store, served_batch, served_batches)
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--n", type=int, default=3000, help="calls per measurement")
    parser.add_argument("--served-batch", type=int, default=200, help="served rows per write (serve.online.served)")
    parser.add_argument("--served-batches", type=int, default=50, help="served batches per measurement")
    args = parser.parse_args()
    if args.users < 8 or args.n < 1 or args.served_batch < 1 or args.served_batches < 1:
        parser.error("--users must be at least 8, --n, --served-batch and --served-batches at least 1")
    with contextlib.ExitStack() as stack:
        if args.database == "postgres":
            from core.store.pgserver import local_postgres

            url = stack.enter_context(local_postgres())
        else:
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/shop.db"
        result = {"database": args.database, **run(url, args.users, args.n, args.served_batch, args.served_batches)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
