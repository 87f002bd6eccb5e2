"""Per-aspect review summaries: clauses, aspect words in both languages, counts per review, verbatim
quotes, and the check that catches a summary its reviews do not back. The sentiment here is a
keyword reader, so the counts can be worked out by hand; the trained model's path is in
tests/train/test_sentiment.py.

    pytest -q tests/ml/test_aspects.py
"""

from __future__ import annotations

import numpy as np

from ml.aspects import aspects_of, check_summary, clauses, summarize


class KeywordReader:
    def predict_proba(self, texts):
        return np.asarray([0.9 if any(w in t.lower() for w in ("good", "great", "好")) else 0.1 for t in texts])


REVIEWS = [
    "The battery is great. Delivery was slow.",
    "Great battery, good fit.",
    "电池很好，物流太慢了。",
    "The battery died in a day, and the fit is odd.",
    "Nice colour.",
]


def test_clauses_and_aspects_in_both_languages():
    assert clauses("电池很好，物流太慢了。") == ["电池很好，", "物流太慢了。"]
    assert clauses("Great battery, good fit.") == ["Great battery,", "good fit."]  # quotes drop the trailing comma
    assert aspects_of("物流太慢了") == {"delivery"} and aspects_of("Battery died") == {"battery"}
    assert aspects_of("Nice colour.") == set()


def test_counts_are_per_review_and_quotes_are_verbatim():
    summary = summarize(REVIEWS, KeywordReader(), min_reviews=5)
    by = {a["aspect"]: a for a in summary["aspects"]}
    assert summary["reviews"] == 5 and summary["note"] is None
    assert (by["battery"]["mentions"], by["battery"]["positive"]) == (4, 3)
    assert (by["delivery"]["mentions"], by["delivery"]["positive"]) == (2, 0)
    assert (by["fit"]["mentions"], by["fit"]["positive"]) == (2, 1)
    assert by["battery"]["sentence"] == "battery: 3 of 4 reviews positive"
    assert by["delivery"]["quote"] in ("Delivery was slow.", "物流太慢了。")  # the majority's side
    assert check_summary(summary, REVIEWS) == []


def test_too_few_reviews_say_so_instead_of_summarizing():
    summary = summarize(REVIEWS[:3], KeywordReader(), min_reviews=5)
    assert summary["aspects"] == [] and summary["note"] == "3 reviews; a summary needs 5"
    assert summarize(["Nice colour."] * 5, KeywordReader())["note"].startswith("no review names")


def test_the_check_catches_what_the_reviews_do_not_back():
    summary = summarize(REVIEWS, KeywordReader(), min_reviews=5)
    forged = {**summary, "aspects": [dict(a) for a in summary["aspects"]]}
    forged["aspects"][0]["quote"] = "Best battery ever made"
    forged["aspects"][1]["mentions"] += 3
    problems = check_summary(forged, REVIEWS)
    assert any("is in no review" in p for p in problems) and any(
        "reviews name it" in p or "impossible" in p for p in problems
    )


ZH_REVIEWS = ["尺码很好，物流太慢了。", "尺码偏小，面料好。", "面料好，物流好。", "做工好。", "尺码好，发货慢。"]


def test_chinese_reviews_are_summarized_in_chinese():
    summary = summarize(ZH_REVIEWS, KeywordReader(), min_reviews=5)
    by = {a["aspect"]: a for a in summary["aspects"]}
    assert summary["language"] == "zh"
    assert by["size"]["sentence"] == f"尺码：{by['size']['mentions']}条评价中{by['size']['positive']}条好评"
    assert by["delivery"]["sentence"].startswith("物流：")
    assert check_summary(summary, ZH_REVIEWS) == []
    few = summarize(ZH_REVIEWS[:2], KeywordReader(), min_reviews=5)
    assert few["note"] == "共2条评价，至少5条才作总结" and few["language"] == "zh"
    mixed = summarize(REVIEWS, KeywordReader(), min_reviews=5)  # one Chinese review of five: English
    assert mixed["language"] == "en"
