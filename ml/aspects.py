"""What reviewers say about a product, per aspect: "fit: 9 of 12 reviews positive", with a quote.

    from ml.aspects import summarize
    summary = summarize(review_texts, model)      # model: ml.sentiment.SentimentModel
    summary["aspects"][0]  # {"aspect": "fit", "mentions": 12, "positive": 9, "sentence": ..., "quote": ...}

A review is cut into clauses (sentence ends and commas, in both scripts); a clause that names an
aspect (a short word list per aspect, English and Chinese: battery / 电池, fit / 合身, size / 尺码,
material / 面料, delivery / 物流, …) is read by the sentiment model, and the review counts once per
aspect, positive when most of its clauses on that aspect read positive. Each sentence of the
summary is a count over the reviews, and each quote is a clause copied verbatim from one of
them (`check_summary` proves both), so the summary says nothing the reviews do not. A product
with fewer than `min_reviews` reviews gets no summary, and says so.
"""

from __future__ import annotations

import re
from typing import Any

ASPECTS: dict[str, tuple[str, ...]] = {
    "battery": ("battery", "batteries", "charge", "charging", "电池", "续航", "充电"),
    "fit": ("fit", "fits", "fitting", "合身", "版型"),
    "size": ("size", "sizes", "small", "large", "big", "tight", "loose", "尺码", "大小", "偏大", "偏小"),
    "material": ("material", "fabric", "cotton", "leather", "plastic", "steel", "面料", "材质", "布料", "质地"),
    "quality": ("quality", "build", "sturdy", "flimsy", "broke", "broken", "质量", "做工"),
    "sound": ("sound", "audio", "bass", "volume", "音质", "声音", "音量"),
    "screen": ("screen", "display", "屏幕", "显示"),
    "delivery": ("delivery", "shipping", "arrived", "package", "packaging", "物流", "快递", "发货", "送货", "包装"),
    "price": ("price", "value", "worth", "cheap", "expensive", "价格", "性价比", "便宜", "贵"),
    "taste": ("taste", "flavor", "flavour", "味道", "口感", "好吃"),
    "comfort": ("comfortable", "comfort", "soft", "舒服", "舒适", "柔软"),
}
# The aspect as a Chinese page names it (a Chinese product's reviews are summarized in Chinese).
ASPECT_ZH = {
    "battery": "电池", "fit": "版型", "size": "尺码", "material": "面料", "quality": "质量", "sound": "音质",
    "screen": "屏幕", "delivery": "物流", "price": "价格", "taste": "口味", "comfort": "舒适度",
}  # fmt: skip
_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")
_WORD = {w: a for a, words in ASPECTS.items() for w in words if w.isascii()}
_CJK = {w: a for a, words in ASPECTS.items() for w in words if not w.isascii()}
_CLAUSE = re.compile(r"[^.!?;。！？；，,\n]+[.!?;。！？；，,]*")
MAX_QUOTE_CHARS = 80


def clauses(text: str) -> list[str]:
    return [c.strip() for c in _CLAUSE.findall(text) if len(c.strip().strip(".!?;。！？；，,")) >= 2]


def aspects_of(clause: str) -> set[str]:
    found = {_WORD[w] for w in re.findall(r"[a-z]+", clause.lower()) if w in _WORD}
    return found | {a for w, a in _CJK.items() if w in clause}


def language_of(texts: list[str]) -> str:
    """ "zh" when most of the reviews are written in Chinese, else "en": the summary's language."""
    zh = sum(1 for t in texts if len(_CJK_CHAR.findall(t)) * 2 >= len(re.sub(r"\W", "", t)) > 0)
    return "zh" if texts and zh * 2 > len(texts) else "en"


def sentence(aspect: str, positive: int, mentions: int, language: str = "en") -> str:
    """One summary sentence: the counts, in the reviews' language."""
    if language == "zh":
        return f"{ASPECT_ZH.get(aspect, aspect)}：{mentions}条评价中{positive}条好评"
    return f"{aspect}: {positive} of {mentions} reviews positive"


def summarize(texts: list[str], model, min_reviews: int = 5, max_aspects: int = 4) -> dict[str, Any]:
    """The per-aspect summary of one product's reviews (texts already scrubbed of personal data),
    written in the reviews' language (`language_of`)."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    lang = language_of(texts)
    if len(texts) < min_reviews:
        note = (f"共{len(texts)}条评价，至少{min_reviews}条才作总结" if lang == "zh"
                else f"{len(texts)} reviews; a summary needs {min_reviews}")  # fmt: skip
        return {"reviews": len(texts), "aspects": [], "note": note, "language": lang}
    spans = [(r, c, aspects_of(c)) for r, t in enumerate(texts) for c in clauses(t)]
    spans = [(r, c, found) for r, c, found in spans if found]
    if not spans:
        note = "评价未提到可总结的方面" if lang == "zh" else "no review names an aspect this summary knows"
        return {"reviews": len(texts), "aspects": [], "note": note, "language": lang}
    p = model.predict_proba([c for _, c, _ in spans])
    votes: dict[str, dict[int, list[tuple[float, str]]]] = {}
    for (r, clause, found), prob in zip(spans, p.tolist()):
        for aspect in found:
            votes.setdefault(aspect, {}).setdefault(r, []).append((prob, clause))
    out = []
    for aspect, by_review in votes.items():
        positive = sum(1 for v in by_review.values() if sum(q >= 0.5 for q, _ in v) * 2 > len(v))
        mentions = len(by_review)
        majority_positive = positive * 2 >= mentions
        # the quote: the clearest short clause on the majority's side, verbatim
        side = [(q, c) for v in by_review.values() for q, c in v if (q >= 0.5) == majority_positive]
        side = [(q, c) for q, c in side if len(c) <= MAX_QUOTE_CHARS] or side
        quote = max(side, key=lambda x: (abs(x[0] - 0.5), -len(x[1])))[1].rstrip("，,;；") if side else None
        out.append(
            {
                "aspect": aspect,
                "mentions": mentions,
                "positive": positive,
                "sentence": sentence(aspect, positive, mentions, lang),
                "quote": quote,
            }
        )
    out.sort(key=lambda a: (-a["mentions"], a["aspect"]))
    return {"reviews": len(texts), "aspects": out[:max_aspects], "note": None, "language": lang}


def check_summary(summary: dict[str, Any], texts: list[str]) -> list[str]:
    """What in `summary` the reviews do not back (empty: every count and quote is traceable)."""
    problems = []
    for a in summary.get("aspects", []):
        if not 0 <= a["positive"] <= a["mentions"] <= len(texts):
            problems.append(
                f"{a['aspect']}: counts {a['positive']}/{a['mentions']} impossible for {len(texts)} reviews"
            )
        if a["sentence"] not in {sentence(a["aspect"], a["positive"], a["mentions"], lang) for lang in ("en", "zh")}:
            problems.append(f"{a['aspect']}: sentence {a['sentence']!r} is not its counts")
        if a["quote"] is not None and not any(a["quote"] in t for t in texts):
            problems.append(f"{a['aspect']}: quote {a['quote']!r} is in no review")
        named = sum(1 for t in texts if any(a["aspect"] in aspects_of(c) for c in clauses(t)))
        if a["mentions"] > named:
            problems.append(f"{a['aspect']}: {a['mentions']} mentions, but {named} reviews name it")
    return problems
