"""Ranking metrics and the two evaluation protocols, exactly as the papers define them.

- **sampled** (SASRec, Kang & McAuley 2018; also S3-Rec's reported numbers): the held-out
  item is ranked against `num_negatives` items drawn uniformly from the items the user never
  interacted with (100 in SASRec; S3-Rec's tables use 99).
- **full** (RecBole-style): the held-out item is ranked against every item, with the user's
  other interacted items excluded from the ranking.

Ranks are 0-based. Ties are broken at random (seeded), so a constant or popularity scorer is
not credited with optimistic ranks: HR@k = P(rank < k), NDCG@k = 1/log2(rank + 2) if
rank < k, MRR = mean 1/(rank + 1) over the full list.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to evaluate: the split has no users with a held-out item")
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def rank_of_target(scores: np.ndarray, target_col: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-based rank of `scores[i, target_col[i]]` within row i; -inf entries never outrank.

    Ties with the target are broken uniformly at random.
    """
    rows = np.arange(len(scores))
    target = scores[rows, target_col][:, None]
    greater = (scores > target).sum(axis=1)
    tie_keys = rng.random(scores.shape)
    equal = (scores == target) & (tie_keys < tie_keys[rows, target_col][:, None])
    return greater + equal.sum(axis=1)


def sample_negatives(num_items: int, seen: list[set[int]], num_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """For each user, `num_negatives` distinct items in 1..num_items they never interacted with."""
    out = np.empty((len(seen), num_negatives), dtype=np.int64)
    for i, items in enumerate(seen):
        if num_items - len(items) < num_negatives:
            raise ValueError(f"user {i} has interacted with too many items to draw {num_negatives} negatives")
        chosen: list[int] = []
        picked: set[int] = set()
        while len(chosen) < num_negatives:
            for c in rng.integers(1, num_items + 1, size=2 * num_negatives):
                c = int(c)
                if c not in items and c not in picked:
                    picked.add(c)
                    chosen.append(c)
                    if len(chosen) == num_negatives:
                        break
        out[i] = chosen
    return out


def full_ranking_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: list[Iterable[int]], rng: np.random.Generator
) -> np.ndarray:
    """`scores`: (users, num_items + 1), column = item id (0 = padding)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[:, 0] = -np.inf
    for i, items in enumerate(exclude):
        idx = [j for j in items if j != targets[i]]
        scores[i, idx] = -np.inf
    return rank_of_target(scores, targets, rng)


def sampled_ranks(
    scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Rank of each target among [target] + its negatives, using the full score rows."""
    candidates = np.concatenate([targets[:, None], negatives], axis=1)
    cand_scores = np.take_along_axis(scores, candidates, axis=1)
    return rank_of_target(cand_scores, np.zeros(len(targets), dtype=np.int64), rng)
