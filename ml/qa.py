"""Grounded product Q&A: which facts or review summaries answer a shopper's question, if any.

    from ml.qa import QuestionMatcher, plan_answer
    plan = plan_answer("What colour is it?", facts, review_summary, QuestionMatcher())
    plan.kind, plan.text, plan.citations      # "facts", "Colour: Navy.", [{"type": "fact", "key": "colour", ...}]

Serving (`POST /v1/chat/completions`) and the evaluation (`bench/qa.py`) run this one module, so
the answerer measured is the answerer served. A question is read for the *concepts* it asks
about (colour, material, price, fit, ...): first by cue words and their Chinese equivalents (the
grounding checker's attribute synonyms, `ml.grounding._ATTR_SYNONYMS`, and its colour/material
lexicons, so "is it cotton?" asks for the material), then, when no cue matches, by the text
encoder's similarity to a few phrasings of each concept; below `SIMILARITY_THRESHOLD` the
question is not understood and the answer is the abstention. A concept is answered from the
product's facts (`core.facts.facts_of`) when an attribute (or title, brand, price, category)
states it, else from the product's review summary (`ml.aspects`: "fit: 9 of 12 reviews
positive" with a verbatim quote) when the question is about what reviewers say or names an
aspect the reviews cover, else it is not answered: "That information is not listed for this
product." (or its Chinese form) — never a guess.

Every answer is checked with the page's grounding checker against its evidence (the facts plus
the review sentences and quotes it cites, `evidence_facts`); `template_answer` builds the
deterministic answer from the matched facts, which a generated answer must match or fall back to.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ml.prompts import QA_NOT_LISTED as NOT_LISTED  # the abstention, as the generator is told to write it

# Tuned by bench/qa.py on its tuning half of the products (never on the half it reports): the
# cosine similarity (all-MiniLM-L6-v2) a cue-less question needs to its nearest concept.
SIMILARITY_THRESHOLD = 0.55

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def language_of(text: str) -> str:
    """'zh' when the question has a CJK character, else 'en'."""
    return "zh" if _CJK.search(text or "") else "en"


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(text)).lower().replace("_", " ").split())


# concept -> (cue words and phrases, in both languages). English cues match whole words, Chinese
# ones as substrings. "type" is the generic concept ("what kind of ...") and loses to any other.
CONCEPT_CUES: dict[str, tuple[str, ...]] = {
    "color": ("color", "colour", "colours", "colors", "shade", "hue", "颜色", "什么色", "啥色", "配色", "色系"),
    "material": ("material", "materials", "fabric", "made of", "made from", "cloth", "材质", "面料", "材料", "布料", "什么料", "什么做的"),
    "size": ("size", "sizes", "dimensions", "how big", "how large", "measurements", "尺码", "尺寸", "大小", "规格", "多大"),
    "weight": ("weight", "weigh", "weighs", "heavy", "重量", "多重", "多少克"),
    "price": ("price", "cost", "costs", "how much", "priced", "价格", "多少钱", "价钱", "售价"),
    "brand": ("brand", "who makes", "manufacturer", "made by", "label", "品牌", "牌子", "哪个牌"),
    "gender": ("gender", "men or women", "for men", "for women", "unisex", "for boys", "for girls", "性别", "男款", "女款", "男士", "女士", "男生", "女生", "男的", "女的"),
    "capacity": ("capacity", "volume", "容量"),
    "warranty": ("warranty", "guarantee", "guaranteed", "保修", "质保", "保修期"),
    "type": ("what type", "what kind", "type of", "kind of product", "what is this product", "category", "类型", "什么类型", "品类", "类目"),
    "style": ("style", "风格"),
    "pattern": ("pattern", "print", "printed", "图案", "花纹", "印花"),
    "fit": ("fit", "fits", "cut", "版型", "合身"),
    "sleeve": ("sleeve", "sleeves", "袖"),
    "collar": ("collar", "neckline", "neck", "领"),
    "length": ("length", "how long", "长度", "裙长", "裤长", "衣长", "多长"),
    "design": ("design", "details", "款式", "样式", "设计", "门襟", "细节"),
    "origin": ("made in", "country of origin", "origin", "manufactured", "产地", "哪里产", "哪里生产", "哪国"),
    "care": ("wash", "washing", "washable", "care", "dryer", "iron", "洗涤", "机洗", "清洗", "水洗", "干洗"),
    "age": ("age", "years old", "年龄", "几岁"),
    "battery": ("battery", "batteries", "charge", "charging", "电池", "续航", "充电"),
    "quality": ("quality", "durable", "sturdy", "质量", "做工"),
    "comfort": ("comfortable", "comfort", "soft", "舒服", "舒适", "柔软"),
    "delivery": ("delivery", "shipping", "packaging", "物流", "快递", "发货", "包装"),
    "sound": ("sound", "audio", "bass", "音质", "声音"),
    "screen": ("screen", "display", "屏幕"),
    "season": ("season", "summer", "winter", "季节", "夏天", "冬天", "春秋"),
    "occasion": ("occasion", "wear it to", "场合", "通勤", "约会"),
}  # fmt: skip
# Cues that only hint at a concept ("how much" may ask the price or the weight): a concept named
# only by these loses to one named by a specific cue ("how much does it weigh" asks the weight).
GENERIC_CUES = frozenset(
    {"how much", "what kind", "what type", "type of", "how long", "how big", "cut", "多大", "多长"}
)
# A fact key that names a concept without being one of its cues (AdvertiseGen's 衣袖型 is a
# sleeve, 衣领型 a collar, 裙型 a type); checked as substrings of the key, in this order.
_KEY_PARTS = (
    ("袖", "sleeve"), ("领", "collar"), ("长", "length"), ("款式", "design"), ("样式", "design"), ("门襟", "design"),
    ("型", "type"), ("colour", "color"), ("color", "color"), ("fabric", "material"), ("material", "material"),
)  # fmt: skip
# The concept's fact when the attributes lack it: the product's own fields.
_FIELD_OF = {"brand": "brand", "price": "price", "type": "category"}
# Review aspects (ml.aspects.ASPECTS) by concept: what reviews can speak to.
_ASPECT_OF = {c: c for c in ("battery", "fit", "size", "material", "quality", "sound", "screen", "delivery", "price", "comfort")}  # fmt: skip
_REVIEW_INTENT = (
    "review", "reviews", "reviewer", "reviewers", "customers", "buyers", "people say", "others say", "rated",
    "评价", "评论", "买家", "大家觉得", "口碑", "好评", "差评", "买过的",
)  # fmt: skip
_ASPECT_ZH = {"battery": "电池", "fit": "版型", "size": "尺码", "material": "面料", "quality": "质量", "sound": "音质",
              "screen": "屏幕", "delivery": "物流", "price": "价格", "taste": "口感", "comfort": "舒适度"}  # fmt: skip
# Phrasings the encoder compares a cue-less question with (English: the encoder's language).
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "color": ("What colour is it?", "Which colour does it come in?"),
    "material": ("What is it made of?", "What fabric is it?"),
    "size": ("What size is it?", "What are its dimensions?"),
    "weight": ("How much does it weigh?",),
    "price": ("How much is it?", "What does it cost?"),
    "brand": ("Which brand makes it?", "Who is the manufacturer?"),
    "gender": ("Is it for men or for women?", "Who is it meant for, men or women?"),
    "capacity": ("How much does it hold?",),
    "warranty": ("Does it come with a warranty?",),
    "type": ("What kind of product is this?",),
    "style": ("What style is it?",),
    "pattern": ("What pattern does it have?",),
    "fit": ("How does it fit?",),
    "sleeve": ("What kind of sleeves does it have?",),
    "collar": ("What kind of collar does it have?",),
    "length": ("How long is it?",),
    "design": ("What design details does it have?",),
    "origin": ("Where was it made?", "Which country is it from?"),
    "care": ("How do I wash it?", "Can it go in the washing machine?"),
    "age": ("What age is it for?",),
    "battery": ("How long does the battery last?",),
    "quality": ("Is it well made?",),
    "comfort": ("Is it comfortable?",),
    "delivery": ("How fast is delivery?",),
    "sound": ("How is the sound?",),
    "screen": ("How is the screen?",),
    "season": ("Which season is it for?",),
    "occasion": ("What occasion is it for?",),
}

Kind = Literal["facts", "reviews", "abstain"]


def _cue_pattern(cues: tuple[str, ...]) -> re.Pattern[str]:
    latin = sorted((c for c in cues if not _CJK.search(c)), key=len, reverse=True)
    cjk = sorted((c for c in cues if _CJK.search(c)), key=len, reverse=True)
    parts = [rf"(?<![a-z0-9]){re.escape(c)}(?![a-z0-9])" for c in latin] + [re.escape(c) for c in cjk]
    return re.compile("|".join(parts))


def _synonym_cues() -> dict[str, tuple[str, ...]]:
    """CONCEPT_CUES plus the grounding checker's attribute synonyms (one table for both)."""
    from ml.grounding import _ATTR_SYNONYMS

    cues = {c: list(v) for c, v in CONCEPT_CUES.items()}
    for word, concept in _ATTR_SYNONYMS.items():
        cues.setdefault(concept, [])
        if word not in cues[concept]:
            cues[concept].append(word)
    return {c: tuple(v) for c, v in cues.items()}


