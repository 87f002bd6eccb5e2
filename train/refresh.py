"""The whole incremental refresh: data.refresh plus the pages of products whose facts changed.

Embeddings and text index as `data.refresh` updates them, then page content regenerated with
the real generator (vLLM, train.batch_generate) for products whose facts changed.

    shopgraph data refresh --config configs/local.yaml [--model-dir DIR]
    python -m train.refresh --config configs/local.yaml          # ray job submit / RayJob entry point

It lives in train/ because it runs the page generator (data/ must not import it); the data side,
the watermark and the summary are `data.refresh.run`, which calls this step between committing
the index and advancing the watermark (watermark row "refresh").

Pages are regenerated where a live product's facts hash (`core.facts.facts_hash`: title, brand,
category, price, attributes; not stock) differs from its row in the committed content, or it has
none; deleted products' pages are dropped. The new rows replace the old ones of the same product
in `<artifacts>/content/pdp/content.parquet`, committed as a whole directory; the precomputed
reasons (`reasons/`, `audit/`) are carried over as they are: serving skips a reason whose facts
hash no longer matches, and `shopgraph data generate-content` refreshes them all.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CONTENT_FILE = "content.parquet"


class PageContent:
    """`data.refresh.ContentStep` over the committed batch content."""

    def __init__(self, cfg, model_dir: str | Path | None = None):
        from core.layout import ArtifactLayout
        from core.runtime import local_dir

        self.cfg = cfg
        self.layout = ArtifactLayout(cfg.artifacts.root)
        self.root = local_dir(self.layout.content)
        self.model_dir = model_dir
        self.regenerate: list[dict[str, Any]] = []
        self.drop: set[str] = set()
        self.skipped: str | None = None

    def plan(self, live: list[dict[str, Any]], deleted: list[str]) -> list[str]:
        from core.facts import facts_hash
        from core.manifest import IncompleteDirError, verify_dir

        try:
            verify_dir(self.root)
        except IncompleteDirError:
            self.skipped = (
                "no committed page content; `shopgraph data generate-content` writes it for the whole catalog"
            )
            return []
        current = pq.read_table(self.root / CONTENT_FILE, columns=["product_id", "facts_hash"])
        hashes = dict(zip(current["product_id"].to_pylist(), current["facts_hash"].to_pylist(), strict=True))
        currency = self.cfg.data.currency
        self.regenerate = [r for r in live if hashes.get(r["product_id"]) != facts_hash(r, currency)]
        self.drop = {pid for pid in deleted if pid in hashes}
        return [r["product_id"] for r in self.regenerate] + sorted(self.drop)

    def apply(self) -> dict[str, Any]:
        if self.skipped:
            return {"regenerated": 0, "skipped": self.skipped}
        if not self.regenerate and not self.drop:
            return {"regenerated": 0, "dropped": 0}
        from core.manifest import read_manifest, staged_dir, write_manifest
        from data.refresh import products_table
        from train.batch_generate import _collect, generator_version, page_dataset

        old = pq.read_table(self.root / CONTENT_FILE)
        new = None
        model_version = read_manifest(self.root)["meta"].get("model_version")
        if self.regenerate:
            model_dir, model_version = generator_version(self.model_dir or self.layout.generator)
            products = products_table(self.regenerate).sort_by("product_id")
            new = _collect(page_dataset(self.cfg, products, model_dir, model_version, self._brands(products)))
        gone = pa.array(sorted(self.drop | {r["product_id"] for r in self.regenerate}), pa.string())
        kept = old.filter(pc.invert(pc.is_in(old["product_id"], value_set=gone)))
        table = pa.concat_tables([kept, new.select(kept.column_names).cast(kept.schema)]) if new is not None else kept
        meta = read_manifest(self.root)["meta"]
        with staged_dir(self.root) as staging:
            pq.write_table(table.sort_by("product_id"), staging / CONTENT_FILE)
            for sub in ("reasons", "audit"):
                if (self.root / sub).is_dir():
                    shutil.copytree(self.root / sub, staging / sub)
            refreshed = {"regenerated": 0 if new is None else new.num_rows, "dropped": len(self.drop),
                         "model_version": model_version}  # fmt: skip
            write_manifest(staging, {**meta, "products": table.num_rows, "refresh": refreshed})
        return refreshed

    def _brands(self, products: pa.Table) -> list[str]:
        """Every brand of the catalog, as serving judges a page: the shard set's plus the database's."""
        from data.inputs import load_products
        from train.batch_generate import catalog_brands

        try:
            catalog = catalog_brands(load_products(self.layout))
        except FileNotFoundError:
            catalog = []
        return sorted(set(catalog) | set(catalog_brands(products)))


def run(cfg, model_dir: str | None = None) -> dict[str, Any]:
    from data.refresh import run as refresh

    return refresh(cfg, PageContent(cfg, model_dir))


def main(argv: list[str] | None = None) -> int:
    """`python -m train.refresh` and `shopgraph data refresh`."""
    from core.cli import stage_main

    def options(parser) -> None:
        parser.add_argument(
            "--model-dir", default=None, help="Generator for the pages (default: <artifacts>/models/generator)."
        )

    return stage_main(argv, run, prog="python -m train.refresh", description=__doc__, options=options)


if __name__ == "__main__":
    sys.exit(main())
