"""What a replica's background refresh (serve/reload.py) costs: the manifest check, one catalog
poll of the online database, loading a refreshed text index, and the latency of in-process
retrieval + ranking with the refresh task running beside it versus without.

    .venv/bin/python bench/serve_reload.py --artifacts /tmp/shopgraph-bench [--requests 300]

The artifact root is built as bench/serve_overhead.py builds it (reused when present). The
online database is a fresh SQLite file in a temporary directory holding `--changed` product rows
(a refresh-sized batch of catalog writes). Latency phases run on one event loop, as in a
replica: `off` (no refresh task), `default` (online.poll_ms 250, serve.reload_poll_ms 1000) and
`aggressive` (10 ms and 50 ms); they alternate in rounds of 20 requests so all see the same
machine state. Each request is `RetrieverCore.history_of` + `retrieve_batch` + `RankerCore.rank`.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import add_common_args, machine, prepare, request_mix, stats_ms  # noqa: E402


def main() -> None:
    from core.config.online import OnlineConfig
    from core.store import Store, make_engine, upgrade
    from core.store.keys import KeyRing
    from serve.live import LiveState
    from serve.recommend import RankerCore, RetrieverCore, TextIndex
    from serve.reload import Reloader, manifest_stamp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--requests", type=int, default=300, help="requests per phase")
    p.add_argument("--changed", type=int, default=1000, help="product rows in the online database")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()

    cfg, catalog = prepare(args)
    retriever, ranker = RetrieverCore(cfg, catalog), RankerCore(cfg, catalog)
    out: dict = {"machine": machine(), "products": len(catalog.products), "text_index_rows": retriever.text.size}

    # the check: one stat per watched manifest
    dirs = retriever.text_dirs
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        manifest_stamp(dirs)
    out["manifest_check_us"] = round(1e6 * (time.perf_counter() - started) / n, 2)

    # a reload: what the worker thread does, and the swap
    loads = []
    for _ in range(5):
        started = time.perf_counter()
        fresh = TextIndex.load(*dirs)
        loads.append(time.perf_counter() - started)
    started = time.perf_counter()
    retriever.use_text(fresh)
    out["swap_us"] = round(1e6 * (time.perf_counter() - started), 2)
    out["text_index_load_ms"] = stats_ms(loads)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/shop.db"
        upgrade(url)
        engine = make_engine(url)
        store = Store(engine)
        some = list(catalog.products.values())[: args.changed]
        for prod in some:
            store.put_product({**prod.as_record(), "price": (prod.price or 1.0) + 1.0})

        def live(poll_ms: int) -> LiveState:
            online = OnlineConfig(poll_ms=poll_ms)
            return LiveState(store, KeyRing.from_config(online), online, list(cfg.data.splits.interaction_events))

        async def poll_cost() -> dict:
            first, steady = [], []
            for _ in range(5):
                state = live(250)
                started = time.perf_counter()
                await state.sync(catalog, force=True)  # every row: a replica's first poll
                first.append(time.perf_counter() - started)
            for _ in range(20):
                started = time.perf_counter()
                await state.sync(catalog, force=True)  # the overlap window re-read (rows < 2 s old)
                steady.append(time.perf_counter() - started)
            return {"rows": len(some), "first_poll_ms": stats_ms(first), "next_poll_ms": stats_ms(steady)}

        out["catalog_poll"] = asyncio.run(poll_cost())

        mix = request_mix(catalog, args.requests, args.seed)
        n_cands = min(max(args.k * 3, 50), 300)

        async def one(req) -> float:
            started = time.perf_counter()
            history, unknown = retriever.history_of(req.get("user_id"), req.get("recent_items", []))
            hidden = set()
            cands = retriever.retrieve_batch([history], [unknown], n_cands, hidden)[0]
            ranker.rank(req.get("user_id"), history, cands, args.k, {}, hidden)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0)  # a request's await points: the refresh task runs here
            return elapsed

        async def phases() -> dict:
            settings = {"off": None, "default": (250, 1000), "aggressive": (10, 50)}
            reloaders = {}
            for name, s in settings.items():
                if s is not None:
                    r = Reloader(s[1] / 1000, live=live(s[0]), catalog=catalog)
                    r.watch("text index", dirs, retriever.load_text, retriever.use_text)
                    reloaders[name] = r
            times: dict[str, list[float]] = {name: [] for name in settings}
            for start in range(0, len(mix), 20):
                for name in settings:
                    r = reloaders.get(name)
                    if r is not None:
                        r.start()
                    for req in mix[start : start + 20]:
                        times[name].append(await one(req))
                    if r is not None:
                        r._task.cancel()
                        await asyncio.sleep(0)
            polls = {name: r.live.polls for name, r in reloaders.items()}
            return {name: stats_ms(t) for name, t in times.items()} | {"catalog_polls": polls}

        out["request_ms"] = asyncio.run(phases())
        engine.dispose()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