_CUES = _synonym_cues()
_CUE_RE = {c: _cue_pattern(v) for c, v in _CUES.items()}
_REVIEW_RE = _cue_pattern(_REVIEW_INTENT)


def concept_of_key(key: str) -> str:
    """The concept a fact key states: 'colour' -> color, '材质' -> material, '衣袖型' -> sleeve;
    a key no table knows is its own concept (normalized)."""
    k = _norm(key)
    for concept, cues in _CUES.items():
        if k in cues:
            return concept
    for part, concept in _KEY_PARTS:
        if part in k:
            return concept
    return k


def cue_concepts(question: str) -> dict[str, float]:
    """Concepts the question names by a cue word: concept -> score (1.0; the generic "type" 0.6).
    A colour or material word ("is it navy?", "纯棉的吗") asks for the colour or the material."""
    from ml.grounding import _COLOUR_LEX, _COLOUR_RE, _MATERIAL_LEX, _MATERIAL_RE, _lower

    q = _norm(question)
    matched = {c: {m.group(0) for m in pattern.finditer(q)} for c, pattern in _CUE_RE.items()}
    matched = {c: cues for c, cues in matched.items() if cues}
    if any(cues - GENERIC_CUES for cues in matched.values()):
        matched = {c: cues for c, cues in matched.items() if cues - GENERIC_CUES}
    found = {c: (0.6 if c == "type" else 1.0) for c in matched}
    low = _lower(question)
    for pattern, lex, concept in ((_COLOUR_RE, _COLOUR_LEX, "color"), (_MATERIAL_RE, _MATERIAL_LEX, "material")):
        if set(found) <= {"type"} and any(lex.get(_term_key(m.group(0))) for m in pattern.finditer(low)):
            found[concept] = 0.9  # only when no cue word names the concept ("can I iron it?" is care)
    if len(found) > 1:
        found.pop("type", None)  # "what kind of fabric": the fabric
    return found


