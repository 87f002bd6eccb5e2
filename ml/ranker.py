"""The ranker network and its export: what training fits and serving loads.

    from ml.ranker import load_ranker, ranker_mlp

`train.ranker` trains `ranker_mlp` on the recommender's candidates and exports it with the
item table its features need; `load_ranker` reads that export back (serving, tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.manifest import verify_dir
from ml.ranker_features import Featurizer, ItemTable


def ranker_mlp(num_features: int, hidden: int):
    """Score = retrieval score + a learned correction from all features.

    The correction's last layer starts at zero, so an untrained ranker reproduces the
    retrieval order exactly, and training moves away from it only where the validation lists
    say so: with a few hundred training lists a ranker must not start from random.
    """
    import torch
    from torch import nn

    class ResidualRanker(nn.Module):
        def __init__(self):
            super().__init__()
            self.correction = nn.Sequential(
                nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
            nn.init.zeros_(self.correction[-1].weight)
            nn.init.zeros_(self.correction[-1].bias)
            self.retrieval_weight = nn.Parameter(torch.ones(1))

        def forward(self, x):  # x: (..., F) normalized; feature 0 is the retrieval score
            return self.retrieval_weight * x[..., :1] + self.correction(x)

    return ResidualRanker()


def unwrap(model):
    """The module inside a DDP wrapper, or the model itself."""
    return model.module if hasattr(model, "module") else model


def load_ranker(path: str | Path):
    """(mlp, featurizer, normalization) from an exported ranker directory (serving uses this)."""
    import torch

    path = Path(path)
    verify_dir(path)
    spec = json.loads((path / "ranker.json").read_text())
    arrays = np.load(path / "items.npz")
    names = json.loads((path / "items.json").read_text())
    text = arrays["text"] if arrays["text"].size else None
    num_items = len(arrays["category"]) - 1
    items = ItemTable(
        num_items,
        arrays["category"],
        arrays["brand"],
        arrays["log_price"],
        arrays["popularity"],
        arrays["recency"],
        text,
        names["product_ids"],
        names["titles"],
        names["categories"],
        names["brands"],
    )
    featurizer = Featurizer(items, sp.load_npz(path / "cooccurrence.npz"), recent=spec["recent_items"])
    mlp = ranker_mlp(len(spec["features"]), spec["hidden"])
    mlp.load_state_dict(torch.load(path / "model.pt", map_location="cpu"))
    mlp.eval()
    return mlp, featurizer, (np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32))
