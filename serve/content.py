"""Content cache, template copy and the batch job's precomputed pages and reasons.

Cache key: (product, content type, user segment, model version, facts hash). A changed fact
changes the hash, so a stale entry can never be served: it simply stops being found. The batch
job's precomputed product pages and reasons are loaded at start-up under the same keys.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
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

    def peek(self, key: CacheKey) -> Any | None:
        """The value without counting a hit or refreshing its place (exports, not serving)."""
        return self._data.get(key)

    def pop(self, key: CacheKey) -> int:
        """Drop `key`; 1 if it was there (erasure purges what a user's history produced)."""
        return 0 if self._data.pop(key, None) is None else 1

    def replace(self, entries: list[tuple[CacheKey, Any]]) -> int:
        """Put refreshed entries and drop the ones they supersede: the same product, content type,
        segment and model under other facts (a refresh regenerated them). Returns the dropped."""
        fresh = {(k.product_id, k.content_type, k.segment, k.model_version): k.facts_hash for k, _ in entries}
        stale = [
            k
            for k in self._data
            if fresh.get((k.product_id, k.content_type, k.segment, k.model_version), k.facts_hash) != k.facts_hash
        ]
        for k in stale:
            del self._data[k]
        for k, v in entries:
            self.put(k, v)
        return len(stale)

    def __len__(self) -> int:
        return len(self._data)


class _Entries:
    """Collects what the loaders would put into a cache (a reload builds them off the event loop)."""

    def __init__(self):
        self.entries: list[tuple[CacheKey, Any]] = []

    def put(self, key: CacheKey, value: Any) -> None:
        self.entries.append((key, value))


_HIGHLIGHT_KEY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 _-]{0,39}):\s+(\S.*)$", re.S)


def highlight(key: str, value: Any) -> str:
    """One highlight as the shop shows it: 'Brand: Brewly', 'Color: green', 'Screen size: 6 in'.
    The catalog's attribute names are lower-case keys; the shopper sees them capitalised.
    A multi-valued attribute shows every value: 'Style: retro, minimal'."""
    from core.facts import attribute_text

    label = key.replace("_", " ").strip()
    return f"{label[:1].upper()}{label[1:]}: {attribute_text(value)}"


def tidy_highlight(text: str) -> str:
    """A 'key: value' highlight (template or generated copy) in `highlight`'s style; other text as is."""
    m = _HIGHLIGHT_KEY.match(text)
    return highlight(m.group(1), m.group(2)) if m else text


def template_page(facts: dict[str, Any]) -> dict[str, Any]:
    """Product-page sections built only from the facts: always grounded, never generated.
    In the product's own language (`core.facts.facts_language`: Chinese for a Chinese title)."""
    from core.facts import facts_language

    if facts_language(facts) == "zh":
        return template_page_zh(facts)
    title = facts.get("title", "")
    attributes = facts.get("attributes", {}) or {}
    highlights = [highlight(k, v) for k, v in list(attributes.items())[:5]]
    if facts.get("brand"):
        highlights.insert(0, f"Brand: {facts['brand']}")
    # Prose from the facts alone: what the product is, who makes it, its attributes, its price (a
    # description that only repeats the title is what the copy gate calls degenerate).
    parts = [title.rstrip(".") + "."]
    leaf = (facts.get("category") or "").split(">")[-1].strip()
    if facts.get("brand") and leaf:
        parts.append(f"From {facts['brand']}, in {leaf}.")
    elif facts.get("brand") or leaf:
        parts.append(f"From {facts['brand']}." if facts.get("brand") else f"In {leaf}.")
    details = [highlight(k, v) for k, v in list(attributes.items())[:4]]
    if details:
        parts.append("; ".join(details[:1] + [d[:1].lower() + d[1:] for d in details[1:]]) + ".")
    if facts.get("price") is not None:
        parts.append(f"Price: {_price(facts['price'])} {facts.get('currency') or ''}".rstrip() + ".")
    return {"title": title, "highlights": highlights[:5], "description": " ".join(parts)}


