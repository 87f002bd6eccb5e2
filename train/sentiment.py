"""Recipe: the review sentiment model, trained on labelled reviews and the shop's own rated ones.

    shopgraph train sentiment --config configs/local.yaml
    python -m train.sentiment --config configs/local.yaml --set 'train.sentiment.labelled=[reviews.csv]'

Reviews come from two places, both optional, at least one needed:
- `train.sentiment.labelled`: files of labelled reviews (`data.labelled_reviews`);
- the shop's own reviews (`train.sentiment.shop_reviews`): rating events with text in the events
  shards, positive at `positive_min` and above, negative at `negative_max` and below; the ones in
  between are left out and counted, like rows a file could not give.
A seeded, stratified `holdout` share is scored (accuracy, macro-F1 per language); the model is then
trained on everything and committed under `<artifacts>/models/sentiment` with those figures in
its manifest. A single-process scikit-learn fit: tens of thousands of reviews take seconds, so
there is no Ray Train run to pay for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.layout import ArtifactLayout
from core.runtime import local_dir


def rated_reviews(cfg) -> pa.Table | None:
    """The shop's rating events that carry text (product_id, value, text), or None without shards."""
    import pyarrow.compute as pc

    from core.manifest import IncompleteDirError
    from core.shards import read_events

    try:
        events = read_events(ArtifactLayout(cfg.artifacts.root))
    except (FileNotFoundError, IncompleteDirError):
        return None
    rated = events.filter(pc.and_(pc.equal(events["event"], "rating"), pc.invert(pc.is_null(events["text"]))))
    return rated.select(["product_id", "value", "text"])


def shop_reviews(rated: pa.Table | None, cfg, log=print) -> tuple[list[str], list[int], dict[str, int]]:
    """(texts, labels, counts) of the shop's rated reviews (`rated_reviews`)."""
    s = cfg.train.sentiment
    if rated is None:
        log("sentiment: no events shards (run `shopgraph data prepare`): no shop reviews")
        return [], [], {"shop_reviews": 0}
    texts, labels, between, empty = [], [], 0, 0
    for text, value in zip(rated["text"].to_pylist(), rated["value"].to_pylist()):
        if not (text or "").strip() or value is None:
            empty += 1
        elif value >= s.positive_min:
            texts.append(text)
            labels.append(1)
        elif value <= s.negative_max:
            texts.append(text)
            labels.append(0)
        else:
            between += 1
    return texts, labels, {"shop_reviews": len(texts), "shop_rating_between": between, "shop_no_text_or_rating": empty}


def labelled_reviews(paths: list[str]) -> tuple[list[str], list[int], dict[str, Any]]:
    from data.labelled_reviews import read_labelled

    texts, labels, counts = [], [], {"labelled": 0, "labelled_rejected": 0}
    for path in paths:
        kept, rejected = read_labelled(Path(path))
        texts += [r.text for r in kept]
        labels += [r.label for r in kept]
        counts["labelled"] += len(kept)
        counts["labelled_rejected"] += len(rejected)
    return texts, labels, counts


