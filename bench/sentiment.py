"""Review sentiment: the model trained here against a maintained baseline, per language, and
across product categories it did not train on. Prints one JSON object.

    PYTHONPATH=. .venv/bin/python bench/sentiment.py [--data ../shared/data/reviews-dev] [--models-dir models]

Data (labelled, real e-commerce reviews; read from the shared data folder, never committed):
- Chinese: `online_shopping_10_cats*.csv` (cat, label, review), ten product categories. A seeded
  stratified 80/20 split; then leave-one-category-out: for each category, train on the other
  nine and test on it (the "category it did not train on" figure).
- English: `amazon_cells_labelled*.txt` (sentence TAB label): 5-fold stratified cross-validation
  (a few hundred sentences: one 20% split would swing by several points).
Baseline: VADER (`vaderSentiment`, a maintained lexicon-and-rules analyzer) on exactly the same
English test sentences, compound >= 0.05 = positive (its authors' threshold). VADER has no
Chinese lexicon, so the Chinese rows have no baseline ("n/a", not a made-up number).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _encoder(models_dir: str | None):
    from ml.encoder import TextEncoder, prepare_encoder

    return TextEncoder(prepare_encoder(models_dir or REPO / "models")[0])


def chinese(reviews, seed: int, folds_by_category: bool) -> dict:
    from sklearn.model_selection import train_test_split

    from ml.sentiment import SentimentModel, scores

    texts = [r.text for r in reviews]
    labels = np.asarray([r.label for r in reviews])
    cats = np.asarray([r.category or "?" for r in reviews])
    tr, te = train_test_split(
        np.arange(len(texts)), test_size=0.2, random_state=seed, stratify=[f"{c}{y}" for c, y in zip(cats, labels)]
    )
    started = time.perf_counter()
    model = SentimentModel(seed=seed).fit([texts[i] for i in tr], labels[tr])
    train_s = time.perf_counter() - started
    predicted = model.predict([texts[i] for i in te])
    out = {
        "reviews": len(texts),
        "split": "stratified 80/20 by category and label",
        "model": scores(labels[te], predicted),
        "model_by_category": {
            c: scores(labels[te][cats[te] == c], predicted[cats[te] == c]) for c in sorted(set(cats))
        },
        "baseline": "n/a (VADER has no Chinese lexicon)",
        "train_s": round(train_s, 1),
    }
    if folds_by_category:
        unseen = {}
        for c in sorted(set(cats)):
            held = cats == c
            m = SentimentModel(seed=seed).fit([t for t, h in zip(texts, held) if not h], labels[~held])
            unseen[c] = scores(labels[held], m.predict([t for t, h in zip(texts, held) if h]))
        out["unseen_category"] = unseen
        out["unseen_category_mean_accuracy"] = round(float(np.mean([s["accuracy"] for s in unseen.values()])), 4)
        out["unseen_category_min_accuracy"] = round(float(min(s["accuracy"] for s in unseen.values())), 4)
    return out


def english(reviews, encoder, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from ml.sentiment import SentimentModel, scores

    texts = [r.text for r in reviews]
    labels = np.asarray([r.label for r in reviews])
    predicted = np.zeros(len(texts), np.int64)
    plain = np.zeros(len(texts), np.int64)  # the TF-IDF head alone: what the encoder adds
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(texts, labels):
        train = [texts[i] for i in tr]
        predicted[te] = (
            SentimentModel(encoder=encoder, seed=seed).fit(train, labels[tr]).predict([texts[i] for i in te])
        )
        plain[te] = SentimentModel(seed=seed).fit(train, labels[tr]).predict([texts[i] for i in te])
    vader = SentimentIntensityAnalyzer()
    baseline = np.asarray([vader.polarity_scores(t)["compound"] >= 0.05 for t in texts], np.int64)
    return {
        "reviews": len(texts),
        "split": "5-fold stratified cross-validation (every sentence tested once)",
        "model": scores(labels, predicted),
        "model_without_encoder": scores(labels, plain),
        "baseline_vader": scores(labels, baseline),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default=str(REPO.parent / "shared" / "data" / "reviews-dev"), help="folder of labelled reviews"
    )
    p.add_argument("--models-dir", default=None, help="where the embedded encoder is materialized (default: models/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-unseen-categories", action="store_true", help="skip the ten leave-one-category-out fits")
    args = p.parse_args()

    from data.labelled_reviews import read_labelled

    data = Path(args.data)
    zh_files, en_files = (
        sorted(data.glob("online_shopping_10_cats*.csv")),
        sorted(data.glob("amazon_cells_labelled*.txt")),
    )
    if not zh_files or not en_files:
        sys.exit(
            f"{data}: expected online_shopping_10_cats*.csv and amazon_cells_labelled*.txt (see ../shared/README.md)"
        )
    result = {"data": {"zh": zh_files[0].name, "en": en_files[0].name}}
    zh, zh_rejected = read_labelled(zh_files[0])
    en, en_rejected = read_labelled(en_files[0])
    result["rejected_rows"] = {"zh": len(zh_rejected), "en": len(en_rejected)}
    result["zh"] = chinese(zh, args.seed, not args.no_unseen_categories)
    result["en"] = english(en, _encoder(args.models_dir), args.seed)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