def _term_key(term: str) -> str:
    from ml.grounding import _tkey

    return _tkey(term)


def review_intent(question: str) -> bool:
    return bool(_REVIEW_RE.search(_norm(question)))


class QuestionMatcher:
    """Question -> concepts: cue words first, then (if an encoder is given) the nearest concept
    by cosine similarity, kept only at `threshold` or above. `extra` adds a product's own fact
    keys (a key no concept knows is matched by its own name). `loader`: makes the encoder on
    first need (serving loads it only when a question has no cue word); if it fails, cue words
    alone decide, and `load_error` says why."""

    def __init__(self, encoder=None, threshold: float = SIMILARITY_THRESHOLD, loader=None):
        self.encoder, self.threshold, self.loader = encoder, threshold, loader
        self.load_error: str | None = None
        self._names: list[str] = []
        self._vectors: np.ndarray | None = None
        self._memo: dict[str, np.ndarray] = {}

    def _prototypes(self) -> tuple[list[str], np.ndarray]:
        if self._vectors is None:
            names, texts = [], []
            for concept, phrasings in PROTOTYPES.items():
                for p in phrasings:
                    names.append(concept)
                    texts.append(p)
            self._names, self._vectors = names, self.encoder.encode(texts)
        return self._names, self._vectors

    def similar(self, question: str) -> tuple[str | None, float]:
        """The nearest concept by the encoder and its cosine similarity; (None, 0) without one."""
        if self.encoder is None and self.loader is not None:
            loader, self.loader = self.loader, None
            try:
                self.encoder = loader()
            except Exception as e:  # a missing model: cue words still answer
                self.load_error = f"{type(e).__name__}: {e}"
        if self.encoder is None:
            return None, 0.0
        names, vectors = self._prototypes()
        q = self._memo.get(question)
        if q is None:
            q = self.encoder.encode([question])[0]
            if len(self._memo) < 10_000:
                self._memo[question] = q
        sims = vectors @ q
        best = int(np.argmax(sims))
        return names[best], float(sims[best])

    def concepts(
        self, question: str, keys: Mapping[str, str] = {}, values: Mapping[str, list[str]] = {}
    ) -> tuple[dict[str, float], str]:
        """(concept -> score, how: "cue" | "value" | "encoder" | "none"). `keys`: fact key ->
        concept; `values`: fact key -> its values (a question naming one, "is it navy?", "这是裙吗",
        asks for that key)."""
        found = cue_concepts(question)
        q = _norm(question)
        for key, concept in keys.items():  # the product's own key named verbatim ("衣样式")
            k = _norm(key)
            if len(k) >= 2 and k in q and concept not in found:
                found[concept] = 1.0
        if found:
            return found, "cue"
        hits = []
        for key, vals in values.items():
            for v in vals:
                v = _norm(v)
                hit = (
                    v in q
                    if _CJK.search(v)
                    else len(v) >= 3 and re.search(rf"(?<![a-z0-9]){re.escape(v)}(?![a-z0-9])", q)
                )
                if v and hit:
                    hits.append((v, keys.get(key, concept_of_key(key))))
        for v, concept in hits:  # "是长裙的吗" names 长裙 (裙长), not 裙 (类型) inside it
            if not any(v != w and v in w for w, _ in hits):
                found[concept] = 0.8
        if found:
            return found, "value"
        concept, score = self.similar(question)
        if concept is not None and score >= self.threshold:
            return {concept: score}, "encoder"
        return {}, "none"