def template_page_zh(facts: dict[str, Any]) -> dict[str, Any]:
    """`template_page` in Chinese: '品牌：森屿', '材质：纯棉', and prose that states the facts only:
    '森屿 A12 纯棉T恤 白色。森屿出品，属于T恤。材质为纯棉，版型为宽松。价格：129元。'"""
    title = str(facts.get("title", ""))
    attributes = facts.get("attributes", {}) or {}

    def value(v: Any) -> str:
        return "、".join(map(str, v)) if isinstance(v, list | tuple) else str(v)

    highlights = [f"{k}：{value(v)}" for k, v in list(attributes.items())[:5]]
    brand = facts.get("brand")
    if brand:
        highlights.insert(0, f"品牌：{brand}")
    kind = attributes.get("类型")
    if title:
        parts = [title.rstrip("。.") + "。"]
    else:  # a catalog of attributes only (AdvertiseGen's 类型#裤*风格#简约): what it is, from them
        parts = [f"这是一款{value(kind)}。"] if kind else []
    leaf = (facts.get("category") or "").split(">")[-1].strip()
    if brand and leaf:
        parts.append(f"{brand}出品，属于{leaf}。")
    elif brand or leaf:
        parts.append(f"{brand}出品。" if brand else f"属于{leaf}。")
    details = [f"{k}为{value(v)}" for k, v in attributes.items() if not (k == "类型" and not title)][:8]
    if details:
        parts.append("，".join(details) + "。")
    if facts.get("price") is not None:
        currency = facts.get("currency") or ""
        amount = _price(facts["price"])
        parts.append(
            f"价格：{amount}元。" if currency in ("CNY", "RMB") else f"价格：{amount} {currency}".rstrip() + "。"
        )
    return {"title": title, "highlights": highlights[:5], "description": "".join(parts)}


def _price(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.0f}" if number.is_integer() else f"{number:.2f}"


def generator_model_dir(cfg) -> Path:
    """The fine-tuned generator if one was exported, else the configured base model."""
    from core.layout import ArtifactLayout
    from ml.base_model import resolve_generator_dir

    exported = Path(ArtifactLayout(cfg.artifacts.root).generator)
    if (exported / "shopgraph-manifest.json").exists() and (exported / "config.json").exists():
        return exported
    return resolve_generator_dir(cfg.models.dir, cfg.models.generator)


def generator_version(cfg) -> str:
    """The version the batch job stamps on its content (train/batch_generate.py): the model's
    manifest `model_version`, else the first 12 hex of its weights' sha256."""
    from core.manifest import read_manifest

    try:
        manifest = read_manifest(generator_model_dir(cfg))
    except Exception:
        return "unknown"
    return (
        manifest.get("meta", {}).get("model_version")
        or manifest["files"].get("model.safetensors", {}).get("sha256", "")[:12]
        or "unknown"
    )


REASON_COLUMNS = ("product_id", "key", "model_version", "facts_hash", "text")


def load_precomputed(cfg, cache, model_version: str, catalog) -> int:
    """Load the batch job's content whose facts hash and model still match: product pages
    (`<content>/*.parquet`) and reasons (`<content>/reasons/*.parquet`, under
    `CacheKey(product_id, "reason", key, model_version, facts_hash)`). Returns the entries loaded;
    what was skipped, and why, is logged."""
    try:
        entries = read_precomputed(content_dir(cfg), model_version, catalog)
    except Exception:
        return 0  # no batch content yet: pages are generated (or templated) on demand
    for key, value in entries:
        cache.put(key, value)
    return len(entries)


def content_dir(cfg) -> Path:
    from core.layout import ArtifactLayout

    return Path(ArtifactLayout(cfg.artifacts.root).content)


