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
        """Put refreshed entries and drop the ones they supersede: the same product, content type
        and model under other facts, in every segment (a refresh regenerated the page of segment
        "all"; the pages of other segments were written from the old facts and would never be
        found again, only take room). Returns the dropped."""
        fresh = {(k.product_id, k.content_type, k.model_version): k.facts_hash for k, _ in entries}
        stale = [
            k
            for k in self._data
            if fresh.get((k.product_id, k.content_type, k.model_version), k.facts_hash) != k.facts_hash
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


def template_page(facts: dict[str, Any], cares: list[str] | None = None) -> dict[str, Any]:
    """Product-page sections built only from the facts: always grounded, never generated.

    `cares` (`ml.segments.SegmentIndex.cares_about`) writes it for a segment: the highlights and
    the description's sentences lead with what the segment reads first (the price, the brand,
    its category's attributes); None or [] is the page of segment "all"."""
    from ml.segments import segment_highlights

    cares = list(cares or [])
    title = facts.get("title", "")
    attributes = facts.get("attributes", {}) or {}
    if cares:  # the segment's attributes first, then the catalog's order
        attributes = dict(sorted(attributes.items(), key=lambda kv: _care_rank(kv[0], cares)))
    highlights = [highlight(k, v) for k, v in list(attributes.items())[:5]]
    if facts.get("brand"):
        highlights.insert(0, f"Brand: {facts['brand']}")
    # Prose from the facts alone: what the product is, who makes it, its attributes, its price (a
    # description that only repeats the title is what the copy gate calls degenerate).
    parts: list[tuple[str, str]] = []  # (what the sentence is about, the sentence)
    leaf = (facts.get("category") or "").split(">")[-1].strip()
    if facts.get("brand") and leaf:
        parts.append(("brand", f"From {facts['brand']}, in {leaf}."))
    elif facts.get("brand") or leaf:
        parts.append(("brand", f"From {facts['brand']}." if facts.get("brand") else f"In {leaf}."))
    details = [highlight(k, v) for k, v in list(attributes.items())[:4]]
    if details:
        first = next(iter(attributes))
        parts.append((first, "; ".join(details[:1] + [d[:1].lower() + d[1:] for d in details[1:]]) + "."))
    if facts.get("price") is not None:
        parts.append(("price", f"Price: {_price(facts['price'])} {facts.get('currency') or ''}".rstrip() + "."))
    if cares:
        parts.sort(key=lambda part: _care_rank(part[0], cares))
        return {
            "title": title,
            "highlights": segment_highlights(highlights[:5], facts, cares, limit=5),
            "description": " ".join([title.rstrip(".") + "."] + [text for _, text in parts]),
        }
    return {
        "title": title,
        "highlights": highlights[:5],
        "description": " ".join([title.rstrip(".") + "."] + [t for _, t in parts]),
    }


def _care_rank(key: str, cares: list[str]) -> int:
    key = key.lower().replace("_", " ")
    return next((i for i, c in enumerate(cares) if c.replace("_", " ") == key), len(cares))


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