@dataclass
class Plan:
    """What the answer to one question rests on."""

    kind: Kind
    language: str
    text: str  # the template answer (or the abstention)
    citations: list[dict[str, Any]] = field(default_factory=list)
    concepts: dict[str, float] = field(default_factory=dict)
    matched_by: str = "none"  # cue | value | encoder | none
    evidence: dict[str, Any] = field(default_factory=dict)  # facts + cited review text: what grounds the answer
    values: list[str] = field(default_factory=list)  # what an answer must mention to answer the question

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "language": self.language, "citations": self.citations,
                "concepts": self.concepts, "matched_by": self.matched_by}  # fmt: skip


def _fact_keys(facts: Mapping[str, Any]) -> dict[str, str]:
    """Attribute key -> the concept it states."""
    return {k: concept_of_key(k) for k in (facts.get("attributes") or {})}


def _value_text(value: Any, lang: str) -> str:
    if isinstance(value, list | tuple):  # "，" not "、": the checker reads a key's values split at commas
        return ("，" if lang == "zh" else ", ").join(map(str, value))
    return str(value)


def _price(value: Any) -> str:
    number = float(value)
    return f"{number:.0f}" if number.is_integer() else f"{number:.2f}"


def _label(key: str) -> str:
    label = key.replace("_", " ").strip()
    return label[:1].upper() + label[1:]


