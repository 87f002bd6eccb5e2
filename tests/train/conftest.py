"""Shared training fixtures: one tiny split with planted sequential structure, and one SASRec
trained on it (with an injected worker failure), reused by the recommender and ranker tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from core.schemas import LOO_SPLIT

NUM_ITEMS = 120


def _write_split(root: Path, users: int = 400, seed: int = 0) -> None:
    """Users walk item chains (i -> i+1) with 15% noise: next-item structure a sequence model
    recovers and popularity cannot."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        item, seq = int(rng.integers(1, NUM_ITEMS + 1)), []
        for _ in range(int(rng.integers(6, 16))):
            seq.append(item)
            item = item % NUM_ITEMS + 1 if rng.random() > 0.15 else int(rng.integers(1, NUM_ITEMS + 1))
        seqs.append(seq)
    table = pa.table(
        {
            "user_idx": np.arange(1, users + 1),
            "train_items": [s[:-2] for s in seqs],
            "valid_item": [s[-2] for s in seqs],
            "test_item": [s[-1] for s in seqs],
        },
        schema=LOO_SPLIT,
    )
    (root / "data" / "splits").mkdir(parents=True)
    pq.write_table(table, root / "data" / "splits" / "loo.parquet")
    (root / "data" / "id_maps").mkdir(parents=True)
    pq.write_table(
        pa.table({"product_id": [f"p{i}" for i in range(1, NUM_ITEMS + 1)], "item_idx": np.arange(1, NUM_ITEMS + 1)}),
        root / "data" / "id_maps" / "items.parquet",
    )


def _cfg(root: Path, *extra: str):
    return load_config(
        overrides=[
            f"artifacts.root={root}",
            "train.recommender.epochs=6",
            "train.recommender.hidden=32",
            "train.recommender.batch_size=64",
            "train.recommender.lr=0.005",
            "train.recommender.eval_users=200",
            "train.recommender.patience=10",
            "train.evaluation.num_negatives=50",
            *extra,
        ]
    )


@pytest.fixture(scope="session")
def trained_recommender(tmp_path_factory):
    from train.recommender import train_recommender

    root = tmp_path_factory.mktemp("artifacts")
    _write_split(root)
    meta = train_recommender(_cfg(root), fail_once_at_epoch=2)
    return root, meta