def read_precomputed(root: Path, model_version: str, catalog) -> list[tuple[CacheKey, Any]]:
    """The cache entries of a committed content directory (`core.manifest.IncompleteDirError` for
    one that is not complete); reads files only, so a reload runs it off the event loop."""
    from core.manifest import verify_dir

    verify_dir(root)
    sink = _Entries()
    _load_pages(root, sink, model_version, catalog)
    load_precomputed_reasons(root / "reasons", sink, model_version, catalog)
    return sink.entries


def _current(row: dict, model_version: str, catalog) -> bool:
    """A precomputed row is served only for the model and the facts it was written from."""
    from serve.catalog import facts_hash

    product = catalog.products.get(row.get("product_id"))
    return (
        product is not None
        and row.get("model_version") == model_version
        and row.get("facts_hash") == facts_hash(product, catalog.currency)
    )


def _load_pages(root: Path, cache, model_version: str, catalog) -> int:
    import pyarrow.parquet as pq

    from ml.reasons import instruction_in_facts, publishable_description, publishable_highlights
    from serve.catalog import facts_of

    loaded = 0
    for path in sorted(root.glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if not _current(row, model_version, catalog):
                continue  # stale: the facts or the model changed since the batch job
            if not row.get("description"):
                continue
            # serving's page gates again: content written by an older gate is held to today's
            facts = facts_of(catalog.products[row["product_id"]], catalog.currency)
            description, why = publishable_description(row["description"], facts)
            if why or instruction_in_facts(facts):
                continue
            highlights = publishable_highlights(list(row.get("highlights") or []), facts)
            sections = {
                "title": facts.get("title") or row["title"],
                "highlights": highlights or template_page(facts)["highlights"],
                "description": description,
            }
            cache.put(CacheKey(row["product_id"], "page", "all", model_version, row["facts_hash"]), sections)
            loaded += 1
    return loaded


def load_precomputed_reasons(folder: Path, cache, model_version: str, catalog) -> int:
    """Generated reasons for likely (product, evidence) pairs: columns `product_id`, `key` (the
    segment `Ingress._reason_input` computes for the item), `model_version`, `facts_hash`, `text`.
    Stale rows (another model, changed facts, unknown product) and empty texts are skipped; a file
    without these columns is skipped whole. Both are logged with their counts."""
    import logging

    import pyarrow.parquet as pq

    log = logging.getLogger("shopgraph.serve")
    loaded, skipped = 0, {"stale": 0, "empty": 0}
    for path in sorted(Path(folder).glob("*.parquet")) if Path(folder).is_dir() else []:
        table = pq.read_table(path)
        missing = [c for c in REASON_COLUMNS if c not in table.column_names]
        if missing:
            log.warning("precomputed reasons %s skipped: no column(s) %s", path.name, ", ".join(missing))
            continue
        for row in table.select(list(REASON_COLUMNS)).to_pylist():
            if not _current(row, model_version, catalog):
                skipped["stale"] += 1
            elif not (row["text"] or "").strip() or row["key"] is None:
                skipped["empty"] += 1
            else:
                cache.put(
                    CacheKey(row["product_id"], "reason", row["key"], model_version, row["facts_hash"]),
                    row["text"].strip(),
                )
                loaded += 1
    if any(skipped.values()):
        log.info("precomputed reasons: %d loaded, skipped %s", loaded, skipped)
    return loaded


def load_review_summaries(cfg) -> dict[str, dict]:
    """product_id -> its review summary (`ml.aspects`, written by `shopgraph train sentiment`);
    empty when none were built. A damaged directory is logged and skipped: pages still serve."""
    import json
    import logging

    from core.layout import ArtifactLayout
    from core.manifest import IncompleteDirError, verify_dir
    from core.runtime import local_dir

    try:
        root = local_dir(ArtifactLayout(cfg.artifacts.root).review_summaries)
        if not root.exists():
            return {}
        if verify_dir(root)["meta"].get("skipped"):
            return {}
        with (root / "summaries.jsonl").open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (IncompleteDirError, ValueError, OSError) as e:
        logging.getLogger("shopgraph.serve").warning("review summaries not loaded: %s", e)
        return {}
    return {r["product_id"]: r["summary"] for r in rows}