def _fact_sentence(key: str, value: Any, lang: str) -> str:
    colon, stop = ("：", "。") if lang == "zh" else (": ", ".")
    return f"{_label(key)}{colon}{_value_text(value, lang).rstrip('.')}{stop}"


def _fact_answers(concept: str, facts: Mapping[str, Any], keys: Mapping[str, str], lang: str) -> list[dict[str, Any]]:
    """[{"key", "value", "sentence"}] of the facts that state `concept` (attributes first)."""
    attributes = facts.get("attributes") or {}
    out = [
        {"key": k, "value": attributes[k], "sentence": _fact_sentence(k, attributes[k], lang)}
        for k, c in keys.items()
        if c == concept
    ]
    if out:
        return out
    name = _FIELD_OF.get(concept)
    if name == "price" and facts.get("price") is not None:
        shown = f"{_price(facts['price'])} {facts.get('currency') or ''}".strip()
        label = "价格" if lang == "zh" else "price"
        return [{"key": "price", "value": shown, "sentence": _fact_sentence(label, shown, lang)}]
    if name and facts.get(name):
        label = {"brand": "品牌", "category": "类目"}.get(name, name) if lang == "zh" else name
        return [{"key": name, "value": facts[name], "sentence": _fact_sentence(label, facts[name], lang)}]
    if concept == "type" and facts.get("title"):  # what the product is: its catalog title
        title = str(facts["title"]).rstrip(".")
        # not "Product: <title>": a title glued like "BuckleUp" reads as a key and its value
        sentence = f"这是{title}。" if lang == "zh" else f"This is the {title}."
        return [{"key": "title", "value": facts["title"], "sentence": sentence}]
    return []


def _review_sentence(a: Mapping[str, Any], lang: str) -> str:
    aspect = a["aspect"]
    if lang == "zh":
        name = _ASPECT_ZH.get(aspect, aspect)
        text = f"关于{name}，{a['mentions']}条评价中有{a['positive']}条是正面的。"
        return text + (f"有买家写道：“{a['quote']}”。" if a.get("quote") else "")
    # not "Reviews on size: ...": a "key: value" about an attribute key the checker knows
    text = f"On {aspect}, {a['positive']} of {a['mentions']} reviews are positive."
    return text + (f' One reviewer wrote: "{a["quote"]}".' if a.get("quote") else "")


def _review_answers(concepts: Mapping[str, float], summary: Mapping[str, Any] | None, question: str,
                    intent: bool) -> list[dict[str, Any]]:  # fmt: skip
    """The summary's aspects the question asks about (with review intent and no aspect named:
    every aspect the summary has)."""
    from ml.aspects import aspects_of

    aspects = (summary or {}).get("aspects") or []
    if not aspects:
        return []
    wanted = {_ASPECT_OF[c] for c in concepts if c in _ASPECT_OF} | aspects_of(_norm(question))
    if wanted:
        return [a for a in aspects if a["aspect"] in wanted]
    return list(aspects) if intent else []


