"""Product facts: what a generator may state about a product, serialized one way everywhere.

    from core.facts import facts_of, facts_hash, serialize_facts

The corpus (data.corpus), the prompts (ml.prompts), batch content (train.batch_generate)
and serving's content cache (serve.catalog) all serialize a product's facts with these
functions, so `facts_hash` keys the same text in every one of them. Serialization is
deterministic: fixed key order, attributes sorted, NFC-normalized whitespace-collapsed text,
prices rounded to cents, Unicode kept (`材质=牛仔布` stays readable).

An attribute value is a string, or a list of strings when the catalog gives the key several
values (`{"风格": ["复古", "文艺", "简约"]}`, in source order, exact repeats dropped). A single
value serializes exactly as before lists existed, so existing `facts_hash` keys stay valid.
In the products table a multi-valued attribute is the key repeated in the `attributes` map
(core.schemas); `attribute_values` turns those pairs back into this form.

Facts are scrubbed of personal data (`core.pii`: an e-mail, phone or card number, address or ID
number a seller typed into a title or attribute becomes `[email]`, `[phone]`, ...), so no prompt,
corpus or cache key built from them holds it; text without personal data is unchanged, and so is
its `facts_hash`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from core.pii import scrub, scrub_value


def clean_text(value: Any) -> str:
    """Text as facts hold it: NFC-normalized, whitespace collapsed; None -> ""."""
    return " ".join(unicodedata.normalize("NFC", str(value)).split()) if value is not None else ""


def _number(value: float) -> int | float:
    # Cents are the precision a price has; 20.0 and 20 serialize the same.
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


class Values(list):
    """The values of a multi-valued attribute: a list (JSON array, what grounding checks one by
    one) that reads "a, b, c" wherever it is formatted as text (f"{key}: {value}" in highlights,
    embedding text), so code written for single values shows every value, not a Python repr."""

    def __str__(self) -> str:
        return ", ".join(self)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def attribute_values(value: Any) -> dict[str, str | list[str]]:
    """Attributes (a mapping, or key/value pairs where a key may repeat, as a Parquet map column
    reads) -> {key: value or Values}, keys in first-seen order, values cleaned (`clean_text`),
    empty and repeated values dropped, a key with one value left a plain string."""
    if value is None:
        return {}
    pairs = value.items() if isinstance(value, Mapping) else value
    grouped: dict[str, list[str]] = {}
    for k, v in pairs:
        key = clean_text(k)
        for item in v if isinstance(v, list | tuple) else [v]:
            text = clean_text(item)
            if key and text and text not in (seen := grouped.setdefault(key, [])):
                seen.append(text)
    return {k: vs[0] if len(vs) == 1 else Values(vs) for k, vs in grouped.items() if vs}


def attribute_text(value: Any) -> str:
    """An attribute value as one line of text: "a, b, c" for several values."""
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _attributes(value: Any) -> dict[str, str | list[str]]:
    out = attribute_values(value)
    return {k: out[k] for k in sorted(out)}


def facts_of(product: Mapping[str, Any], currency: str | None = None) -> dict[str, Any]:
    """The facts a generator may state, normalized, in a fixed key order; empty values omitted.

    Description (the reference), stock and timestamps are left out: they are not facts to
    copy, and stock changes would invalidate every cached text keyed by `facts_hash`.
    """
    facts: dict[str, Any] = {}
    for key in ("title", "brand", "category"):
        if text := scrub(clean_text(product.get(key))):
            facts[key] = text
    price = product.get("price")
    if price is not None and math.isfinite(float(price)):
        facts["price"] = _number(price)
        if currency := currency or product.get("currency"):
            facts["currency"] = clean_text(currency)
    if attributes := _attributes(product.get("attributes")):
        facts["attributes"] = scrub_value(attributes)
    return facts


def serialize_facts(product: Mapping[str, Any], currency: str | None = None) -> str:
    """One-line JSON of `facts_of(product)`; `<` escaped, so no catalog text can open or close a tag.

    `>` stays readable: category paths ("Toys > Trains") use it, and no tag forms without `<`.
    """
    s = json.dumps(facts_of(product, currency), ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
    return s.replace("<", "\\u003c")


def parse_facts(serialized: str) -> dict[str, Any]:
    """The facts dict back from `serialize_facts`; a multi-valued attribute comes back as `Values`."""
    facts = json.loads(serialized)
    if isinstance(attributes := facts.get("attributes"), dict):
        facts["attributes"] = {k: Values(v) if isinstance(v, list) else v for k, v in attributes.items()}
    return facts


def facts_hash(product: Mapping[str, Any], currency: str | None = None) -> str:
    return hashlib.sha256(serialize_facts(product, currency).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- language

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
ZH_SHARE = 0.5  # a Chinese character is about one word: 李宁 Running Shoes is English, 优衣库 X12 纯棉T恤 Chinese


def language_of(text: str | None) -> str:
    """ "zh" when Chinese characters are at least half of the text's words (each CJK character
    counts as one, each Latin word of 2+ letters as one), else "en". Digits and codes ("X12",
    "128GB" in a Chinese title) do not count either way."""
    text = text or ""
    cjk = len(_CJK_CHAR.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    return "zh" if cjk and cjk >= ZH_SHARE * (cjk + latin) else "en"


def facts_language(facts: Mapping[str, Any]) -> str:
    """The language of one product, from its own text: title, category and attribute values
    (the brand alone does not decide: a Chinese brand in an English shop is still English copy)."""
    attributes = facts.get("attributes") or {}
    values = " ".join(attribute_text(v) for v in attributes.values()) if isinstance(attributes, Mapping) else ""
    return language_of(" ".join([str(facts.get("title") or ""), str(facts.get("category") or ""), values]))
