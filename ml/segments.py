"""Shopper segments: who a product page is written for.

    from ml.segments import SegmentIndex, accept_language

A segment is a small description of a shopper built from their history: the top-level category
and the brand they keep coming back to, the price band they buy in (relative to each category's
own prices) and their language. Its id is short and readable,
`cat:Electronics|brand:Voltix|price:low|lang:en`, and anonymous or new shoppers are `all`.
Pages are generated and cached per segment, so the number of segments is kept bounded: only the
`serve.segments.top_categories` / `top_brands` names with the most products appear in an id
(a shopper whose favourite is rarer gets `other`), a share under `min_share` is `any`, and
`dimensions` can leave whole parts out.

What a segment changes on a page (`cares_about`): a shopper buying low in their categories
reads the price first, one loyal to the product's brand the brand first, and one whose favourite
category is the product's reads that category's attributes (the keys most of its products
have) first. The order applies to generated and template copy alike, and adds nothing the
facts do not hold (the price highlight is the catalog's price), so both stay grounded by the
same checker as before.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL = "all"
OTHER, ANY = "other", "any"
PRICE_BANDS = ("low", "mid", "high")
DIMENSIONS = ("category", "brand", "price", "language")
_PREFIX = {"category": "cat", "brand": "brand", "price": "price", "language": "lang"}
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_UNSAFE = re.compile(r"[|:\s]+")
# One Accept-Language entry: a tag (or *) and an optional weight (RFC 9110 12.5.4).
_LANG_ENTRY = re.compile(
    r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?))?\s*$"
)


def _name(value: str) -> str:
    """A category or brand as it appears in an id: no separator characters, at most 40 characters."""
    return _UNSAFE.sub(" ", value).strip()[:40] or ANY


@dataclass(frozen=True)
class Segment:
    """One segment; `None` parts are left out of the id (not a configured dimension)."""

    category: str | None = None
    brand: str | None = None
    price: str | None = None
    language: str | None = None

    @property
    def id(self) -> str:
        parts = [(d, getattr(self, d)) for d in DIMENSIONS]
        if all(v is None for _, v in parts):
            return ALL
        return "|".join(f"{_PREFIX[d]}:{v}" for d, v in parts if v is not None)

    @property
    def is_all(self) -> bool:
        return self.id == ALL

    @classmethod
    def parse(cls, segment_id: str) -> Segment:
        """The segment an id names (`Segment.id`'s inverse); ValueError saying what is wrong."""
        if segment_id == ALL:
            return cls()
        got: dict[str, str] = {}
        by_prefix = {p: d for d, p in _PREFIX.items()}
        for part in segment_id.split("|"):
            prefix, sep, value = part.partition(":")
            if not sep or prefix not in by_prefix or not value or by_prefix[prefix] in got:
                raise ValueError(
                    f"segment {segment_id[:80]!r} has part {part[:40]!r}; use 'all' or parts like 'cat:Shoes|price:low'"
                )
            got[by_prefix[prefix]] = value
        if got.get("price") not in (None, ANY, *PRICE_BANDS):
            raise ValueError(f"segment price band is {got['price']!r}; use one of {', '.join((*PRICE_BANDS, ANY))}")
        return cls(**got)


ALL_SEGMENT = Segment()


def accept_language(header: str | None, supported: Sequence[str]) -> str | None:
    """The supported language an `Accept-Language` header prefers most (by weight, then order;
    a region tag `zh-CN` counts as `zh`), or None when it names none of them. A header that does
    not parse raises ValueError saying what to send."""
    if header is None or not header.strip():
        return None
    best: tuple[float, int, str] | None = None
    for n, entry in enumerate(header.split(",")):
        if not entry.strip():
            continue
        m = _LANG_ENTRY.match(entry)
        if m is None:
            raise ValueError(
                f"Accept-Language has entry {entry.strip()[:40]!r}; send language tags with optional weights, "
                "such as 'zh-CN,zh;q=0.9,en;q=0.8'"
            )
        tag, weight = m.group(1).lower().split("-")[0], float(m.group(2) or 1)
        if weight > 0 and tag in supported and (best is None or (-weight, n) < (-best[0], best[1])):
            best = (weight, n, tag)
    return best[2] if best else None


def _department(category: str | None) -> str | None:
    return category.split(">")[0].strip() or None if category else None


def _field(product: Any, name: str) -> Any:
    return product.get(name) if isinstance(product, Mapping) else getattr(product, name, None)


def _terciles(prices: list[float]) -> tuple[float, float] | None:
    if len(prices) < 3:
        return None
    s = sorted(prices)
    return s[len(s) // 3], s[(2 * len(s)) // 3]


class SegmentIndex:
    """What segments are computed from, built once per replica from the catalog's products
    (anything with `category`, `brand`, `price`, `attributes`, `title`: serve's `Product`, a dict)."""

    def __init__(self, products: Iterable[Any], cfg):
        self.cfg = cfg
        departments: Counter[str] = Counter()
        brands: Counter[str] = Counter()
        prices: dict[str, list[float]] = {}
        dept_prices: dict[str, list[float]] = {}
        keys: dict[str, Counter[str]] = {}
        for p in products:
            category, brand, price = _field(p, "category"), _field(p, "brand"), _field(p, "price")
            if dept := _department(category):
                departments[dept] += 1
            if brand:
                brands[brand] += 1
            if price is not None and category:
                prices.setdefault(category, []).append(float(price))
                dept_prices.setdefault(_department(category) or "", []).append(float(price))
            for key in dict(_field(p, "attributes") or {}):
                keys.setdefault(category or "", Counter())[key] += 1
        # ties broken by name: every replica of one catalog names the same top-k
        self.top_categories = {
            c for c, _ in sorted(departments.items(), key=lambda x: (-x[1], x[0]))[: cfg.top_categories]
        }
        self.top_brands = {b for b, _ in sorted(brands.items(), key=lambda x: (-x[1], x[0]))[: cfg.top_brands]}
        self._cuts = {c: t for c, ps in prices.items() if (t := _terciles(ps))}
        self._dept_cuts = {d: t for d, ps in dept_prices.items() if (t := _terciles(ps))}
        self._global_cuts = _terciles([x for ps in prices.values() for x in ps])
        # "the attributes that matter in a category": the keys most of its products have
        self.category_keys = {
            c: [k for k, _ in sorted(counter.items(), key=lambda x: (-x[1], x[0]))] for c, counter in keys.items()
        }

    # -- a shopper's segment

    def band(self, category: str | None, price: float | None) -> str | None:
        """low / mid / high: where `price` sits among its category's prices (terciles; the
        department's or the whole catalog's when the category has under 3 priced products)."""
        if price is None:
            return None
        cuts = self._cuts.get(category or "") or self._dept_cuts.get(_department(category) or "") or self._global_cuts
        if cuts is None:
            return None
        return "low" if price < cuts[0] else "high" if price >= cuts[1] else "mid"

    def _affinity(self, values: list[str], top: set[str]) -> str:
        if not values:
            return ANY
        value, count = sorted(Counter(values).items(), key=lambda x: (-x[1], x[0]))[0]
        if count / len(values) < self.cfg.min_share:
            return ANY
        return _name(value) if value in top else OTHER

    def segment_of(self, history: Sequence[Any], accept_language_header: str | None = None) -> Segment:
        """The segment of a shopper whose history (oldest first) holds these products; `all` when
        segments are off or the shopper has no history (anonymous, new, erased). ValueError for a
        malformed Accept-Language header."""
        lang = accept_language(accept_language_header, self.cfg.languages)  # checked even when unused
        if not self.cfg.enabled or not history:
            return ALL_SEGMENT
        dims = set(self.cfg.dimensions)
        parts: dict[str, str] = {}
        if "category" in dims:
            depts = [d for p in history if (d := _department(_field(p, "category")))]
            parts["category"] = self._affinity(depts, self.top_categories)
        if "brand" in dims:
            parts["brand"] = self._affinity([b for p in history if (b := _field(p, "brand"))], self.top_brands)
        if "price" in dims:
            bands = [b for p in history if (b := self.band(_field(p, "category"), _field(p, "price")))]
            if not bands:
                parts["price"] = ANY
            else:  # the mean position of the shopper's items among their categories' prices
                mean = sum(PRICE_BANDS.index(b) for b in bands) / len(bands)
                parts["price"] = "low" if mean < 2 / 3 else "high" if mean > 4 / 3 else "mid"
        if "language" in dims:
            if lang is None:
                titles = [str(_field(p, "title") or "") for p in history]
                zh = sum(bool(_CJK.search(t)) for t in titles) * 2 > len(titles)
                lang = "zh" if zh and "zh" in self.cfg.languages else self.cfg.languages[0]
            parts["language"] = lang
        return Segment(**parts)

    # -- what the segment changes on a page

    def cares_about(self, segment: Segment, facts: Mapping[str, Any]) -> list[str]:
        """Highlight labels (lower-case: 'price', 'brand', attribute keys) this segment reads
        first on this product's page, most important first; [] for `all` or nothing that applies."""
        if segment.is_all:
            return []
        cares: list[str] = []
        if segment.price == "low" and facts.get("price") is not None:
            cares.append("price")
        if segment.brand not in (None, ANY, OTHER) and segment.brand == _name(str(facts.get("brand") or "")):
            cares.append("brand")
        category = facts.get("category")
        if segment.category not in (None, ANY, OTHER) and segment.category == _name(_department(category) or ""):
            attributes = dict(facts.get("attributes") or {})
            cares += [k.lower() for k in self.category_keys.get(category or "", []) if k in attributes]
        if segment.price == "high":  # buying at the top of the range: who makes it and what it is made of
            cares += [k for k in ("brand", "material") if k not in cares]
        return list(dict.fromkeys(cares))

    def profile(self, segment: Segment, facts: Mapping[str, Any]) -> dict[str, Any] | None:
        """The generator's `<profile>` for a page written for `segment` (None for `all`: the
        prompt the model was trained on, unchanged). Only what the segment is, never a user."""
        if segment.is_all:
            return None
        profile: dict[str, Any] = {"segment": segment.id}
        if segment.category not in (None, ANY, OTHER):
            profile["favourite_category"] = segment.category
        if segment.brand not in (None, ANY, OTHER):
            profile["favourite_brand"] = segment.brand
        if segment.price not in (None, ANY):
            profile["price_band"] = segment.price
        if segment.language:
            profile["language"] = segment.language
        profile["cares_about"] = self.cares_about(segment, facts)
        return profile


def label(highlight: str) -> str:
    """The lower-case label of a 'Key: value' highlight ('' for one without)."""
    key, sep, _ = highlight.partition(":")
    return key.strip().lower().replace("_", " ") if sep else ""


def order_highlights(highlights: Sequence[str], cares: Sequence[str]) -> list[str]:
    """Highlights with what the segment cares about first (in `cares` order); the rest keep
    their order. A stable sort: nothing is added or dropped."""
    rank = {c.replace("_", " "): i for i, c in enumerate(cares)}
    return sorted(highlights, key=lambda h: rank.get(label(h), len(rank)))


def price_highlight(facts: Mapping[str, Any]) -> str | None:
    """'Price: 12.99 USD' from the facts (the template's wording), or None without a price."""
    price = facts.get("price")
    if price is None:
        return None
    try:
        number = float(price)
        text = f"{number:.0f}" if number.is_integer() else f"{number:.2f}"
    except (TypeError, ValueError):
        text = str(price)
    return f"Price: {text} {facts.get('currency') or ''}".rstrip()


def segment_highlights(
    highlights: Sequence[str], facts: Mapping[str, Any], cares: Sequence[str], limit: int = 6
) -> list[str]:
    """A page's (grounded) highlights for a segment: the catalog price added when the segment
    reads price first and no highlight states it, then ordered by `cares`, at most `limit`."""
    out = list(highlights)
    if "price" in cares and not any(label(h) == "price" for h in out) and (price := price_highlight(facts)):
        out.append(price)
    return order_highlights(out, cares)[:limit]
