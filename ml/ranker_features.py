"""Ranker features and the evidence behind each recommendation.

Both the ranker's training (train/ranker.py) and the Serve `Ranker` deployment build features
with `Featurizer`, from the same artifacts, so a feature means the same thing offline and at
request time. Every feature is available at request time: the recommender score of the
candidate, catalog metadata, global popularity, co-occurrence counts and MiniLM text vectors.

Each scored item also carries **evidence**: the facts that made it rank, in a form that a
reason generator can cite without inventing anything ("because you viewed X", "popular in Y",
"same brand as Z").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

FEATURES = (
    "rec_score",  # recommender dot product, centered per user
    "rec_rank",  # retrieval position / K
    "log_popularity",
    "recency_score",  # time-decayed popularity
    "cooccurrence",  # how often the candidate followed the user's recent items, recency-weighted
    "category_affinity",  # share of the user's history in the candidate's category
    "brand_affinity",  # share of the user's history with the candidate's brand
    "text_sim_max",  # best MiniLM cosine to one of the recent history items
    "text_sim_mean",  # cosine to the centroid of the recent history
    "price_distance",  # |log price - mean log price of the history|
    "has_metadata",  # 0 when the catalog lacks category/brand/price for the candidate
    "in_history",  # 1/(1 + steps since the user last touched the candidate), 0 if never
)


@dataclass
class ItemTable:
    """Per-item arrays indexed by dense item id (row 0 = padding)."""

    num_items: int
    category: np.ndarray  # int codes, -1 unknown
    brand: np.ndarray  # int codes, -1 unknown
    log_price: np.ndarray  # nan unknown
    popularity: np.ndarray
    recency: np.ndarray
    text: np.ndarray | None  # (num_items + 1, d) L2-normalized, zeros when unknown
    product_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    category_names: list[str] = field(default_factory=list)
    brand_names: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, num_items: int) -> ItemTable:
        n = num_items + 1
        return cls(num_items, np.full(n, -1), np.full(n, -1), np.full(n, np.nan), np.zeros(n), np.zeros(n), None)


def cooccurrence_matrix(sequences: list[np.ndarray], num_items: int, window: int = 3) -> sp.csr_matrix:
    """Ordered pairs (a -> b) within `window` steps, counted over training sequences."""
    rows, cols = [], []
    for seq in sequences:
        for d in range(1, window + 1):
            if len(seq) > d:
                rows.append(seq[:-d])
                cols.append(seq[d:])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(num_items + 1, num_items + 1))


class Featurizer:
    """Features of (history, candidates) pairs; `recent` history items drive the local ones."""

    def __init__(self, items: ItemTable, cooc: sp.csr_matrix, recent: int = 5):
        self.items = items
        self.cooc = cooc.tocsr()
        if not self.cooc.has_canonical_format:  # sorted, duplicate-free rows: `_cooc_rows` bisects them
            self.cooc = self.cooc.copy()
            self.cooc.sum_duplicates()
        self.recent = recent
        self.log_pop = np.log1p(items.popularity)
        self._popular_floor: float | None = None  # 90th popularity percentile, computed on first use

    def _cooc_rows(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """`self.cooc[rows][:, cols].toarray()`, without scipy's fancy-indexing overhead (it
        dominated the ranker's request time): a bisection per row of the canonical CSR matrix."""
        c = self.cooc
        out = np.zeros((len(rows), len(cols)), dtype=c.dtype)
        for i, r in enumerate(rows):
            lo, hi = c.indptr[r], c.indptr[r + 1]
            if lo == hi:
                continue
            idx = c.indices[lo:hi]
            pos = np.minimum(np.searchsorted(idx, cols), hi - lo - 1)
            hit = idx[pos] == cols
            out[i, hit] = c.data[lo:hi][pos[hit]]
        return out

    def features(self, history: np.ndarray, candidates: np.ndarray, rec_scores: np.ndarray) -> np.ndarray:
        it = self.items
        k = len(candidates)
        out = np.zeros((k, len(FEATURES)), dtype=np.float32)
        out[:, 0] = rec_scores - rec_scores.mean() if k else rec_scores
        out[:, 1] = np.arange(k) / max(k, 1)
        out[:, 2] = self.log_pop[candidates]
        out[:, 3] = it.recency[candidates]
        recent = history[::-1][: self.recent]
        if len(recent):
            weights = 1.0 / np.arange(1, len(recent) + 1)
            rows = self._cooc_rows(recent, candidates)
            out[:, 4] = np.log1p(weights @ rows)
        hist_cat, hist_brand = it.category[history], it.brand[history]
        cand_cat, cand_brand = it.category[candidates], it.brand[candidates]
        if len(history):
            out[:, 5] = np.where(cand_cat >= 0, (hist_cat[None, :] == cand_cat[:, None]).mean(axis=1), 0)
            out[:, 6] = np.where(cand_brand >= 0, (hist_brand[None, :] == cand_brand[:, None]).mean(axis=1), 0)
        if it.text is not None and len(recent):
            cand_vec = it.text[candidates]
            sims = cand_vec @ it.text[recent].T
            out[:, 7] = sims.max(axis=1)
            centroid = it.text[recent].mean(axis=0)
            norm = np.linalg.norm(centroid)
            out[:, 8] = cand_vec @ (centroid / norm) if norm > 0 else 0
        hist_price = it.log_price[history]
        hist_price = hist_price[~np.isnan(hist_price)]
        cand_price = it.log_price[candidates]
        if len(hist_price):
            out[:, 9] = np.where(np.isnan(cand_price), 0, np.abs(cand_price - hist_price.mean()))
        out[:, 10] = (cand_cat >= 0) | (cand_brand >= 0) | ~np.isnan(cand_price)
        if len(history) and k:
            # steps since the last touch = position of the first occurrence in the reversed history
            seen, steps = np.unique(history[::-1], return_index=True)
            pos = np.minimum(np.searchsorted(seen, candidates), len(seen) - 1)
            out[:, 11] = np.where(seen[pos] == candidates, 1.0 / (1 + steps[pos]), 0.0)
        return out

    def evidence(self, history: np.ndarray, candidate: int, feats: np.ndarray) -> list[dict]:
        """Citable facts behind one candidate's rank, strongest first. Never invents: every
        entry names catalog items, categories or brands that exist in the artifacts."""
        return self.evidence_many(history, np.asarray([candidate]), feats[None, :])[0]

    def evidence_many(self, history: np.ndarray, candidates: np.ndarray, feats: np.ndarray) -> list[list[dict]]:
        """`evidence` of several candidates (rows of `feats`): one co-occurrence lookup and one
        text product for all of them, as the ranker needs for the k items it returns."""
        it = self.items
        candidates = np.asarray(candidates, np.int64)
        recent = history[::-1][: self.recent]
        if len(recent) and len(candidates):
            cooc = self._cooc_rows(recent, candidates)  # (recent, candidates)
            sims = it.text[recent] @ it.text[candidates].T if it.text is not None else np.zeros(cooc.shape)
            strength = cooc / (cooc.max(axis=0) + 1e-9) + sims
            anchors = recent[np.argmax(strength, axis=0)]
            cooc_max, sims_max = cooc.max(axis=0), sims.max(axis=0)
        if self._popular_floor is None:
            self._popular_floor = np.quantile(it.popularity[1:], 0.9)
        brand_idx, cat_idx = FEATURES.index("brand_affinity"), FEATURES.index("category_affinity")
        newest_first = history[::-1]
        out: list[list[dict]] = []
        for j, candidate in enumerate(candidates.tolist()):
            ev: list[dict] = []
            if len(recent) and (cooc_max[j] > 0 or sims_max[j] > 0.5):
                anchor = int(anchors[j])
                ev.append(
                    {
                        "type": "because_you_interacted",
                        "product_id": self._pid(anchor),
                        "title": self._title(anchor),
                        "detail": "often bought next" if cooc_max[j] > 0 else "similar product",
                    }
                )
            cat, brand = int(it.category[candidate]), int(it.brand[candidate])
            if brand >= 0 and feats[j, brand_idx] > 0:
                latest = int(newest_first[it.brand[newest_first] == brand][0])  # the most recent item of that brand
                ev.append(
                    {
                        "type": "same_brand",
                        "brand": self._name(it.brand_names, brand),
                        "product_id": self._pid(latest),
                        "title": self._title(latest),
                    }
                )
            share = float(feats[j, cat_idx])
            if cat >= 0 and share >= 0.3:
                ev.append(
                    {
                        "type": "favourite_category",
                        "category": self._name(it.category_names, cat),
                        "share": round(share, 2),
                    }
                )
            if it.popularity[candidate] >= self._popular_floor:
                ev.append({"type": "popular", "category": self._name(it.category_names, cat) if cat >= 0 else None})
            out.append(ev)
        return out

    def _pid(self, idx: int) -> str:
        return self.items.product_ids[idx] if self.items.product_ids else str(idx)

    def _title(self, idx: int) -> str | None:
        return self.items.titles[idx] if self.items.titles else None

    @staticmethod
    def _name(names: list[str], code: int) -> str | None:
        return names[code] if 0 <= code < len(names) else None
