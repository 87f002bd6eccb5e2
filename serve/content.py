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
    """The content cache of one ingress replica: a small in-process LRU, in front of a shared
    Redis (`SharedCache`) when `serve.cache.redis_url` is set, so copy generated through one
    replica is a hit through every other. The LRU alone without Redis, or while Redis is down."""

    def __init__(self, capacity: int, shared: SharedCache | None = None):
        self.capacity = capacity
        self.shared = shared
        self._data: OrderedDict[CacheKey, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.shared_hits = 0

    def get(self, key: CacheKey) -> Any | None:
        value = self._data.get(key)
        if value is None and self.shared is not None:
            value = self.shared.get(key)
            if value is not None:
                self.shared_hits += 1
                self._put_local(key, value)
        if value is None:
            self.misses += 1
            return None
        if key in self._data:  # not when the LRU holds nothing (capacity 0)
            self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: Any, share: bool = True) -> None:
        """Cache `value` here and, with `share` (generated copy), in the shared cache. The batch
        job's precomputed content is loaded by every replica itself (`share=False`)."""
        self._put_local(key, value)
        if share and self.shared is not None:
            self.shared.put(key, value)

    def _put_local(self, key: CacheKey, value: Any) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def own(self, owner: str, keys) -> None:
        """Note in the shared cache that `keys` were made from `owner`'s (a pseudonym's) history,
        so erasing them through any replica purges them (`purge_owner`)."""
        if self.shared is not None:
            self.shared.own(owner, keys)

    def purge_owner(self, owner: str) -> int:
        """Drop every shared entry made from `owner`'s history, here and in Redis; how many."""
        if self.shared is None:
            return 0
        keys = self.shared.purge_owner(owner)
        for k in keys:
            self._data.pop(k, None)
        return len(keys)

    def peek(self, key: CacheKey) -> Any | None:
        """The value without counting a hit or refreshing its place (exports, not serving)."""
        value = self._data.get(key)
        if value is None and self.shared is not None:
            value = self.shared.get(key)
        return value

    def pop(self, key: CacheKey) -> int:
        """Drop `key`; 1 if it was there (erasure purges what a user's history produced)."""
        shared = self.shared.pop(key) if self.shared is not None else 0
        return 1 if (self._data.pop(key, None) is not None or shared) else 0

    def replace(self, entries: list[tuple[CacheKey, Any]]) -> int:
        """Put refreshed entries and drop the ones they supersede: the same product, content type
        and model under other facts, in every segment (a refresh regenerated the page of segment
        "all"; the pages of other segments were written from the old facts and would never be
        found again, only take room). Returns the dropped. Local only: every replica reloads the
        refresh itself, and a superseded entry in the shared cache is under the old facts hash,
        which no request asks for any more (its TTL ends it)."""
        fresh = {(k.product_id, k.content_type, k.model_version): k.facts_hash for k, _ in entries}
        stale = [
            k
            for k in self._data
            if fresh.get((k.product_id, k.content_type, k.model_version), k.facts_hash) != k.facts_hash
        ]
        for k in stale:
            del self._data[k]
        for k, v in entries:
            self._put_local(k, v)
        return len(stale)

    def __len__(self) -> int:
        return len(self._data)


