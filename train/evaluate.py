"""Evaluate the recommender and its baselines under both published protocols.

    shopgraph train evaluate --config configs/local.yaml
    python -m train.evaluate --config configs/local.yaml      # the recommender part alone

`shopgraph train evaluate` (and `python -m cluster.evaluate`, the evaluate stage) is the whole
evaluation harness (recommender, ranker, generator, serving latency, one report); this module is
its recommender part, and the recommender recipe evaluates with it at the end of training.

Protocols (see `ml.metrics`): **sampled** (the held-out item vs N negatives the user never
touched, SASRec/S3-Rec) and **full** (vs all items, the user's history excluded, RecBole).
Baselines computed in the same run on the same users: popularity and item-to-item
co-occurrence. Output of `write_report`: `metrics.json` and `report.html` (+ `curves.png`).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.parquet as pq

from ml.metrics import full_ranking_ranks, metrics_from_ranks, sample_negatives, sampled_ranks
from ml.sasrec import pad_left


@dataclass
class LooData:
    """Leave-one-out split in memory (the `LOO_SPLIT` contract)."""

    user_idx: np.ndarray
    train_items: list[np.ndarray]
    valid_item: np.ndarray  # 0 where the user has no held-out item
    test_item: np.ndarray
    num_items: int

    @classmethod
    def from_sequences(cls, sequences: list[list[int]], num_items: int | None = None) -> LooData:
        """The SASRec split of time-ordered item lists (1-based ids): last = test, second-to-last = valid."""
        train, valid, test = [], [], []
        for seq in sequences:
            if len(seq) >= 3:
                train.append(np.asarray(seq[:-2], dtype=np.int64))
                valid.append(seq[-2])
                test.append(seq[-1])
            else:
                train.append(np.asarray(seq, dtype=np.int64))
                valid.append(0)
                test.append(0)
        n = num_items or max((max(s) for s in sequences if s), default=0)
        return cls(np.arange(1, len(sequences) + 1), train, np.asarray(valid), np.asarray(test), int(n))

    def write_parquet(self, path: str | Path) -> None:
        """The split as a `LOO_SPLIT` file (what `from_parquet` and the training recipe read)."""
        import pyarrow as pa

        from core.schemas import LOO_SPLIT

        table = pa.table(
            {
                "user_idx": self.user_idx,
                "train_items": [t.tolist() for t in self.train_items],
                "valid_item": self.valid_item,
                "test_item": self.test_item,
            },
            schema=LOO_SPLIT,
        )
        pq.write_table(table, str(path))

    @classmethod
    def from_parquet(cls, path: str | Path, num_items: int) -> LooData:
        table = pq.read_table(str(path))
        valid = table.column("valid_item").to_numpy(zero_copy_only=False)
        test = table.column("test_item").to_numpy(zero_copy_only=False)
        return cls(
            table.column("user_idx").to_numpy(),
            [np.asarray(x, dtype=np.int64) for x in table.column("train_items").to_pylist()],
            np.nan_to_num(valid.astype(np.float64), nan=0).astype(np.int64),
            np.nan_to_num(test.astype(np.float64), nan=0).astype(np.int64),
            num_items,
        )

    def stage(self, stage: str) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(rows, histories, targets) of users with a held-out item for `stage` (valid | test).

        The test history includes the validation item, as in the paper.
        """
        if stage == "valid":
            rows = np.nonzero(self.valid_item > 0)[0]
            return rows, [self.train_items[i] for i in rows], self.valid_item[rows]
        if stage == "test":
            rows = np.nonzero(self.test_item > 0)[0]
            hist = [np.append(self.train_items[i], self.valid_item[i]) for i in rows]
            return rows, hist, self.test_item[rows]
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")

    def interactions(self, include_valid: bool) -> list[np.ndarray]:
        if not include_valid:
            return self.train_items
        return [np.append(t, v) if v > 0 else t for t, v in zip(self.train_items, self.valid_item)]


class Scorer(Protocol):
    name: str

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        """(users, num_items + 1) scores; column 0 is padding."""


def item_counts(interactions: list[np.ndarray], num_items: int) -> np.ndarray:
    """How often each item id occurs in `interactions`; index = item id (0 = padding)."""
    return np.bincount(np.concatenate(interactions) if interactions else np.zeros(0, np.int64), minlength=num_items + 1)


class PopularityScorer:
    name = "popularity"

    def __init__(self, interactions: list[np.ndarray], num_items: int):
        self.counts = item_counts(interactions, num_items).astype(np.float64)

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.tile(self.counts, (len(histories), 1))


class CooccurrenceScorer:
    """Item-to-item: items that followed the user's recent items in other users' sequences.

    Counts ordered pairs (a -> b) within `window` steps; a user's score for b sums the rows of
    their last `recent` items with weights 1, 1/2, 1/3, ... (most recent first). Popularity
    (scaled far below one co-occurrence) breaks ties so cold histories still rank sensibly.
    """

    name = "cooccurrence"

    def __init__(self, interactions: list[np.ndarray], num_items: int, window: int = 3, recent: int = 3):
        from ml.ranker_features import cooccurrence_matrix

        self.matrix = cooccurrence_matrix(interactions, num_items, window=window)
        self.pop = PopularityScorer(interactions, num_items).counts
        self.recent = recent

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        out = np.tile(self.pop / (self.pop.max() + 1.0) * 1e-3, (len(histories), 1))
        for i, h in enumerate(histories):
            for j, item in enumerate(h[::-1][: self.recent]):
                out[i] += self.matrix[int(item)].toarray().ravel() / (j + 1)
        return out


