"""Incremental refresh vs the full pipeline, side by side in one run, on a realistic catalog.

    .venv/bin/python bench/refresh.py --products 100000 [--changed 0.01] [--data ../shared/data] [--set data.index.type=hnsw]

1. Builds a catalog of `--products` products whose text comes from real shop data (Flipkart and
   Myntra product names, brands, colours and genders under `--data`, default `../shared/data`
   relative to the repository root; never copied into the repository): each real product is
   the seed of several variants (another colour, size or pack), so titles read like a shop's.
2. Full path, timed: `data.prepare` over the catalog as a JSONL source, `data.embed`, `data.index`
   (the config's encoder, actor pool and index type).
3. `--changed` of the products change through the online database (SQLite under the run's
   artifact root, written with `core.store.Store` as the API does): 60% a new title, 20% price
   only, 10% deleted, 10% new products.
4. Refresh path, timed: `data.refresh` (read_sql, re-embed the changed texts, index in place).
5. Recall: a full rebuild over the refreshed embeddings, and recall@10 against exact search of
   the refreshed index and the rebuild on `--queries` product vectors as queries; the ratio of
   the two and the top-10 overlap between them.

Prints one JSON object. Targets (issue 15): refresh_s <= 5% of full_s, recall ratio >= 0.99.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COLOURS = ["black", "white", "navy", "red", "olive", "grey", "beige", "maroon", "teal", "mustard", "pink", "blue"]
SIZES = ["S", "M", "L", "XL", "XXL", "free size", "pack of 2", "pack of 3", "set of 4", "king", "queen", "single"]


def seeds(data: Path) -> list[dict]:
    """(title, brand, category, attributes) of real products: Flipkart names and brands, Myntra names,
    brands, genders and colours."""
    out = []
    flipkart = data / "flipkart-sample" / "flipkart_com-ecommerce_sample.csv"
    myntra = data / "myntra-dev" / "myntra_dev3000.csv"
    missing = [str(p) for p in (flipkart, myntra) if not p.is_file()]
    if missing:
        sys.exit(f"error: {', '.join(missing)} not found; pass --data with the shared data directory")
    with open(flipkart, encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            name = (row.get("product_name") or "").strip()
            if name:
                words = name.split()
                out.append({"title": name, "brand": (row.get("brand") or words[0]).strip(),
                            "category": f"Shop > {words[-1].title()}", "attributes": {}})  # fmt: skip
    with open(myntra, encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            name = (row.get("Product_Name") or "").strip()
            if name:
                attrs = {k: v.strip() for k, v in (("colour", row.get("Primary_Color") or ""),) if v.strip()}
                out.append({"title": name, "brand": (row.get("Product_Brand") or "").strip(),
                            "category": f"{(row.get('Gender') or 'Unisex').strip()} > {name.split()[-1].title()}",
                            "attributes": attrs})  # fmt: skip
    return out


def variant(seed: dict, i: int, rng: random.Random) -> dict:
    colour, size = rng.choice(COLOURS), rng.choice(SIZES)
    return {
        "product_id": f"b{i:07d}",
        "title": f"{seed['title']} - {colour.title()}, {size}",
        "brand": seed["brand"] or None,
        "category": seed["category"],
        "price": round(rng.uniform(3, 400), 2),
        "attributes": {**seed["attributes"], "colour": colour, "size": size},
        "in_stock": True,
    }


def catalog(data: Path, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    base = seeds(data)
    rng.shuffle(base)
    return [variant(base[i % len(base)], i, rng) for i in range(n)]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 2)


def recall(index, queries: np.ndarray, truth: list[set[str]], k: int = 10) -> tuple[float, list[list]]:
    _, rows = index.search(queries, k)
    got = index.product_ids(rows)
    return float(np.mean([len(set(g) & t) / k for g, t in zip(got, truth, strict=True)])), got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000, help="catalog size (default 100000)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of products changed (default 0.01)")
    parser.add_argument("--queries", type=int, default=1000, help="recall queries (product vectors)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data directory")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep artifacts here (default: a temp dir)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    if args.products < 100 or not 0 < args.changed <= 0.5:
        sys.exit("error: --products must be >= 100 and --changed in (0, 0.5]")

    import ray

    from core.config import load_config
    from core.layout import ArtifactLayout
    from core.store import Store, database_url, make_engine, upgrade
    from data import embed, index, prepare
    from data.index import build_from_embeddings
    from data.refresh import run as refresh
    from ml.index import load_embeddings, load_index, vectors_of

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sgrefresh-"))
    raw, root = work / "raw", work / "artifacts"
    raw.mkdir(parents=True, exist_ok=True)
    products = catalog(args.data, args.products, seed=0)
    with open(raw / "products.jsonl", "w", encoding="utf-8") as f:
        for p in products:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    source = {"name": "products", "format": "jsonl", "path": str(raw / "products.jsonl"), "table": "products"}
    cfg = load_config(
        args.config,
        [
            f"artifacts.root={root}",
            f"data.sources={json.dumps([source])}",
            "data.index.recall_sample=0",
            *args.overrides,
        ],
    )
    if not Path(cfg.models.dir).is_absolute():
        cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update={"dir": str(REPO / cfg.models.dir)})})
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    # ---- full: prepare + embed + index
    _, prepare_s = timed(lambda: prepare.prepare(cfg, log=lambda _: None))
    _, embed_s = timed(embed.run, cfg)
    _, index_s = timed(index.run, cfg)
    full_s = round(prepare_s + embed_s + index_s, 2)

    # ---- 1% of the catalog changes through the database
    url = database_url(cfg)
    upgrade(url)
    store = Store(make_engine(url))
    rng = random.Random(1)
    n_changed = max(1, int(args.products * args.changed))
    picked = rng.sample(products, n_changed)
    cut1, cut2 = int(0.6 * n_changed), int(0.8 * n_changed)
    n_deleted = n_changed // 10
    n_new = n_changed - cut2 - n_deleted
    for p in picked[:cut1]:
        store.put_product({**p, "title": f"{p['title']} (2025 edition, {rng.choice(COLOURS)})"})
    for p in picked[cut1:cut2]:
        store.patch_product(p["product_id"], {"price": round(p["price"] * 0.9, 2)}, p)
    for p in picked[cut2 : cut2 + n_deleted]:
        store.delete_product(p["product_id"], p)
    base = seeds(args.data)
    for j in range(n_new):
        store.put_product(variant(rng.choice(base), args.products + j, rng) | {"product_id": f"n{j:06d}"})
    summary, refresh_s = timed(refresh, cfg)

    # ---- recall: refreshed index vs a full rebuild over the same (refreshed) embeddings
    layout = ArtifactLayout(cfg.artifacts.root)
    emb, meta = load_embeddings(layout)
    refreshed = load_index(layout.index)
    rebuilt, rebuild_s = timed(
        lambda: build_from_embeddings(cfg.data.index, emb, work / "rebuilt-index", dim=meta["dim"])
    )
    vectors = vectors_of(emb)
    q_rows = np.random.default_rng(2).choice(len(vectors), min(args.queries, len(vectors)), replace=False)
    queries = vectors[q_rows]
    pids = emb["product_id"].to_pylist()
    exact = queries @ vectors.T
    truth = [{pids[j] for j in np.argpartition(-s, 10)[:10]} for s in exact]
    r_refreshed, got_refreshed = recall(refreshed, queries, truth)
    r_rebuilt, got_rebuilt = recall(rebuilt, queries, truth)
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got_refreshed, got_rebuilt, strict=True)]))
    print(
        json.dumps(
            {
                "products": args.products,
                "changed_fraction": args.changed,
                "index_type": cfg.data.index.type,
                "cpu_count": os.cpu_count(),
                "load_average_at_end": round(os.getloadavg()[0], 1),
                "full": {"prepare_s": prepare_s, "embed_s": embed_s, "index_s": index_s, "total_s": full_s},
                "changes": {"title": cut1, "price_only": cut2 - cut1, "deleted": n_deleted, "new": n_new},
                "refresh": {
                    "total_s": refresh_s,
                    **{
                        k: summary.get(k)
                        for k in ("read", "changed", "embedded", "added", "removed", "dead_rows", "rebuilt", "seconds")
                    },
                },  # fmt: skip
                "refresh_vs_full": round(refresh_s / full_s, 4),
                "target_refresh_vs_full": 0.05,
                "recall_at_10": {
                    "refreshed_vs_exact": round(r_refreshed, 4),
                    "rebuilt_vs_exact": round(r_rebuilt, 4),
                    "ratio": round(r_refreshed / r_rebuilt, 4),
                    "top10_overlap": round(overlap, 4),
                    "queries": len(q_rows),
                    "rebuild_index_s": rebuild_s,
                },  # fmt: skip
                "target_recall_ratio": 0.99,
            },
            indent=2,
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
