"""The cost of pages per shopper segment: content-cache hit rate with segments vs one page for all.

    .venv/bin/python bench/segment_cache.py [--config configs/local.yaml] [--history-share 0.8]

The sample shop of the config (`data.sample`, generated in memory) is split by time: the first
`--history-share` of its events are the history the prepared shards hold (what `serve` builds a
shopper's segment from, `ml.segments`), the rest are replayed in order as product-page views.
Each view looks its page up in the serving cache (`serve.content.ContentCache`, the configured
`serve.generation.cache_entries`) under the key the ingress uses, and a miss is generated and
cached, as the ingress's background queue does. Reported per setting: hit rate, views answered
with the cached page of segment "all" in the segment's order (the ingress's fallback while a
segment's own page is made), distinct segments, pages generated (misses) and the largest number
of segments one product was written for. Settings: every shopper "all" (segments off), the
configured dimensions, and smaller dimension sets. No Ray, no model: the keys and the cache are
the real ones, generation is counted, not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def replay(views, segment_of, capacity: int) -> dict:
    """views: [(user, product_id)] in time order; segment_of(user) -> segment id."""
    from serve.content import CacheKey, ContentCache

    cache = ContentCache(capacity)
    hits = generic = 0
    per_product: dict[str, set[str]] = defaultdict(set)
    segments: Counter[str] = Counter()
    for user, pid in views:
        seg = segment_of(user)
        segments[seg] += 1
        per_product[pid].add(seg)
        key = CacheKey(pid, "page", seg, "bench", "-")
        if cache.get(key) is not None:
            hits += 1
            continue
        if seg != "all" and cache.peek(CacheKey(pid, "page", "all", "bench", "-")) is not None:
            generic += 1
        cache.put(key, True)  # the generation queued for the miss fills the cache
    n = len(views)
    return {
        "hit_rate": round(hits / n, 4),
        "served_all_page_in_segment_order": round(generic / n, 4),
        "pages_generated": n - hits,
        "segments_seen": len(segments),
        "views_in_top10_segments": round(sum(c for _, c in segments.most_common(10)) / n, 4),
        "max_segments_per_product": max(len(s) for s in per_product.values()),
    }


def main() -> None:
    import numpy as np

    from core.config import load_config
    from core.config.serve import SegmentsConfig
    from data.sample import generate
    from ml.segments import SegmentIndex

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value overrides")
    p.add_argument("--history-share", type=float, default=0.8, help="share of events (by time) that is history")
    args = p.parse_args()
    if not 0 < args.history_share < 1:
        p.error(f"--history-share is {args.history_share}; use a number between 0 and 1")

    cfg = load_config(args.config, args.overrides)
    started = time.perf_counter()
    products_t, events_t = generate(cfg.data.sample, cfg.data.seed)
    products = {r["product_id"]: r | {"attributes": dict(r["attributes"])} for r in products_t.to_pylist()}
    ev = events_t.select(["user_id", "product_id", "ts"]).to_pydict()
    order = np.argsort(np.asarray(events_t["ts"].cast("int64")), kind="stable")
    cut = int(len(order) * args.history_share)
    history: dict[str, list[dict]] = defaultdict(list)
    for i in order[:cut]:
        if ev["product_id"][i] in products:
            history[ev["user_id"][i]].append(products[ev["product_id"][i]])
    views = [(ev["user_id"][i], ev["product_id"][i]) for i in order[cut:] if ev["product_id"][i] in products]

    base = cfg.serve.segments
    settings = {"all (segments off)": base.model_copy(update={"enabled": False})}
    settings[f"segments: {'+'.join(base.dimensions)}"] = base
    for dims in (["category", "price"], ["price"], ["brand"]):
        settings[f"segments: {'+'.join(dims)}"] = base.model_copy(update={"dimensions": dims})
    capacity = cfg.serve.generation.cache_entries
    results = {}
    for name, seg_cfg in settings.items():
        index = SegmentIndex(products.values(), SegmentsConfig(**seg_cfg.model_dump()))
        memo: dict[str, str] = {}

        def segment_of(user, index=index, memo=memo):
            if user not in memo:
                memo[user] = index.segment_of(history.get(user, [])).id
            return memo[user]

        results[name] = replay(views, segment_of, capacity)
    print(
        json.dumps(
            {
                "benchmark": "segment_cache",
                "sample": cfg.data.sample.model_dump(),
                "page_views": len(views),
                "products_viewed": len({p for _, p in views}),
                "shoppers_viewing": len({u for u, _ in views}),
                "shoppers_with_history": sum(1 for u in {u for u, _ in views} if history.get(u)),
                "views_by_shoppers_with_history": round(sum(1 for u, _ in views if history.get(u)) / len(views), 4),
                "cache_entries": capacity,
                "results": results,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
