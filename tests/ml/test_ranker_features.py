"""Evidence behind ranked items (ml.ranker_features): computed for all returned items at once, it
is what each item gets on its own, and it cites the history item that led to the candidate."""

from __future__ import annotations

import numpy as np

from ml.ranker_features import Featurizer, ItemTable, cooccurrence_matrix

N = 40


def _featurizer() -> Featurizer:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(N + 1, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    items = ItemTable(
        N,
        category=np.arange(N + 1) % 4,
        brand=np.where(np.arange(N + 1) % 5 == 0, -1, np.arange(N + 1) % 3),
        log_price=np.log(np.arange(N + 1) + 2.0),
        popularity=np.arange(N + 1, dtype=float),
        recency=np.zeros(N + 1),
        text=text,
        product_ids=[f"p{i}" for i in range(N + 1)],
        titles=[f"Item {i}" for i in range(N + 1)],
        category_names=["Toys", "Books", "Garden", "Kitchen"],
        brand_names=["Brio", "Lego", "Tefal"],
    )
    # planted chains: 8 -> 9 and 3 -> 20, seen many times
    seqs = [np.array([8, 9])] * 20 + [np.array([3, 20])] * 20 + [rng.integers(1, N + 1, 6) for _ in range(50)]
    return Featurizer(items, cooccurrence_matrix(seqs, N))


def test_evidence_of_many_items_is_each_items_own_and_cites_the_item_behind_it():
    f = _featurizer()
    history = np.array([3, 5, 8])
    candidates = np.array([9, 20, 31, 40, 12])
    feats = f.features(history, candidates, np.linspace(1, 0, len(candidates)).astype(np.float32))
    together = f.evidence_many(history, candidates, feats)
    alone = [f.evidence(history, int(c), feats[j]) for j, c in enumerate(candidates)]
    assert together == alone
    assert together[0][0] == {"type": "because_you_interacted", "product_id": "p8", "title": "Item 8",
                              "detail": "often bought next"}  # fmt: skip
    assert together[1][0]["product_id"] == "p3"
    assert {"type": "popular", "category": "Toys"} in together[3]  # item 40: the most popular, category 0


def test_evidence_without_history_or_candidates():
    f = _featurizer()
    feats = f.features(np.zeros(0, np.int64), np.array([40]), np.array([1.0], np.float32))
    assert f.evidence_many(np.zeros(0, np.int64), np.array([40]), feats) == [[{"type": "popular", "category": "Toys"}]]
    assert f.evidence_many(np.array([3]), np.zeros(0, np.int64), np.zeros((0, feats.shape[1]), np.float32)) == []