class SharedCache:
    """Generated copy in Redis, shared by every ingress replica (and surviving their restarts).

    Values are JSON under `<prefix>:c:<model>:<type>:<segment>:<facts hash>:<product>` with a TTL;
    `<prefix>:u:<pseudonym>` holds the keys made from one user's history, for erasure. Redis is
    an optimisation, never a dependency: every call has a short timeout, and after a failure the
    cache is skipped for `retry_after_s` (requests answer from the local LRU, generation or
    templates), counted in `errors`. Calls are synchronous: a local Redis answers in well under a
    millisecond, and the timeout bounds what a hung one can cost a request once per retry window."""

    def __init__(self, url: str, *, password: str | None = None, ttl_s: int = 86_400, timeout_ms: int = 50,
                 retry_after_s: float = 5.0, prefix: str = "shopgraph"):  # fmt: skip
        import redis

        self.client = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=timeout_ms / 1000,
            socket_connect_timeout=timeout_ms / 1000,
            retry=None,
            decode_responses=True,
        )
        self.ttl_s, self.retry_after_s, self.prefix = ttl_s, retry_after_s, prefix
        self.errors = 0
        self._down_until = 0.0

    def key(self, key: CacheKey) -> str:
        return f"{self.prefix}:c:{_key_json(key)}"

    def skipping(self) -> bool:
        """True while a recent failure has the cache skipped."""
        import time

        return time.monotonic() < self._down_until

    def _call(self, fn, default):
        import time

        if time.monotonic() < self._down_until:
            return default
        try:
            return fn()
        except Exception as e:  # redis.RedisError, OSError, a value that is not JSON
            import logging

            self.errors += 1
            self._down_until = time.monotonic() + self.retry_after_s
            logging.getLogger("shopgraph.serve").warning(
                "shared content cache skipped for %.0f s: %s", self.retry_after_s, type(e).__name__
            )
            return default

    def get(self, key: CacheKey) -> Any | None:
        import json

        raw = self._call(lambda: self.client.get(self.key(key)), None)
        return None if raw is None else json.loads(raw)

    def put(self, key: CacheKey, value: Any) -> None:
        import json

        self._call(lambda: self.client.set(self.key(key), json.dumps(value, ensure_ascii=False), ex=self.ttl_s), None)

    def pop(self, key: CacheKey) -> int:
        return int(self._call(lambda: self.client.delete(self.key(key)), 0) or 0)

    def own(self, owner: str, keys) -> None:
        def run():
            name = f"{self.prefix}:u:{owner}"
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(name, *[_key_json(k) for k in keys])
            pipe.expire(name, self.ttl_s)
            pipe.execute()

        if keys:
            self._call(run, None)

    def purge_owner(self, owner: str) -> list[CacheKey]:
        """Delete the entries noted for `owner` and the note; the keys deleted. Erasure must not
        silently skip Redis: a failure here raises (the erase answers 503 and can be retried)."""
        import json

        name = f"{self.prefix}:u:{owner}"
        keys = [CacheKey(*json.loads(m)) for m in self.client.smembers(name)]
        pipe = self.client.pipeline(transaction=True)
        for k in keys:
            pipe.delete(self.key(k))
        pipe.delete(name)
        pipe.execute()
        return keys


def shared_cache(cfg) -> SharedCache | None:
    """The Redis cache `serve.cache` names (`core.config.serve.CacheConfig`), or None."""
    import os

    if not cfg.redis_url:
        return None
    password = os.environ.get(cfg.password_env) if cfg.password_env else None
    return SharedCache(cfg.redis_url, password=password, ttl_s=cfg.ttl_s, timeout_ms=cfg.timeout_ms,
                       retry_after_s=cfg.retry_after_s, prefix=cfg.key_prefix)  # fmt: skip


def _key_json(key: CacheKey) -> str:
    """A cache key as one unambiguous string (ids and segments may hold any character)."""
    import json

    return json.dumps([key.product_id, key.content_type, key.segment, key.model_version, key.facts_hash],
                      ensure_ascii=False, separators=(",", ":"))  # fmt: skip


class _Entries:
    """Collects what the loaders would put into a cache (a reload builds them off the event loop)."""

    def __init__(self):
        self.entries: list[tuple[CacheKey, Any]] = []

    def put(self, key: CacheKey, value: Any, share: bool = True) -> None:
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
    its category's attributes); None or [] is the page of segment "all". In the product's own
    language (`core.facts.facts_language`: Chinese for a Chinese title, `template_page_zh`)."""
    from core.facts import facts_language
    from ml.segments import segment_highlights

    cares = list(cares or [])
    if facts_language(facts) == "zh":
        return template_page_zh(facts, cares)
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


def template_page_zh(facts: dict[str, Any], cares: list[str] | None = None) -> dict[str, Any]:
    """`template_page` in Chinese: '品牌：森屿', '材质：纯棉', and prose that states the facts only:
    '森屿 A12 纯棉T恤 白色。森屿出品，属于T恤。材质为纯棉，版型为宽松。价格：129元。'
    `cares` puts a segment's attributes first (the sentences keep their order)."""
    title = str(facts.get("title", ""))
    attributes = facts.get("attributes", {}) or {}
    if cares:
        attributes = dict(sorted(attributes.items(), key=lambda kv: _care_rank(kv[0], list(cares))))

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
        cache.put(key, value, share=False)
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
            cache.put(
                CacheKey(row["product_id"], "page", "all", model_version, row["facts_hash"]), sections, share=False
            )
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
                    share=False,
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
