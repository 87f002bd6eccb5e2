"""`shopgraph train sentiment`: labelled files and the shop's own rated reviews in, a committed
model with held-out figures out; bad configs and missing reviews answered clearly.

    pytest -q tests/train/test_sentiment.py
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from core.config import load_config
from core.layout import ArtifactLayout
from core.manifest import read_manifest
from core.schemas import EVENTS
from core.shards import write_shard_set
from data.labelled_reviews import read_labelled
from ml.sentiment import SentimentModel
from tests.conftest import SHARED

ZH = SHARED / "data" / "reviews-dev" / "online_shopping_10_cats_dev10000.csv"


def _shop_events(root, reviews: list[tuple[str, float]]) -> None:
    ts = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = {
        "user_id": [f"u{i}" for i in range(len(reviews))],
        "product_id": ["p1"] * len(reviews),
        "event": ["rating"] * len(reviews),
        "ts": [ts] * len(reviews),
        "value": [v for _, v in reviews],
        "text": [t for t, _ in reviews],
    }
    table = pa.table(rows, schema=EVENTS)
    write_shard_set(table, ArtifactLayout(str(root)).events, rows_per_shard=10_000, row_group_rows=1_000, meta={})


@pytest.mark.skipif(not ZH.is_file(), reason="the shared review data is not here")
def test_trains_on_labelled_files_and_shop_reviews_and_commits_the_model(tmp_path, monkeypatch):
    from train import sentiment

    kept, _ = read_labelled(ZH)
    rng = np.random.default_rng(0)
    subset = tmp_path / "zh.csv"
    rows = [kept[i] for i in rng.permutation(len(kept))[:600]]
    subset.write_text(
        "cat,label,review\n" + "".join(f'{r.category},{r.label},"{r.text.replace(chr(34), "")}"\n' for r in rows),
        encoding="utf-8",
    )
    good = ["Battery lasts all day, love it.", "Great fit and soft material.", "Fast delivery, works perfectly."]
    bad = ["Broke after two days.", "Too small and the seams split.", "Arrived late and scratched."]
    shop = [(t, 5.0) for t in good * 5] + [(t, 1.0) for t in bad * 5] + [("It is fine.", 3.0), ("", 5.0)]
    root = tmp_path / "artifacts"
    _shop_events(root, shop)
    cfg = load_config(
        None,
        [f"artifacts.root={root}", f"models.dir={tmp_path / 'models'}", f"train.sentiment.labelled=[{subset}]"],
    )
    meta = sentiment.train_sentiment(cfg, log=lambda _: None)
    assert meta["reviews"]["labelled"] == 600 and meta["reviews"]["shop_reviews"] == 30
    assert meta["reviews"]["shop_rating_between"] == 1  # a 3-star review is neither: left out, counted
    assert meta["holdout"]["zh"]["accuracy"] >= 0.75 and "en" in meta["holdout"]
    out = ArtifactLayout(str(root)).sentiment
    assert read_manifest(out)["meta"]["reviews"] == meta["reviews"]
    from ml.encoder import TextEncoder

    model = SentimentModel.load(out, encoder=TextEncoder(tmp_path / "models" / "all-minilm-l6-v2"))
    assert model.predict(["质量很好，非常满意", "Broke after two days, do not buy."]).tolist() == [1, 0]


def test_without_any_review_it_says_what_to_configure(tmp_path, capsys):
    from serve.content import load_review_summaries
    from train import sentiment

    code = sentiment.main(["--set", f"artifacts.root={tmp_path}", "--set", f"models.dir={tmp_path / 'models'}"])
    assert code == 1 and "no reviews to train the sentiment model on" in capsys.readouterr().err
    # the demo pipeline goes on: an empty, committed stage output that says why; pages get no summary
    cfg = load_config(None, [f"artifacts.root={tmp_path}", f"models.dir={tmp_path / 'models'}"])
    meta = sentiment.train_sentiment(cfg, log=lambda _: None, allow_empty=True)
    assert "no reviews with text" in meta["skipped"]
    assert read_manifest(ArtifactLayout(str(tmp_path)).sentiment)["meta"]["skipped"] == meta["skipped"]
    assert load_review_summaries(cfg) == {}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.sentiment.negative_max=4.5", "negative_max must be below positive_min"),
        ("train.sentiment.holdout=0.9", "holdout"),
        ("train.sentiment.c=0", "train.sentiment.c"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path, capsys, override, needle):
    from train import sentiment

    assert sentiment.main(["--set", override]) == 2
    assert needle in capsys.readouterr().err


def test_a_missing_labelled_file_is_named(tmp_path, capsys):
    from train import sentiment

    code = sentiment.main(
        ["--set", f"artifacts.root={tmp_path}", "--set", f"train.sentiment.labelled=[{tmp_path}/nope.csv]"]
    )
    assert code == 1 and "nope.csv" in capsys.readouterr().err


def test_pages_get_review_summaries_that_their_reviews_back(tmp_path):
    """The sample shop's reviews -> `train sentiment` -> per-aspect summaries whose counts and quotes
    come from the reviews; a product with too few reviews says so."""
    import json

    from core.config.ingest import SampleConfig
    from data.sample import generate
    from ml.aspects import check_summary
    from train import sentiment

    _, events = generate(SampleConfig(num_products=40, num_users=200, num_events=6000))
    root = tmp_path / "artifacts"
    table = events.sort_by([("user_id", "ascending"), ("ts", "ascending")])
    write_shard_set(table, ArtifactLayout(str(root)).events, rows_per_shard=100_000, row_group_rows=10_000, meta={})
    cfg = load_config(None, [f"artifacts.root={root}", f"models.dir={tmp_path / 'models'}"])
    meta = sentiment.train_sentiment(cfg, log=lambda _: None)
    assert meta["holdout"]["en"]["accuracy"] >= 0.9  # templated reviews: easy, and the point is the wiring
    counts = meta["summaries"]
    assert counts["summarized"] > 10 and counts["failed_check"] == 0
    rows = [json.loads(x) for x in (root / "content" / "reviews" / "summaries.jsonl").read_text().splitlines()]
    texts: dict[str, list[str]] = {}
    for pid, e, text in zip(events["product_id"].to_pylist(), events["event"].to_pylist(), events["text"].to_pylist()):
        if e == "rating" and text:
            texts.setdefault(pid, []).append(text)
    for row in rows:
        summary = row["summary"]
        assert check_summary(summary, texts[row["product_id"]]) == []
        if len(texts[row["product_id"]]) < 5:
            assert summary["aspects"] == [] and "a summary needs 5" in summary["note"]
    summarized = [r["summary"] for r in rows if r["summary"]["aspects"]]
    a = summarized[0]["aspects"][0]
    assert a["sentence"] == f"{a['aspect']}: {a['positive']} of {a['mentions']} reviews positive" and a["quote"]