def train_sentiment(cfg, log=print, allow_empty: bool = False) -> dict[str, Any]:
    """Train, score and commit the model, then the review summaries. `allow_empty` (the demo
    pipeline): a shop without review text commits an empty model directory that says why and no
    summaries, instead of failing the run."""
    from sklearn.model_selection import train_test_split

    from ml.encoder import TextEncoder, prepare_encoder, resolve_encoder_dir
    from ml.sentiment import SentimentModel, language_of, scores

    s = cfg.train.sentiment
    texts, labels, counts = labelled_reviews(s.labelled)
    rated = rated_reviews(cfg) if s.shop_reviews else None  # read once: training and the summaries
    if s.shop_reviews:
        more, more_labels, shop_counts = shop_reviews(rated, cfg, log)
        texts, labels = texts + more, labels + more_labels
        counts.update(shop_counts)
    if not texts and allow_empty:
        from core.manifest import staged_dir, write_manifest

        layout = ArtifactLayout(cfg.artifacts.root)
        why = "no reviews with text and no labelled files (train.sentiment.labelled)"
        for out in (layout.sentiment, layout.review_summaries):
            with staged_dir(local_dir(out)) as staging:
                (staging / "SKIPPED").write_text(why + "\n", encoding="utf-8")
                write_manifest(staging, meta={"stage": "train-sentiment", "skipped": why})
        log(f"sentiment: skipped: {why}")
        return {"stage": "train-sentiment", "skipped": why, "reviews": counts}
    if not texts:
        raise ValueError(
            "no reviews to train the sentiment model on: list labelled files in train.sentiment.labelled, "
            "or ingest rating events with text (train.sentiment.shop_reviews)"
        )
    encoder_dir = resolve_encoder_dir(cfg.models.dir, cfg.models.encoder)
    if cfg.models.encoder == "all-minilm-l6-v2" and not encoder_dir.exists():
        encoder_dir, _ = prepare_encoder(cfg.models.dir)
    encoder = TextEncoder(encoder_dir)
    y = np.asarray(labels)
    langs = [language_of(t) for t in texts]
    strata = [f"{g}{v}" for g, v in zip(langs, labels)]
    if min(strata.count(x) for x in set(strata)) < 2:
        strata = labels  # a language with a single review of one label cannot be stratified on
    train_rows, test_rows = train_test_split(
        np.arange(len(texts)), test_size=s.holdout, random_state=cfg.train.seed, stratify=strata
    )
    held = SentimentModel(encoder=encoder, c=s.c, seed=cfg.train.seed).fit(
        [texts[i] for i in train_rows], y[train_rows]
    )
    p, heads = held.read([texts[i] for i in test_rows])
    predicted = (p >= 0.5).astype(np.int64)
    holdout = {}
    for lang in sorted(set(langs)):
        rows = [j for j, i in enumerate(test_rows) if langs[i] == lang]
        if rows:
            holdout[lang] = scores(y[test_rows][rows], predicted[rows])
    model = SentimentModel(encoder=encoder, c=s.c, seed=cfg.train.seed)
    model._vectors = held._vectors  # the texts it encoded already
    model.fit(texts, y)
    meta = {"stage": "train-sentiment", "reviews": counts, "holdout": holdout, "skipped": model.skipped}
    model.save(local_dir(ArtifactLayout(cfg.artifacts.root).sentiment), meta=meta)
    meta["summaries"] = write_summaries(cfg, model, rated) if s.shop_reviews else {"products": 0}
    log(f"sentiment: {len(texts)} reviews, held-out {holdout}, summaries {meta['summaries']}")
    return meta


def write_summaries(cfg, model, rated: pa.Table | None) -> dict[str, int]:
    """Per-aspect review summaries (`ml.aspects`) of every product with reviews in the shop's
    events (`rated_reviews`), committed under `<artifacts>/content/reviews` for product pages. Every
    summary is checked against its reviews (`check_summary`); one that fails is left out and counted."""
    import json

    from core.manifest import staged_dir, write_manifest
    from ml.aspects import check_summary, summarize

    if rated is None:
        return {"products": 0}
    by_product: dict[str, list[str]] = {}
    for pid, text in zip(rated["product_id"].to_pylist(), rated["text"].to_pylist()):
        if text and text.strip():
            by_product.setdefault(pid, []).append(text)
    rows, counts = [], {"products": 0, "summarized": 0, "no_summary": 0, "failed_check": 0}
    for pid in sorted(by_product):
        summary = summarize(by_product[pid], model, min_reviews=cfg.train.sentiment.summary_min_reviews)
        if check_summary(summary, by_product[pid]):
            counts["failed_check"] += 1
            continue
        counts["products"] += 1
        counts["summarized" if summary["aspects"] else "no_summary"] += 1  # too few reviews, or no aspect named
        rows.append({"product_id": pid, "summary": summary})
    with staged_dir(local_dir(ArtifactLayout(cfg.artifacts.root).review_summaries)) as staging:
        with (staging / "summaries.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_manifest(staging, meta={"stage": "train-sentiment", "counts": counts})
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m train.sentiment` (a `ray job submit` / RayJob entry point) and `shopgraph train sentiment`."""
    from core.cli import stage_main

    return stage_main(argv, lambda cfg: train_sentiment(cfg), prog="python -m train.sentiment", description=__doc__)


if __name__ == "__main__":
    import sys

    sys.exit(main())
