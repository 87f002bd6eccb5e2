"""Embedding throughput: the Ray Data actor-pool job vs a plain single-process loop.

    .venv/bin/python bench/embedding_throughput.py --n 3000 [--config configs/local.yaml] [--set data.embedding.concurrency=2]

Both paths use the same encoder (the prepared MiniLM under models.dir), the same product
texts and the same batch size (data.embedding.batch_size). Timings include loading the model
(and, for Ray, starting the actors), since a job pays for both. Prints one JSON object; the
target is ray_vs_plain >= 0.9 (Ray must not cost more than it gives on this machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from core.config import load_config  # noqa: E402
from core.schemas import PRODUCTS  # noqa: E402

NOUNS = [
    "train set",
    "puzzle",
    "jacket",
    "kettle",
    "phone case",
    "headphones",
    "backpack",
    "lamp",
    "sneakers",
    "board game",
]
ADJ = ["wooden", "classic", "wireless", "waterproof", "compact", "deluxe", "organic", "vintage", "foldable", "smart"]
BRANDS = ["Brio", "Lego", "Acme", "Nordic", "Zen", "Kobo", "Umi", "Polar"]


def products(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        a, b, noun = rng.choice(ADJ), rng.choice(ADJ), rng.choice(NOUNS)
        rows.append(
            {
                "product_id": f"p{i:07d}",
                "title": f"{a.title()} {b} {noun} {i % 97}",
                "brand": str(rng.choice(BRANDS)),
                "category": f"Shop > {noun.split()[0].title()}",
                "price": float(rng.integers(5, 500)),
                "attributes": [
                    ("color", str(rng.choice(["red", "blue", "green", "black"]))),
                    ("size", str(rng.integers(1, 5))),
                ],
                "description": None,
                "in_stock": True,
                "updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            }
        )
    return pa.Table.from_pylist(rows, schema=PRODUCTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="products to embed")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument(
        "--plain-threads", type=int, default=None, help="torch threads of the plain loop (default: torch's, all cores)"
    )
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    emb = cfg.data.embedding

    import ray

    from data.embed import embed_products, product_text
    from ml.encoder import TextEncoder, resolve_encoder_dir
    from ml.index import vectors_of

    model_dir = resolve_encoder_dir(cfg.models.dir, cfg.models.encoder)
    table = products(args.n)

    # Plain loop: one process, the same encoder, batches of the same size, torch's default threads.
    if args.plain_threads:
        import torch

        torch.set_num_threads(args.plain_threads)
    start = time.perf_counter()
    encoder = TextEncoder(model_dir, batch_size=emb.batch_size)
    loaded = time.perf_counter()
    texts = [product_text(r) for r in table.to_pylist()]
    plain = np.concatenate(
        [encoder.encode(texts[i : i + emb.batch_size]) for i in range(0, len(texts), emb.batch_size)]
    )
    plain_s = time.perf_counter() - start
    plain_encode_s = time.perf_counter() - loaded
    del encoder

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    result = embed_products(emb, table, model_dir).materialize()
    ray_s = time.perf_counter() - start
    out = result.to_arrow_refs()
    got = pa.concat_tables(ray.get(out)).sort_by("product_id")
    ray.shutdown()

    max_diff = float(np.abs(vectors_of(got) - plain).max())
    print(
        json.dumps(
            {
                "texts": args.n,
                "batch_size": emb.batch_size,
                "concurrency": emb.concurrency,
                "num_cpus_per_actor": emb.num_cpus,
                "threads_per_actor": emb.threads_per_actor,
                "cpu_count": os.cpu_count(),
                "load_average_at_end": round(os.getloadavg()[0], 1),
                "plain_threads": args.plain_threads or "torch default",
                "plain_s": round(plain_s, 2),
                "plain_encode_only_s": round(plain_encode_s, 2),
                "plain_texts_per_s": round(args.n / plain_s, 1),
                "ray_s": round(ray_s, 2),
                "ray_texts_per_s": round(args.n / ray_s, 1),
                "ray_vs_plain": round(plain_s / ray_s, 3),
                "target": 0.9,
                "max_abs_vector_diff": max_diff,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
