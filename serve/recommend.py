"""The recommendation path without Ray: retrieval, ranking, rules, evidence, template reasons.

The Serve deployments (`serve.app`) wrap these classes; tests and the graph-overhead
benchmark call them in-process on the same inputs.

Retrieval: the recommender's user vector against the FAISS index of its item vectors that the
export built (`ml.index.ItemIndex`: exact inner product, or IVF / HNSW with the candidates
re-scored exactly, so scores are the model's). Cold start: a user with no usable history gets the most popular
items (within the request's filters); items the recommender never saw (new products) are
reached through the MiniLM text index, queried with the centroid of the user's recent items.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve.catalog import Catalog, Product


@dataclass
class Candidates:
    item_ids: np.ndarray  # recommender candidates (dense item ids), best first
    scores: np.ndarray
    new_items: list[tuple[str, float, str]] = field(default_factory=list)  # (product_id, similarity, anchor product_id)
    cold_start: bool = False


@dataclass
class Scored:
    product_id: str
    score: float
    evidence: list[dict]


@dataclass(frozen=True)
class TextIndex:
    """The text side of retrieval (MiniLM vectors and their FAISS index), loaded together and
    swapped whole when a refresh commits new ones (serve.reload): a request reads it once."""

    index: Any  # ml.index.LoadedIndex
    pids: list[str | None]  # product id of each index row; None for a row the refresh retired
    row: dict[str, int]  # product id -> row of `vectors`
    vectors: np.ndarray  # (N, dim) float32, L2-normalized

    @classmethod
    def load(cls, index_dir: str | Path, embeddings_dir: str | Path) -> TextIndex:
        from ml.index import load_embeddings, load_index, vectors_of

        index = load_index(index_dir)
        emb, _ = load_embeddings(embeddings_dir)
        return cls(
            index,
            index.ids["product_id"].to_pylist(),  # once: converting per request cost ~0.5 ms
            {pid: i for i, pid in enumerate(emb.column("product_id").to_pylist())},
            vectors_of(emb),
        )

    @property
    def size(self) -> int:
        return int(self.index.index.ntotal)


class RetrieverCore:
    def __init__(self, cfg, catalog: Catalog):
        import time

        import faiss
        import torch

        from core.layout import ArtifactLayout
        from core.manifest import read_manifest
        from core.runtime import local_dir
        from ml.index import load_item_index
        from ml.sasrec import load_exported

        t0 = time.perf_counter()
        layout = ArtifactLayout(cfg.artifacts.root)
        self.model, self.model_cfg, vectors = load_exported(layout.recommender)
        torch.set_num_threads(1)  # many small requests: one thread each beats contention
        faiss.omp_set_num_threads(1)  # the same for FAISS: OpenMP's spinning threads cost a loaded node 10x at p99
        # The index the export built (train.recommender.item_index), read as it is: no rebuild here.
        meta = read_manifest(local_dir(layout.recommender))["meta"]
        self.index = load_item_index(local_dir(layout.recommender), vectors, meta)
        self.load_s = {"recommender_and_item_index": round(time.perf_counter() - t0, 3)}
        self.text_dirs = [local_dir(layout.index), local_dir(layout.embeddings)]
        self.text = TextIndex.load(*self.text_dirs)
        self.catalog = catalog
        self.new_item_min_similarity = cfg.serve.rules.new_item_min_similarity

    def load_text(self) -> TextIndex:
        """A fresh TextIndex from the committed directories (serve.reload runs it in a thread)."""
        return TextIndex.load(*self.text_dirs)

    def use_text(self, text: TextIndex) -> None:
        self.text = text  # one assignment: requests in flight keep the bundle they read

    def history_of(
        self, user_id: str | None, recent_items: list[str], merged: list[int] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """(known item ids in time order, recent product ids the recommender does not know).
        `merged`: the user's history with their database events, from the ingress (serve.live)."""
        if merged is not None:
            history = np.asarray(merged, np.int64)
        else:
            history = (
                self.catalog.user_history.get(user_id, np.zeros(0, np.int64)) if user_id else np.zeros(0, np.int64)
            )
        extra, unknown = [], []
        for pid in recent_items:
            idx = self.catalog.item_idx(pid)
            (extra if idx is not None else unknown).append(idx if idx is not None else pid)
        if extra:
            history = np.concatenate([history, np.asarray(extra, dtype=np.int64)])
        return history, unknown

    def retrieve_batch(
        self, histories: list[np.ndarray], unknown: list[list[str]], k: int, hidden: Collection[str] = ()
    ) -> list[Candidates]:
        """`hidden`: products no answer may show (deleted in the online database, serve.live)."""
        import torch

        from ml.sasrec import pad_left

        out: list[Candidates] = [Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in histories]
        warm = [i for i, h in enumerate(histories) if len(h)]
        if warm:
            with torch.inference_mode():
                q = self.model.predict(
                    torch.from_numpy(pad_left([histories[i] for i in warm], self.model_cfg.max_len))
                ).numpy()
            # History items stay candidates, as in the ranker's training (train/ranker.py):
            # the ranker and the business rules decide whether a seen item comes back. Deleted
            # products are left out here, with over-fetch, so k candidates remain.
            scores, rows = self.index.search(q, min(k, self.index.ntotal), self._excluded(hidden))
            for j, i in enumerate(warm):
                keep = rows[j] >= 0
                out[i] = Candidates((rows[j][keep] + 1).astype(np.int64), scores[j][keep])
        for i, h in enumerate(histories):
            out[i].new_items = self._text_neighbours(h, unknown[i], hidden=hidden)
            out[i].cold_start = not len(h) and not out[i].new_items
        return out

    def _excluded(self, hidden: Collection[str]) -> np.ndarray | None:
        """Index rows of `hidden` products the recommender knows (row = item id - 1), as a mask."""
        rows = [
            i - 1
            for i in (self.catalog.item_idx(pid) for pid in hidden)
            if i is not None and 0 < i <= self.index.ntotal
        ]
        if not rows:
            return None
        mask = np.zeros(self.index.ntotal, bool)
        mask[rows] = True
        return mask

    def _text_neighbours(
        self, history: np.ndarray, unknown: list[str], k: int = 20, hidden: Collection[str] = ()
    ) -> list[tuple[str, float, str]]:
        """Products the recommender has no vector for (new items), close in text to the user's
        recent items; also the whole path for a session made only of new items."""
        text = self.text  # one read: a reload swapping it mid-request cannot mix two versions
        anchors = [self.catalog.by_item_idx.get(int(i)) for i in history[::-1][:5]] + unknown[::-1][:5]
        rows = [text.row[a] for a in anchors if a in text.row]
        if not rows:
            return []
        centroid = text.vectors[rows].mean(axis=0)
        centroid /= np.linalg.norm(centroid) + 1e-9
        sims, found = text.index.search(centroid[None, :], k + len(rows))
        seen = set(anchors)
        out = []
        for sim, row in zip(sims[0], found[0]):
            pid = text.pids[row] if row >= 0 else None
            # None: a row the refresh retired; not in `row`: indexed before its vector was committed
            if pid is None or pid in seen or pid in hidden or pid not in text.row:
                continue
            product = self.catalog.products.get(pid)
            session_only = not len(history)  # nothing for the recommender: text is the path
            if product and (product.item_idx is None or session_only) and sim >= self.new_item_min_similarity:
                anchor_vecs = text.vectors[rows] @ text.vectors[text.row[pid]]
                out.append((pid, float(sim), [a for a in anchors if a in text.row][int(np.argmax(anchor_vecs))]))
        return out