class ModelScorer:
    name = "sasrec"

    def __init__(self, model, max_len: int, batch_size: int = 512):
        self.model = model
        self.max_len = max_len
        self.batch_size = batch_size

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        import torch

        self.model.eval()
        inputs = pad_left(histories, self.max_len)
        with torch.no_grad():
            return self.model.score_all(torch.from_numpy(inputs)).float().numpy()


def evaluate_scorer(
    scorer: Scorer,
    loo: LooData,
    *,
    stage: str = "test",
    ks: tuple[int, ...] = (5, 10, 20),
    num_negatives: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    max_users: int | None = None,
) -> dict[str, dict[str, float]]:
    """Both protocols for one scorer. Same users, negatives and tie-breaks for every scorer."""
    rows, histories, targets = loo.stage(stage)
    if max_users is not None and len(rows) > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_users, replace=False))
        rows, histories, targets = rows[keep], [histories[i] for i in keep], targets[keep]
    seen = [set(h.tolist()) | {int(t)} for h, t in zip(histories, targets)]
    if stage == "valid":  # the test item is the user's too: never a negative
        seen = [s | {int(loo.test_item[r])} for s, r in zip(seen, rows)]
    negatives = sample_negatives(loo.num_items, seen, num_negatives, np.random.default_rng(seed))
    full, sampled = [], []
    tie_rng_full, tie_rng_sampled = np.random.default_rng(seed + 1), np.random.default_rng(seed + 2)
    for start in range(0, len(rows), batch_size):
        end = start + batch_size
        scores = scorer.scores(histories[start:end])
        full.append(
            full_ranking_ranks(
                scores, targets[start:end], [set(h.tolist()) for h in histories[start:end]], tie_rng_full
            )
        )
        sampled.append(sampled_ranks(scores, targets[start:end], negatives[start:end], tie_rng_sampled))
    return {
        "full": metrics_from_ranks(np.concatenate(full), ks) | {"users": int(len(rows))},
        f"sampled_{num_negatives}": metrics_from_ranks(np.concatenate(sampled), ks) | {"users": int(len(rows))},
    }


def evaluate_with_baselines(model_scorer: Scorer | None, loo: LooData, **kwargs) -> dict[str, dict]:
    train_like = loo.interactions(include_valid=kwargs.get("stage", "test") == "test")
    scorers: list[Scorer] = [PopularityScorer(train_like, loo.num_items), CooccurrenceScorer(train_like, loo.num_items)]
    if model_scorer is not None:
        scorers.insert(0, model_scorer)
    return {s.name: evaluate_scorer(s, loo, **kwargs) for s in scorers}


def write_report(
    out_dir: Path, results: dict, curves: list[dict] | None = None, title: str = "shopgraph recommender"
) -> None:
    """metrics.json, curves.png (training loss, validation NDCG@10 full and HR@10 sampled) and report.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"results": results, "curves": curves or []}, indent=2))
    img = ""
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax1 = plt.subplots(figsize=(6, 3.2))
        epochs = [c["epoch"] for c in curves]
        ax1.plot(epochs, [c.get("train_loss") for c in curves], color="tab:blue", label="train loss")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("train loss", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(epochs, [c.get("valid_ndcg@10") for c in curves], color="tab:orange", label="valid NDCG@10 (full)")
        if any(c.get("valid_sampled_hr@10") is not None for c in curves):
            ax2.plot(
                epochs, [c.get("valid_sampled_hr@10") for c in curves], color="tab:green", label="valid HR@10 (sampled)"
            )
        ax2.set_ylabel("validation metric")
        ax2.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        fig.savefig(out_dir / "curves.png", dpi=110)
        plt.close(fig)
        img = '<img src="curves.png" alt="training curves">'
    rows = []
    for protocol in sorted({p for r in results.values() for p in r}):
        for name, r in results.items():
            if protocol not in r:
                continue
            m = r[protocol]
            cells = "".join(f"<td>{m[k]:.4f}</td>" for k in sorted(m) if k != "users")
            rows.append(
                f"<tr><td>{html.escape(protocol)}</td><td>{html.escape(name)}</td>{cells}<td>{m['users']}</td></tr>"
            )
    first = next(iter(next(iter(results.values())).values()))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in sorted(first) if k != "users")
    (out_dir / "report.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1>{img}<table border=1 cellpadding=4>"
        f"<tr><th>protocol</th><th>model</th>{head}<th>users</th></tr>{''.join(rows)}</table>"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m train.evaluate`: the exported recommender and its baselines, both protocols."""
    from core.cli import stage_main
    from train.recommender import evaluate_exported

    return stage_main(
        argv,
        lambda cfg: evaluate_exported(cfg),
        prog="python -m train.evaluate",
        description=__doc__,
        hint="; train one first with `shopgraph train recommender`",
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
