"""Benchmark the SASRec recipe on a public sequence dataset against published numbers.

    .venv/bin/python bench/recommender_public.py                      # Amazon Toys (S3-Rec preprocessing)
    .venv/bin/python bench/recommender_public.py --epochs 200 --set train.recommender.dropout=0.5
    .venv/bin/python bench/recommender_public.py --epochs 40 --set train.recommender.dropout=0.5 --set train.recommender.item_attributes=true
    ... --keep DIR        # keep the split, the model and its report (metrics.json, curves.png)

Reads a "user item item ..." file (one user per line, items in time order, 1-based ids), as
the S3-Rec authors publish it, applies the SASRec leave-one-out split (last item test,
second-to-last validation), trains with the same Ray Train recipe as production and prints
JSON: our metrics under both protocols (sampled with 99 negatives, as in S3-Rec's tables;
full ranking), the baselines, and the published SASRec / S3-Rec figures. The data is read
from the shared folder, never copied into the repository. With
`train.recommender.item_attributes=true` the item attributes S3-Rec uses (brand, categories:
`<name>_item2attributes.json` beside the data file, {"item id": [attribute ids]}) are given
to the model as attribute embeddings. The output also carries the validation curve (full
NDCG@10, sampled HR@10 and MRR per epoch) and which validation metric selected the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import load_config  # noqa: E402
from train.evaluate import LooData  # noqa: E402

PUBLISHED = {
    "amazon-toys-s3rec": {
        "SASRec": {"sampled_99": {"hr@10": 0.4663, "ndcg@10": 0.3136}, "full": {"hr@10": 0.0675, "ndcg@10": 0.0374}},
        "S3-Rec": {"sampled_99": {"hr@10": 0.5530, "ndcg@10": 0.3629}, "full": {"hr@10": 0.0700, "ndcg@10": 0.0376}},
    }
}


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", default=str(repo.parent / "shared" / "data" / "amazon-toys-s3rec" / "Toys_and_Games.txt")
    )
    parser.add_argument(
        "--attributes",
        default=None,
        help="item -> attribute ids JSON (default: <data stem>_item2attributes.json beside --data)",
    )
    parser.add_argument("--name", default="amazon-toys-s3rec")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument(
        "--keep", default=None, help="write the split, model and reports here instead of a temporary folder"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. train.recommender.dropout=0.5",
    )
    args = parser.parse_args()

    lines = Path(args.data).read_text().split("\n")
    sequences = [[int(x) for x in line.split()[1:]] for line in lines if line.strip()]
    loo = LooData.from_sequences(sequences)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        (root / "data" / "splits").mkdir(parents=True, exist_ok=True)
        loo.write_parquet(root / "data" / "splits" / "loo.parquet")
        cfg = load_config(
            overrides=[
                f"artifacts.root={root}",
                f"train.recommender.epochs={args.epochs}",
                "train.recommender.patience=10",
                "train.evaluation.num_negatives=99",
                *args.overrides,
            ]
        )
        from train.recommender import train_recommender

        attributes = None
        if cfg.train.recommender.item_attributes:
            path = Path(args.attributes or Path(args.data).with_name(Path(args.data).stem + "_item2attributes.json"))
            attributes = {int(k): v for k, v in json.loads(path.read_text()).items()}
        start = time.perf_counter()
        meta = train_recommender(
            cfg, num_items=loo.num_items, item_attributes=attributes, run_name=f"bench-{args.name}"
        )
        seconds = time.perf_counter() - start
        curves = json.loads((root / "models" / "recommender" / "metrics.json").read_text())["curves"]
    print(
        json.dumps(
            {
                "dataset": args.name,
                "users": len(sequences),
                "items": loo.num_items,
                "interactions": int(sum(len(s) for s in sequences)),
                "train_seconds": round(seconds, 1),
                "best_epoch": meta["best_epoch"],
                "hyperparameters": meta["hyperparameters"],
                "ours": meta["test"],
                "selected_on": meta["selected_on"],
                # validation per epoch: [epoch, full NDCG@10, sampled HR@10, sampled MRR]
                "valid_curve": [
                    [
                        c["epoch"],
                        round(c["valid_ndcg@10"], 4),
                        round(c["valid_sampled_hr@10"], 4),
                        round(c["valid_sampled_mrr"], 4),
                    ]
                    for c in curves
                ],
                "published": PUBLISHED.get(args.name, {}),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
