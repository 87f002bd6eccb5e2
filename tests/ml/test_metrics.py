"""Protocol correctness on tiny hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.metrics import full_ranking_ranks, metrics_from_ranks, rank_of_target, sample_negatives, sampled_ranks


def test_metrics_from_known_ranks():
    # ranks 0, 1, 4, 30 (0-based)
    m = metrics_from_ranks(np.array([0, 1, 4, 30]), ks=(1, 5, 10))
    assert m["hr@1"] == 0.25
    assert m["hr@5"] == 0.75
    assert m["hr@10"] == 0.75
    expected_ndcg5 = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(6)) / 4
    assert m["ndcg@5"] == pytest.approx(expected_ndcg5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 31) / 4)


def test_full_ranking_excludes_history_but_not_the_target():
    rng = np.random.default_rng(0)
    # items 1..5; user history {2, 3}; target 4
    scores = np.array([[9.0, 0.1, 0.9, 0.8, 0.5, 0.2]])  # column 0 is padding, never ranked
    ranks = full_ranking_ranks(scores, np.array([4]), [{2, 3, 4}], rng)
    # remaining competitors: item 1 (0.1), item 5 (0.2) -> target 0.5 is first
    assert ranks.tolist() == [0]
    ranks = full_ranking_ranks(scores, np.array([4]), [set()], rng)
    assert ranks.tolist() == [2]  # items 2 and 3 outrank it when not excluded


def test_sampled_protocol_ranks_against_negatives_only():
    rng = np.random.default_rng(0)
    scores = np.array([[0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    ranks = sampled_ranks(scores, np.array([3]), np.array([[1, 5]]), rng)
    assert ranks.tolist() == [1]  # only item 1 (5.0) beats 3.0


def test_ties_are_broken_at_random_not_optimistically():
    rng = np.random.default_rng(0)
    scores = np.zeros((4000, 11))
    ranks = rank_of_target(scores, np.full(4000, 3), rng)
    assert 4.5 < ranks.mean() < 5.5  # uniform over 0..10


def test_negatives_avoid_the_users_items_and_are_distinct():
    rng = np.random.default_rng(1)
    seen = [{1, 2, 3}, set(range(1, 15))]
    neg = sample_negatives(20, seen, 5, rng)
    for row, items in zip(neg, seen):
        assert len(set(row)) == 5 and not set(row) & items
        assert all(1 <= x <= 20 for x in row)
    with pytest.raises(ValueError, match="too many items"):
        sample_negatives(20, [set(range(1, 19))], 5, rng)


def test_empty_ranks_fail_clearly():
    with pytest.raises(ValueError, match="no users"):
        metrics_from_ranks(np.array([]), ks=(10,))
