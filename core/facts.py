"""Product facts: what a generator may state about a product, serialized one way everywhere.

    from core.facts import facts_of, facts_hash, serialize_facts

The corpus (data.corpus), the prompts (ml.prompts), batch content (train.batch_generate)
and serving's content cache (serve.catalog) all serialize a product's facts with these
functions, so `facts_hash` keys the same text in every one of them. Serialization is
deterministic: fixed key order, attributes sorted, NFC-normalized whitespace-collapsed text,
prices rounded to cents, Unicode kept (`材质=牛仔布` stays readable).
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any


def clean_text(value: Any) -> str:
    """Text as facts hold it: NFC-normalized, whitespace collapsed; None -> ""."""
    return " ".join(unicodedata.normalize("NFC", str(value)).split()) if value is not None else ""


def _number(value: float) -> int | float:
    # Cents are the precision a price has; 20.0 and 20 serialize the same.
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


def _attributes(value: Any) -> dict[str, str]:
    pairs = value.items() if isinstance(value, Mapping) else (value or [])
    out = {clean_text(k): clean_text(v) for k, v in pairs}
    return {k: out[k] for k in sorted(out) if k and out[k]}


def facts_of(product: Mapping[str, Any], currency: str | None = None) -> dict[str, Any]:
    """The facts a generator may state, normalized, in a fixed key order; empty values omitted.

    Description (the reference), stock and timestamps are left out: they are not facts to
    copy, and stock changes would invalidate every cached text keyed by `facts_hash`.
    """
    facts: dict[str, Any] = {}
    for key in ("title", "brand", "category"):
        if text := clean_text(product.get(key)):
            facts[key] = text
    price = product.get("price")
    if price is not None and math.isfinite(float(price)):
        facts["price"] = _number(price)
        if currency := currency or product.get("currency"):
            facts["currency"] = clean_text(currency)
    if attributes := _attributes(product.get("attributes")):
        facts["attributes"] = attributes
    return facts


def serialize_facts(product: Mapping[str, Any], currency: str | None = None) -> str:
    """One-line JSON of `facts_of(product)`; `<` escaped, so no catalog text can open or close a tag.

    `>` stays readable: category paths ("Toys > Trains") use it, and no tag forms without `<`.
    """
    s = json.dumps(facts_of(product, currency), ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
    return s.replace("<", "\\u003c")


def parse_facts(serialized: str) -> dict[str, Any]:
    return json.loads(serialized)


def facts_hash(product: Mapping[str, Any], currency: str | None = None) -> str:
    return hashlib.sha256(serialize_facts(product, currency).encode("utf-8")).hexdigest()
