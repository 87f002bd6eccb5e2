"""`data prepare` with the online database as its source (`format: sql`), SQLite or PostgreSQL.

    .venv/bin/python bench/prepare_sql.py --database sqlite --products 5000 --events 200000
    .venv/bin/python bench/prepare_sql.py --database postgres --products 5000 --events 200000

Fills a fresh database through `core.store.Store` (the API's own writes: pseudonymous users, 1%
of products soft-deleted, 1% of events flagged, 10% impressions), runs `data.prepare.prepare` on a
local Ray with one products and one events source of format sql, and checks the accounting
(read = kept + quarantined + erased, per source). PostgreSQL is started as the tests start it
(core.store.pgserver, fsync on). Prints one JSON object: rows, seconds (fill and prepare apart),
rows per second of the prepare, and its phases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def fill(url: str, products: int, events: int, pz, seed: int = 0) -> None:
    import numpy as np
    from sqlalchemy import insert

    from core.store import EventRow, ProductRow, make_engine, now_ms

    rng = np.random.default_rng(seed)
    engine = make_engine(url)
    stamp = now_ms()
    rows = [
        dict(
            product_id=f"P{i}", title=f"Product {i}", category="Home > Things", brand=f"B{i % 50}",
            price=float(1 + i % 100), attributes={"colour": ["red", "blue"][i % 2]}, in_stock=True,
            updated_at=stamp, deleted_at=stamp if i % 100 == 0 else None,
        )
        for i in range(products)
    ]  # fmt: skip
    users = [pz.user_key(f"user{u}") for u in range(max(1, events // 20))]
    kinds = np.array(["view", "click", "cart", "purchase", "impression"])
    kind = rng.choice(len(kinds), events, p=[0.6, 0.15, 0.1, 0.05, 0.1])
    with engine.begin() as conn:
        conn.execute(insert(ProductRow), rows)
    for start in range(0, events, 50_000):
        batch = [
            dict(
                event=str(kinds[kind[k]]), user_key=users[int(rng.integers(len(users)))],
                product_id=f"P{int(rng.integers(products))}", ts=stamp - 86_400_000 + k, value=None,
                request_id=None, idempotency_key=f"k{k}", received_at=stamp,
                flagged_reason="unknown_product" if k % 100 == 7 else None,
            )
            for k in range(start, min(events, start + 50_000))
        ]  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(EventRow), batch)
    engine.dispose()


def run(database: str, products: int, events: int) -> dict:
    import ray

    from core.config import ShopgraphConfig
    from core.privacy import Pseudonymizer
    from core.store import upgrade
    from core.store.pgserver import local_postgres
    from data.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="shopgraph-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        url = f"sqlite:///{root / 'shop.db'}" if database == "sqlite" else stack.enter_context(local_postgres())
        upgrade(url)
        cfg = ShopgraphConfig.model_validate(
            {
                "artifacts": {"root": str(root / "art")},
                "online": {"database_url": url},
                "data": {
                    "sources": [
                        {"name": "db-products", "format": "sql", "table": "products"},
                        {"name": "db-events", "format": "sql", "table": "events"},
                    ]
                },
            }
        )
        started = time.perf_counter()
        fill(url, products, events, Pseudonymizer.from_config(cfg))
        fill_s = time.perf_counter() - started
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            result = prepare(cfg, log=lambda _: None)
        finally:
            ray.shutdown()
    counts = {
        c.name: {"read": c.read, "kept": c.kept, "quarantined": c.quarantined, "erased": c.erased}
        for c in result.counts
    }
    reasons = {c.name: dict(sorted(c.reasons.items(), key=lambda kv: -kv[1])) for c in result.counts}
    return {
        "database": database,
        "products": products,
        "events": events,
        "fill_s": round(fill_s, 1),
        "prepare_s": round(result.seconds, 1),
        "rows_per_s": round((products + events) / result.seconds),
        "phases": result.phases,
        "counts": counts,
        "reasons": reasons,
        "accounting_ok": all(v["read"] == v["kept"] + v["quarantined"] + v["erased"] for v in counts.values()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--products", type=int, default=5000)
    p.add_argument("--events", type=int, default=200_000)
    args = p.parse_args()
    print(json.dumps(run(args.database, args.products, args.events), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
