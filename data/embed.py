"""Embedding job: the embedded MiniLM encoder over product text, on a Ray Data actor pool.

    python -m data.embed --config configs/local.yaml       # same as `shopgraph data embed-products`

Reads the products (`data.inputs.load_products`), turns each into one text with
`product_text` (title | brand | category | sorted attributes, normalized exactly like the
corpus facts), encodes it with `ProductEncoder` — a callable class, so each actor loads the
model once — via `map_batches` on an `ActorPoolStrategy` sized by `data.embedding`, and writes
`product_id, item_idx, vector` Parquet under `layout.embeddings`, committed with a manifest.
`item_idx` is the recommender's dense id when `shopgraph data split` has run, else null.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config.data import EmbeddingConfig
from core.facts import facts_of
from core.layout import ArtifactLayout
from core.manifest import IncompleteDirError, read_manifest, staged_dir, verify_dir, write_manifest
from core.runtime import local_dir
from core.schemas import ITEM_IDS, PRODUCTS
from data.inputs import conform, load_products

TEXT_BUILDER_VERSION = 1  # bump when product_text changes: old vectors no longer match new text
_TEXT_COLUMNS = ["product_id", "title", "brand", "category", "attributes"]


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("product_id", pa.string(), nullable=False),
            pa.field("item_idx", pa.int64()),  # null: product not in the recommender's vocabulary
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),  # L2-normalized
            # sha256 of the embedded text (`text_sha256`): the refresh re-embeds a product only when it differs
            pa.field("text_sha256", pa.string()),
        ]
    )


def product_text(product: dict[str, Any]) -> str:
    """'title | brand | category | k: v; k: v' from the normalized facts (no price, no description)."""
    facts = facts_of(product)
    attributes = "; ".join(f"{k}: {v}" for k, v in facts.get("attributes", {}).items())
    return " | ".join(p for p in (facts.get("title"), facts.get("brand"), facts.get("category"), attributes) if p)


def text_sha256(text: str) -> str:
    """What the embeddings record of each product's text, to tell a changed text from a re-send."""
    return hashlib.sha256(f"{TEXT_BUILDER_VERSION}\x00{text}".encode()).hexdigest()


def _item_lookup(product_ids: pa.Array | pa.ChunkedArray, item_ids: pa.Table | None) -> pa.Array:
    if item_ids is None:
        return pa.nulls(len(product_ids), pa.int64())
    return pc.take(item_ids["item_idx"], pc.index_in(product_ids, value_set=item_ids["product_id"]))


class ProductEncoder:
    """`map_batches` callable: products (Arrow batch) -> product_id, item_idx, vector."""

    def __init__(self, model_dir: str, batch_size: int, item_ids: pa.Table | None = None, threads: int | None = None):
        if threads:
            import torch

            # Ray caps a fractional-CPU actor at one intra-op thread; the config may give it more.
            torch.set_num_threads(threads)
        from ml.encoder import TextEncoder

        self.encoder = TextEncoder(model_dir, batch_size=batch_size)
        self.schema = embeddings_schema(self.encoder.dim)
        self.item_ids = item_ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [product_text(row) for row in batch.select(_TEXT_COLUMNS).to_pylist()]
        vectors = self.encoder.encode(texts)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return pa.table(
            {
                "product_id": batch["product_id"],
                "item_idx": _item_lookup(batch["product_id"], self.item_ids),
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.encoder.dim),
                "text_sha256": [text_sha256(t) for t in texts],
            },
            schema=self.schema,
        )


def embed_products(cfg: EmbeddingConfig, products, model_dir: str | Path, item_ids: pa.Table | None = None):
    """A lazy `ray.data.Dataset` of product vectors from a PRODUCTS table or Dataset."""
    import ray.data

    if isinstance(products, pa.Table):
        products = conform(products, PRODUCTS, "products")
        if products.num_rows == 0:
            raise ValueError(
                "the products table is empty: nothing to embed; check the products shard set (`shopgraph data prepare`)"
            )
        # One block per actor-batch-sized slice lets the whole pool work from the start.
        blocks = max(1, min(products.num_rows // cfg.batch_size, 8 * cfg.concurrency))
        products = ray.data.from_arrow(products).repartition(blocks)
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(
            f"encoder directory {model_dir} not found; run `shopgraph models prepare` or set models.dir"
        )
    return products.select_columns(_TEXT_COLUMNS).map_batches(
        ProductEncoder,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "batch_size": cfg.batch_size,
            "item_ids": item_ids,
            "threads": cfg.threads_per_actor,
        },
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        # Ray 2.60 documents `concurrency=` on map_batches as deprecated in favour of `compute=`.
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus,
    )


def load_item_ids(layout: ArtifactLayout) -> pa.Table | None:
    """The committed ITEM_IDS map, or None before `shopgraph data split` has run."""
    root = local_dir(layout.id_maps)
    try:
        verify_dir(root)
    except IncompleteDirError:
        return None
    return pq.read_table(root / "items.parquet").cast(ITEM_IDS)


def write_embeddings(layout: ArtifactLayout, dataset, meta: dict[str, Any]) -> Path:
    """Run `dataset` and commit its Parquet files under `layout.embeddings` with a manifest."""
    final = local_dir(layout.embeddings)
    with staged_dir(final) as staging:
        dataset.write_parquet(str(staging))
        files = sorted(staging.glob("*.parquet"))
        count = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        dim = pq.read_schema(files[0]).field("vector").type.list_size
        write_manifest(staging, {**meta, "stage": "embed", "count": count, "dim": dim})
    return final


def run(config) -> dict[str, Any]:
    """The `shopgraph data embed-products` stage."""
    from core.runtime import ensure_ray
    from ml.encoder import resolve_encoder_dir

    ensure_ray(config)
    layout = ArtifactLayout(config.artifacts.root)
    products = load_products(layout)
    model_dir = resolve_encoder_dir(config.models.dir, config.models.encoder)
    item_ids = load_item_ids(layout)
    dataset = embed_products(config.data.embedding, products, model_dir, item_ids)
    meta = {
        "encoder": config.models.encoder,
        "text_builder_version": TEXT_BUILDER_VERSION,
        "products": products.num_rows,
        "with_item_idx": item_ids is not None,
        "config": config.data.embedding.model_dump(mode="json"),
    }
    out = write_embeddings(layout, dataset, meta)
    return read_manifest(out)["meta"]


def main(argv: list[str] | None = None) -> int:
    """`python -m data.embed` (a `ray job submit` / RayJob entry point) and its `shopgraph data` command."""
    from core.cli import stage_main

    return stage_main(argv, run, prog="python -m data.embed", description=__doc__)


if __name__ == "__main__":
    import sys

    sys.exit(main())
