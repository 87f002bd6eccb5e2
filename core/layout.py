"""Where each artifact lives under `artifacts.root` (a local path or any fsspec URI).

One place names every path, so stages, training, serving and the cluster manifests agree.
Shard sets are directories committed with a manifest (`core.manifest`); a directory without
one is incomplete and no stage reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec


@dataclass(frozen=True)
class ArtifactLayout:
    root: str

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    # data/
    @property
    def products(self) -> str:
        return self._join("data", "products")

    @property
    def events(self) -> str:
        return self._join("data", "events")

    @property
    def quarantine(self) -> str:
        return self._join("data", "quarantine")

    @property
    def id_maps(self) -> str:
        return self._join("data", "id_maps")  # users.parquet, items.parquet

    @property
    def sequences(self) -> str:
        return self._join("data", "sequences")

    @property
    def splits(self) -> str:
        return self._join("data", "splits")  # loo.parquet, temporal/

    @property
    def features(self) -> str:
        return self._join("data", "features")  # item_popularity.parquet, ...

    @property
    def corpora(self) -> str:
        return self._join("data", "corpora")  # pdp.jsonl, reasons.jsonl

    @property
    def embeddings(self) -> str:
        return self._join("data", "embeddings")

    @property
    def index(self) -> str:
        return self._join("index")

    # train/
    @property
    def recommender(self) -> str:
        return self._join("models", "recommender")

    @property
    def ranker(self) -> str:
        return self._join("models", "ranker")

    @property
    def generator(self) -> str:
        return self._join("models", "generator")

    @property
    def sentiment(self) -> str:
        return self._join("models", "sentiment")

    @property
    def review_summaries(self) -> str:
        return self._join("content", "reviews")  # per-product aspect summaries (train.sentiment)

    @property
    def content(self) -> str:
        return self._join("content", "pdp")  # batch-generated pages (train.batch_generate)

    @property
    def reports(self) -> str:
        return self._join("reports")

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """The fsspec filesystem of the root and the root's path within it."""
        fs, path = fsspec.core.url_to_fs(self.root)
        return fs, path