class RankerCore:
    def __init__(self, cfg, catalog: Catalog):
        import torch

        from core.layout import ArtifactLayout
        from ml.ranker import load_ranker

        self.mlp, self.featurizer, (self.mean, self.std) = load_ranker(Path(ArtifactLayout(cfg.artifacts.root).ranker))
        torch.set_num_threads(1)
        self.catalog = catalog
        self.rules = cfg.serve.rules

    def rank(
        self,
        user_id: str | None,
        history: np.ndarray,
        cands: Candidates,
        k: int,
        filters: dict,
        hidden: Collection[str] = (),
    ) -> list[Scored]:
        """`hidden`: products deleted in the online database since the shards (serve.live)."""
        import torch

        allowed = self._allowed(user_id, history, filters, hidden)
        if len(cands.item_ids):
            feats = self.featurizer.features(history, cands.item_ids, cands.scores)
            with torch.no_grad():
                scores = self.mlp(torch.from_numpy((feats - self.mean) / self.std)).squeeze(-1).numpy()
            order = np.argsort(-scores, kind="stable")
            pool = [
                (
                    self.catalog.by_item_idx.get(int(cands.item_ids[j])),
                    float(scores[j]),
                    feats[j],
                    int(cands.item_ids[j]),
                )
                for j in order
            ]
            pool = [p for p in pool if p[0] is not None]
        else:
            pool = []
        per_category: dict[str | None, int] = {}
        cap = max(1, math.ceil(self.rules.max_per_category * k))
        chosen = []
        for pid, score, feat, idx in pool:
            product = self.catalog.products[pid]
            if not allowed(product) or per_category.get(product.category, 0) >= cap:
                continue
            per_category[product.category] = per_category.get(product.category, 0) + 1
            chosen.append((pid, score, feat, idx))
            if len(chosen) == k:
                break
        evidence = self._evidence(history, [c[3] for c in chosen], [c[2] for c in chosen]) if chosen else []
        picked = [Scored(pid, score, ev) for (pid, score, _, _), ev in zip(chosen, evidence, strict=True)]
        # New items reached through text: one slot in five at most, after the first results.
        floor = min((s.score for s in picked), default=0.0)
        taken = {s.product_id for s in picked}
        slots = max(1, k // 5) if picked else k
        products = self.catalog.products
        new = [
            n
            for n in cands.new_items
            # not in this replica's catalog yet: the retriever's poll of the database ran first
            if n[0] in products
            and n[0] not in taken
            and allowed(products[n[0]])
            and per_category.get(products[n[0]].category, 0) < cap
        ][:slots]
        for offset, (pid, sim, anchor) in enumerate(new):
            item = Scored(
                pid,
                floor - 1e-3 * (offset + 1),
                [
                    {
                        "type": "similar_new_item" if self.catalog.products[pid].item_idx is None else "similar_item",
                        "product_id": anchor,
                        "title": self.catalog.products[anchor].title if anchor in self.catalog.products else None,
                        "similarity": round(sim, 3),
                    }
                ],
            )
            picked.insert(min(len(picked), 2 + 3 * offset), item) if picked else picked.append(item)
        picked = picked[:k]
        for i in range(1, len(picked)):  # scores follow the final order (new items were slotted in)
            picked[i].score = min(picked[i].score, picked[i - 1].score - 1e-6)
        if len(picked) < k:  # cold start, or rules left too few: fill with popular items
            for rank, pid in enumerate(self.catalog.popular):
                if len(picked) == k:
                    break
                product = self.catalog.products[pid]
                if pid in taken or any(s.product_id == pid for s in picked) or not allowed(product):
                    continue
                picked.append(Scored(pid, -1.0 - rank * 1e-4, [{"type": "popular", "category": product.category}]))
        return picked

    def _evidence(self, history: np.ndarray, item_idx: list[int], feats: list[np.ndarray]) -> list[list[dict]]:
        return self.featurizer.evidence_many(history, np.asarray(item_idx, np.int64), np.stack(feats))

    def _allowed(self, user_id: str | None, history: np.ndarray, filters: dict, hidden: Collection[str] = ()):
        return allowed_filter(self.catalog, self.rules, user_id, history, filters, hidden)


def allowed_filter(
    catalog: Catalog, rules, user_id: str | None, history: np.ndarray, filters: dict, hidden: Collection[str] = ()
):
    """The business rules and request filters as a predicate on products: what the ranker keeps,
    and what the ingress keeps when it serves without the ranker (unranked retrieval, popular)."""
    purchased = catalog.user_purchases.get(user_id, set()) if (user_id and rules.exclude_purchased) else set()
    seen = {catalog.by_item_idx.get(int(i)) for i in history} if rules.exclude_seen else set()
    seen |= set(filters.get("exclude") or ())  # the session's own items, the page's product
    in_stock_only = filters.get("in_stock_only")
    in_stock_only = rules.in_stock_only if in_stock_only is None else in_stock_only
    category, brand = filters.get("category"), filters.get("brand")
    lo, hi = filters.get("min_price"), filters.get("max_price")

    def allowed(p: Product) -> bool:
        if p.product_id in purchased or p.product_id in seen or p.product_id in hidden:
            return False
        if in_stock_only and p.in_stock is False:
            return False
        if category and not (p.category or "").startswith(category):
            return False
        if brand and p.brand != brand:
            return False
        if lo is not None and (p.price is None or p.price < lo):
            return False
        if hi is not None and (p.price is None or p.price > hi):
            return False
        return True

    return allowed


def template_reason(product: Product, evidence: list[dict]) -> str:
    """A one-sentence reason to "you" built only from the evidence (`ml.reasons.template_reason`):
    grounded and faithful by construction; the corpus and the batch job use the same sentences."""
    from ml.reasons import template_reason as from_evidence

    return from_evidence(evidence, product.title)
