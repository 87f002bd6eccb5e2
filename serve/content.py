"""Content cache and template copy for the generator.

Cache key: (product, content type, user segment, model version, facts hash). A changed fact
changes the hash, so a stale entry can never be served: it simply stops being found. The batch
job's precomputed product-page content is loaded at start-up under the same keys.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CacheKey:
    product_id: str
    content_type: str  # "page" | "reason"
    segment: str
    model_version: str
    facts_hash: str


class ContentCache:
    """A small LRU; one per generator replica."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: OrderedDict[CacheKey, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> Any | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: Any) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def template_page(facts: dict[str, Any]) -> dict[str, Any]:
    """Product-page sections built only from the facts: always grounded, never generated."""
    title = facts.get("title", "")
    attributes = facts.get("attributes", {}) or {}
    highlights = [f"{k}: {v}" for k, v in list(attributes.items())[:5]]
    if facts.get("brand"):
        highlights.insert(0, f"Brand: {facts['brand']}")
    parts = [title + "."]
    if facts.get("brand") and facts.get("category"):
        parts.append(f"A {facts['category'].split(' > ')[-1].lower()} product from {facts['brand']}.")
    if "price" in facts:
        parts.append(f"Price: {facts['price']} {facts.get('currency', '')}".rstrip() + ".")
    return {"title": title, "highlights": highlights[:5], "description": " ".join(parts)}