def evidence_facts(facts: Mapping[str, Any], reviews: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The facts plus the cited review sentences and quotes, as attributes: what the grounding
    checker holds an answer to (a review's counts and words are evidence, not product facts,
    and only the ones cited)."""
    out = dict(facts)
    if reviews:
        # counts and quote apart: a quote may end a sentence ("合身。。。"), and a value that does
        # is read by the checker as text, not as a plain value whose numbers ground a claim
        extra = {f"reviews {a['aspect']}": f"{a['positive']} of {a['mentions']} reviews positive" for a in reviews}
        extra |= {f"review quote {a['aspect']}": a["quote"] for a in reviews if a.get("quote")}
        out["attributes"] = {**(facts.get("attributes") or {}), **extra}
    return out


def plan_answer(
    question: str,
    facts: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    matcher: QuestionMatcher,
) -> Plan:
    """Read the question, find its facts or reviews, and write the template answer (or abstain)."""
    lang = language_of(question)
    keys = _fact_keys(facts)
    values = {
        k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in (facts.get("attributes") or {}).items()
    }
    concepts, how = matcher.concepts(question, keys, values)
    intent = review_intent(question)
    answers: list[dict[str, Any]] = []
    if not intent:
        for concept in concepts:
            answers += _fact_answers(concept, facts, keys, lang)
    if answers:
        seen, kept = set(), []
        for a in answers:
            if a["key"] not in seen:
                seen.add(a["key"])
                kept.append(a)
        return Plan(
            "facts",
            lang,
            " ".join(a["sentence"] for a in kept),
            [{"type": "fact", "key": a["key"], "value": a["value"]} for a in kept],
            concepts,
            how,
            dict(facts),
            [v for a in kept for v in (a["value"] if isinstance(a["value"], list) else [a["value"]])],
        )
    reviews = _review_answers(concepts, summary, question, intent)
    if reviews:
        return Plan(
            "reviews",
            lang,
            " ".join(_review_sentence(a, lang) for a in reviews),
            [
                {
                    "type": "review",
                    "aspect": a["aspect"],
                    "positive": a["positive"],
                    "mentions": a["mentions"],
                    "quote": a.get("quote"),
                }
                for a in reviews
            ],  # fmt: skip
            concepts,
            how,
            evidence_facts(facts, reviews),
            [f"{a['positive']}" for a in reviews],
        )
    return Plan("abstain", lang, NOT_LISTED[lang], [], concepts, how, dict(facts), [])


def mentions_value(text: str, values: list[Any]) -> bool:
    """Whether an answer names one of the values it was asked for (normalized, either script)."""
    low = _norm(text).replace(",", "")
    for v in values:
        s = _norm(v).replace(",", "")
        if s and s in low:
            return True
        number = re.match(r"^(\d+(?:\.\d+)?)", s)
        if number and number.group(1) in low:
            return True
    return False


def is_abstention(text: str) -> bool:
    t = _norm(text)
    return any(_norm(v).rstrip(".。") in t for v in NOT_LISTED.values()) or "not listed" in t


def answer_messages(question: str, plan: Plan) -> list[dict[str, str]]:
    """The generator's messages for a planned answer: only the evidence the plan found (the facts
    the question asks about, or the cited review summaries), never the whole catalog entry."""
    from ml.prompts import qa_messages

    cited = {c["key"] for c in plan.citations if c["type"] == "fact"}
    facts = {k: v for k, v in plan.evidence.items() if k in ("title", "brand", "category", "price", "currency")}
    attributes = {k: v for k, v in (plan.evidence.get("attributes") or {}).items() if k in cited}
    if attributes:
        facts["attributes"] = attributes
    reviews = [
        {k: c[k] for k in ("aspect", "positive", "mentions", "quote")} for c in plan.citations if c["type"] == "review"
    ]
    return qa_messages(question, facts, reviews)


_COUNT_EN = re.compile(r"(\d+) (?:out )?of (?:the )?(\d+)")
_COUNT_ZH = re.compile(r"(\d+)\s*条(?:评价|评论)?中(?:有)?\s*(\d+)")


def counts_agree(text: str, plan: Plan) -> bool:
    """A review count in an answer ("3 of 4", "4条评价中有3条") must be a cited aspect's own pair:
    the grounding checker only asks that each number appear somewhere in the evidence."""
    pairs = {(c["positive"], c["mentions"]) for c in plan.citations if c["type"] == "review"}
    said = [(int(a), int(b)) for a, b in _COUNT_EN.findall(text)]
    said += [(int(b), int(a)) for a, b in _COUNT_ZH.findall(text)]
    return all(pair in pairs for pair in said) if pairs else True
