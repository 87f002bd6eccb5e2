"""Everything a serving replica reads from the artifacts, loaded once per replica.

The retriever, ranker, generator and ingress each call `load_catalog(cfg)` (or the parts they
need) in their constructor; nothing is passed through `.bind()` except the config, so a
replica on any node rebuilds the same state from the artifact root.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.facts import attribute_values


@dataclass
class Product:
    product_id: str
    title: str
    category: str | None
    brand: str | None
    price: float | None
    attributes: dict[str, str]
    description: str | None
    in_stock: bool | None
    item_idx: int | None = None  # dense id in the recommender's vocabulary; None = new item

    def as_record(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "title": self.title,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "attributes": self.attributes,
            "description": self.description,
            "in_stock": self.in_stock,
        }


@dataclass
class Catalog:
    products: dict[str, Product]
    by_item_idx: dict[int, str]
    user_history: dict[str, np.ndarray]  # user_id -> item_idx sequence (time order)
    user_purchases: dict[str, set[str]]
    popular: list[str]  # product ids, most popular first
    model_version: str
    currency: str
    extra: dict[str, Any] = field(default_factory=dict)
    user_history_ts: dict[str, np.ndarray] = field(default_factory=dict)  # ms of each user_history item

    def item_idx(self, product_id: str) -> int | None:
        p = self.products.get(product_id)
        return p.item_idx if p else None


def artifact_version(paths: list[Path]) -> str:
    """A short version id of the models being served: hash of their manifests."""
    h = hashlib.sha256()
    for p in paths:
        m = p / "shopgraph-manifest.json"
        h.update(m.read_bytes() if m.exists() else b"-")
    return h.hexdigest()[:12]


def load_catalog(cfg) -> Catalog:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.layout import ArtifactLayout
    from core.runtime import local_dir
    from core.shards import read_events, read_products

    layout = ArtifactLayout(cfg.artifacts.root)
    products_t = read_products(layout).to_pylist()
    ids = pq.read_table(local_dir(layout.id_maps) / "items.parquet").to_pydict()
    idx_of = dict(zip(ids["product_id"], ids["item_idx"]))
    products = {
        r["product_id"]: Product(
            r["product_id"],
            r["title"],
            r["category"],
            r["brand"],
            r["price"],
            attribute_values(r["attributes"]),  # a repeated key is a multi-valued attribute
            r["description"],
            r["in_stock"],
            idx_of.get(r["product_id"]),
        )
        for r in products_t
    }
    by_item_idx = {int(i): pid for pid, i in idx_of.items() if pid in products}
    users = pq.read_table(local_dir(layout.id_maps) / "users.parquet").to_pydict()
    uid_of = dict(zip(users["user_idx"], users["user_id"]))
    seqs = pq.read_table(local_dir(layout.sequences) / "sequences.parquet", columns=["user_idx", "items", "ts"])
    ts_lists = seqs["ts"].combine_chunks()
    seq_ts = ts_lists.flatten().cast(pa.int64()).to_numpy()  # ms: the live path merges by time (serve.live)
    offsets = ts_lists.offsets.to_numpy() - ts_lists.offsets[0].as_py()
    seqs = seqs.select(["user_idx", "items"]).to_pydict()
    history, history_ts = {}, {}
    for n, (u, items) in enumerate(zip(seqs["user_idx"], seqs["items"])):
        if u in uid_of:
            history[uid_of[u]] = np.asarray(items, dtype=np.int64)
            history_ts[uid_of[u]] = seq_ts[offsets[n] : offsets[n + 1]]
    events = read_events(layout).select(["user_id", "product_id", "event"]).to_pydict()
    purchases: dict[str, set[str]] = {}
    for u, p, e in zip(events["user_id"], events["product_id"], events["event"]):
        if e == "purchase":
            purchases.setdefault(u, set()).add(p)
    pop = pq.read_table(
        local_dir(layout.features) / "item_popularity.parquet", columns=["product_id", "recency_score", "count"]
    ).to_pydict()
    order = sorted(
        range(len(pop["product_id"])), key=lambda i: (-pop["recency_score"][i], -pop["count"][i], pop["product_id"][i])
    )
    popular = [pop["product_id"][i] for i in order if pop["product_id"][i] in products]
    version = artifact_version([Path(layout.recommender), Path(layout.ranker), local_dir(layout.index)])
    catalog = Catalog(products, by_item_idx, history, purchases, popular, version, cfg.data.currency)
    catalog.user_history_ts = history_ts
    return catalog


def facts_of(product: Product, currency: str) -> dict[str, Any]:
    """The product facts in the corpus's canonical form (the same serialization the generator
    was trained on and the grounding check compares with)."""
    from core.facts import facts_of as corpus_facts

    return corpus_facts(product.as_record(), currency)


def facts_hash(product: Product, currency: str) -> str:
    from core.facts import facts_hash as corpus_hash

    return corpus_hash(product.as_record(), currency)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
