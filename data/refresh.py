"""Incremental refresh: products changed in the online database -> embeddings and text index, in place.

    shopgraph data refresh --config configs/local.yaml      # + page content: train.refresh (watermark "refresh")
    python -m data.refresh --config configs/local.yaml      # embeddings + index only (watermark "refresh-index")

The shop writes products through the API (PUT / PATCH / DELETE /v1/products) into the online
database; each write moves `products.updated_at`. A run:

1. reads its watermark row (`refresh_watermarks`) and, with Ray Data `read_sql`, the products
   written after it, less `data.refresh.overlap_ms` (a write whose transaction committed after
   the last run read past its `updated_at` is still seen; re-applying a change is a no-op);
2. re-embeds only products whose embedding text (`data.embed.product_text`) is new or changed,
   on the embedding job's own actor pool (`data.embed.embed_products`): the committed
   embeddings record each text's hash (`text_sha256`), so a price or stock change, or a row
   read twice, embeds nothing;
3. updates the committed text index in place: the new vectors are appended, the rows of changed
   and deleted products are marked dead (a null `product_id` in ids.parquet, `dead_rows` in the
   manifest), for Flat, IVF and HNSW alike (HNSW cannot remove a vector); `LoadedIndex.search`
   skips dead rows. Past `data.refresh.rebuild_dead_fraction` dead rows the index is rebuilt in
   full from the refreshed embeddings. Embeddings, then index, are committed as whole
   directories (`core.manifest.staged_dir`), each replacing the old one atomically; the index
   records the digest of the embeddings it matches, and an index found behind its embeddings
   (a run cut off between the two commits) is rebuilt in full by the next run;
4. hands the live and deleted rows to a content step when one is given (`train.refresh` passes
   the page generator, which data/ must not import), which regenerates pages whose facts changed;
5. advances the watermark only after everything is committed, and returns a JSON summary.

Nothing changed since the watermark -> nothing is embedded or written ("no change since ...").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.layout import ArtifactLayout
from core.manifest import IncompleteDirError, staged_dir, verify_dir, write_manifest
from core.runtime import local_dir
from core.schemas import PRODUCTS
from data.embed import TEXT_BUILDER_VERSION, embed_products, embeddings_schema, load_item_ids, product_text, text_sha256
from ml.index import LoadedIndex, check_vectors, load_embeddings, load_index, vectors_of

log = logging.getLogger("shopgraph.refresh")

WATERMARK = "refresh"  # the whole refresh: embeddings, index and page content
INDEX_ONLY_WATERMARK = "refresh-index"  # `python -m data.refresh` alone: content is not its to advance past
LOCK_KEY = 715518  # PostgreSQL advisory lock of the refresh (core.store's migrations take 715517)
PRODUCT_COLUMNS = ("product_id", "title", "category", "brand", "price", "attributes", "description", "in_stock",
                   "stock", "updated_at", "deleted_at")  # fmt: skip


class ContentStep(Protocol):
    """What the refresh asks of a content generator (train.refresh implements it)."""

    def plan(self, live: list[dict[str, Any]], deleted: list[str]) -> list[str]:
        """Product ids whose content this step will regenerate or drop (nothing is done yet)."""
        ...

    def apply(self) -> dict[str, Any]:
        """Regenerate and commit what `plan` chose; returns its counts."""
        ...


# ---------------------------------------------------------------- reading the database


class Connect:
    """A picklable DB-API connection factory for `ray.data.read_sql`: sqlite3 for SQLite URLs,
    psycopg for PostgreSQL. The password comes from `$password_env` on the worker that connects
    (the rendered manifests put it into every Ray pod), never through the task's arguments."""

    def __init__(self, url: str, password_env: str | None = None):
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(
                f"online.database_url uses {self.backend}; the refresh reads SQLite or PostgreSQL (postgresql+psycopg://...)"
            )
        self.url = url
        self.password_env = password_env

    def __call__(self):
        import os

        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        if self.backend == "sqlite":
            import sqlite3

            return sqlite3.connect(parsed.database or ":memory:")
        import psycopg

        kwargs: dict[str, Any] = {k: v for k, v in parsed.query.items() if isinstance(v, str)}
        kwargs |= {"host": parsed.host, "port": parsed.port, "user": parsed.username, "dbname": parsed.database}
        password = parsed.password or (os.environ.get(self.password_env) if self.password_env else None)
        if password:
            kwargs["password"] = password
        return psycopg.connect(**{k: v for k, v in kwargs.items() if v is not None})


def read_changes(url: str, password_env: str | None, since_ms: int) -> list[dict[str, Any]]:
    """Every product row with `updated_at > since_ms` (deleted ones too), oldest write first, read
    with Ray Data `read_sql`; attributes decoded, in_stock a bool."""
    import ray.data

    # attributes as JSON text on both dialects: a JSON object column would become an Arrow struct
    # in Ray Data, with every row given every other row's keys (as nulls)
    columns = [f"CAST({c} AS TEXT) AS {c}" if c == "attributes" else c for c in PRODUCT_COLUMNS]
    sql = (
        f"SELECT {', '.join(columns)} FROM products WHERE updated_at > {int(since_ms)} ORDER BY updated_at, product_id"
    )
    rows = ray.data.read_sql(sql, Connect(url, password_env)).take_all()
    out = []
    for row in rows:
        row = {k: row.get(k) for k in PRODUCT_COLUMNS}
        attributes = row["attributes"]
        if isinstance(attributes, str | bytes):  # SQLite keeps JSON as text
            attributes = json.loads(attributes)
        row["attributes"] = attributes or {}
        row["in_stock"] = None if row["in_stock"] is None else bool(row["in_stock"])
        for key in ("updated_at", "deleted_at", "stock"):
            row[key] = None if row[key] is None else int(row[key])
        out.append(row)
    return sorted(out, key=lambda r: (r["updated_at"], r["product_id"]))


def check_watermark(row: dict[str, Any] | None, name: str, now_ms: int, skew_ms: int) -> int:
    """The watermark (ms) of a `refresh_watermarks` row, 0 when there is none; a clear error for a
    value that cannot be one (negative, not an integer, in the future)."""
    if row is None:
        return 0
    value = row.get("products_updated_at")
    fix = f"fix the row (name={name!r}) in table refresh_watermarks, or delete it to refresh every product written to the database"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"refresh watermark {name!r} has products_updated_at={value!r}, not milliseconds; {fix}")
    if value < 0:
        raise ValueError(f"refresh watermark {name!r} is negative ({value}); {fix}")
    if value > now_ms + skew_ms:
        raise ValueError(
            f"refresh watermark {name!r} lies in the future ({_iso(value)}, now {_iso(now_ms)}): changes before it "
            f"would be skipped; {fix}"
        )
    return value


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- planning


@dataclass
class Plan:
    """What a set of database rows asks of the committed embeddings."""

    embed: list[dict[str, Any]] = field(default_factory=list)  # live rows whose text is new or changed
    remove: set[str] = field(default_factory=set)  # products whose current vector goes (changed or deleted)
    live: list[dict[str, Any]] = field(default_factory=list)  # every live row read
    deleted: list[str] = field(default_factory=list)  # every deleted product read


def plan_changes(rows: list[dict[str, Any]], known_text: dict[str, str | None]) -> Plan:
    """`known_text`: product_id -> text_sha256 of its committed vector (None: hash unknown)."""
    plan = Plan()
    for row in rows:
        pid = row["product_id"]
        if row.get("deleted_at") is not None:
            plan.deleted.append(pid)
            if pid in known_text:
                plan.remove.add(pid)
            continue
        plan.live.append(row)
        if known_text.get(pid, "") != text_sha256(product_text(row)):
            plan.embed.append(row)
            if pid in known_text:
                plan.remove.add(pid)
    return plan


def known_text_hashes(embeddings: pa.Table, layout: ArtifactLayout) -> dict[str, str | None]:
    """product_id -> text hash of its committed vector. Rows embedded before the hash column existed
    take it from the products shard set they were embedded from (not found: None, re-embedded)."""
    pids = embeddings["product_id"].to_pylist()
    if "text_sha256" in embeddings.column_names:
        hashes = dict(zip(pids, embeddings["text_sha256"].to_pylist(), strict=True))
    else:
        hashes = dict.fromkeys(pids)
    unknown = {pid for pid, h in hashes.items() if h is None}
    if not unknown:
        return hashes
    from data.inputs import load_products

    try:
        catalog = load_products(layout)
    except FileNotFoundError:
        return hashes
    catalog = catalog.filter(pc.is_in(catalog["product_id"], value_set=pa.array(sorted(unknown), pa.string())))
    for row in catalog.select(["product_id", "title", "brand", "category", "attributes"]).to_pylist():
        hashes[row["product_id"]] = text_sha256(product_text(row))
    return hashes


def products_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Database rows as a `core.schemas.PRODUCTS` table (a multi-valued attribute: the key repeated)."""

    def pairs(attributes: dict[str, Any]) -> list[tuple[str, str]]:
        values = ((k, x) for k, v in attributes.items() for x in (v if isinstance(v, list) else [v]))
        return [(str(k), str(x)) for k, x in values if x is not None]

    data = {k: [r.get(k) for r in rows] for k in ("product_id", "title", "category", "brand", "price", "description")}
    data["attributes"] = [pairs(r.get("attributes") or {}) for r in rows]
    data["in_stock"] = [r.get("in_stock") for r in rows]
    data["updated_at"] = [r.get("updated_at") for r in rows]
    return pa.table(data, schema=PRODUCTS)


# ---------------------------------------------------------------- the index, in place


def update_index(loaded: LoadedIndex, remove: set[str], new: pa.Table) -> tuple[Any, pa.Table, int]:
    """Mark the rows of `remove` and of every product in `new` dead, append `new`'s vectors.
    Returns (faiss index, ids, rows marked dead now). The FAISS object is changed in place."""
    ids = loaded.ids
    gone = sorted(remove | set(new["product_id"].to_pylist()))
    kill = pc.fill_null(pc.is_in(ids["product_id"], value_set=pa.array(gone, pa.string())), False)
    marked = int(pc.sum(kill).as_py() or 0)
    start = int(loaded.index.ntotal)
    if new.num_rows:
        loaded.index.add(check_vectors(vectors_of(new), loaded.meta["dim"], "refreshed embeddings"))
    null_str, null_int = pa.scalar(None, pa.string()), pa.scalar(None, pa.int64())
    kept = pa.table(
        {
            "row": ids["row"],
            "product_id": pc.if_else(kill, null_str, ids["product_id"]),
            "item_idx": pc.if_else(kill, null_int, ids["item_idx"]),
        }
    )
    added = pa.table(
        {
            "row": pa.array(np.arange(start, start + new.num_rows), pa.int64()),
            "product_id": new["product_id"],
            "item_idx": new["item_idx"],
        }
    )
    return loaded.index, pa.concat_tables([kept.cast(added.schema), added]), marked


def refreshed_embeddings(old: pa.Table, remove: set[str], new: pa.Table, dim: int) -> pa.Table:
    """The committed embeddings less `remove` and the re-embedded products, plus `new`, by product_id."""
    schema = embeddings_schema(dim)
    if "text_sha256" not in old.column_names:
        old = old.append_column("text_sha256", pa.nulls(old.num_rows, pa.string()))
    drop = pa.array(sorted(remove | set(new["product_id"].to_pylist())), pa.string())
    kept = old.filter(pc.invert(pc.is_in(old["product_id"], value_set=drop))).select(schema.names).cast(schema)
    return pa.concat_tables([kept, new.select(schema.names).cast(schema)]).sort_by("product_id")


def _embed(config, layout: ArtifactLayout, rows: list[dict[str, Any]]) -> pa.Table:
    """The embedding job's own path (actor pool, `ProductEncoder`) over just these rows."""
    import ray

    from ml.encoder import resolve_encoder_dir

    cfg = config.data.embedding
    # a refresh is small: no more actors than it has batches (each actor loads the model once)
    cfg = cfg.model_copy(update={"concurrency": max(1, min(cfg.concurrency, math.ceil(len(rows) / cfg.batch_size)))})
    model_dir = resolve_encoder_dir(config.models.dir, config.models.encoder)
    dataset = embed_products(cfg, products_table(rows), model_dir, load_item_ids(layout))
    tables = [t for t in ray.get(dataset.to_arrow_refs()) if t.num_rows]
    if not tables:
        raise RuntimeError(f"the encoder returned no vectors for {len(rows)} changed products")
    return pa.concat_tables(tables)


def _require(root: Path, what: str, command: str) -> dict[str, Any]:
    try:
        return verify_dir(root)
    except IncompleteDirError as e:
        raise IncompleteDirError(f"no committed {what} to refresh ({e}); build it first with `{command}`") from None


# ---------------------------------------------------------------- the run


def run(config, content: ContentStep | None = None, *, watermark: str | None = None) -> dict[str, Any]:
    """One refresh; returns its summary. `content`: the page step (train.refresh), or None."""
    from core.store import database_url, make_engine, upgrade

    timer = Steps()
    name = watermark or (WATERMARK if content is not None else INDEX_ONLY_WATERMARK)
    layout = ArtifactLayout(config.artifacts.root)
    _require(local_dir(layout.embeddings), "embeddings", "shopgraph data embed-products")
    _require(local_dir(layout.index), "text index", "shopgraph data index")

    url = database_url(config)
    engine = make_engine(url, config.online.password_env)
    try:
        upgrade(engine)
        with one_at_a_time(engine) as mine:
            if not mine:
                message = "another refresh is running; it applies these changes (or the next run does)"
                print(message, file=sys.stderr)
                return {"changed": 0, "skipped": message}
            return _refresh(config, content, engine, name, timer)
    finally:
        engine.dispose()


class Steps:
    """Seconds per step of a run, for the summary."""

    def __init__(self) -> None:
        self.started = self.clock = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self.clock, 3)
        self.clock = now

    def done(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self.started, 3)}


def _refresh(config, content: ContentStep | None, engine, name: str, timer: Steps) -> dict[str, Any]:
    from core.runtime import ensure_ray
    from core.store import Store, database_url, now_ms

    url, layout = database_url(config), ArtifactLayout(config.artifacts.root)
    index_dir, emb_dir = local_dir(layout.index), local_dir(layout.embeddings)
    store = Store(engine)
    mark = check_watermark(store.get_watermark(name), name, now_ms(), config.online.max_clock_skew_ms)
    since = max(0, mark - config.data.refresh.overlap_ms)
    ensure_ray(config, log_to_driver=False)
    rows = read_changes(url, config.online.password_env, since)
    upto = max([mark, *(r["updated_at"] for r in rows)])
    timer.lap("read")

    embeddings, emb_meta = load_embeddings(emb_dir)
    resynced = _resync_index(config, index_dir, emb_dir, embeddings, emb_meta)
    plan = plan_changes(rows, known_text_hashes(embeddings, layout))
    content_ids = content.plan(plan.live, plan.deleted) if content is not None else []
    timer.lap("plan")
    summary: dict[str, Any] = {
        "watermark": {"name": name, "from": mark, "from_utc": _iso(mark), "read_since": since},
        "read": len(rows),
        "changed": len({r["product_id"] for r in plan.embed} | plan.remove | set(content_ids)),
        "embedded": 0,
        "added": 0,
        "removed": 0,
        "deleted": len(plan.remove - {r["product_id"] for r in plan.embed}),
        "content_regenerated": 0,
        **({"index_resynced": resynced} if resynced else {}),
    }
    if not summary["changed"]:
        message = f"no change since {_iso(mark)} (watermark {name!r}, {len(rows)} rows re-read)"
        print(message, file=sys.stderr)
        log.info(message)
        if upto > mark:  # rows re-read or re-sent without a change: nothing to redo next time either
            store.set_watermark(name, upto)
        return {**summary, "message": message, "watermark": {**summary["watermark"], "to": upto},
                "seconds": timer.done()}  # fmt: skip

    if plan.embed or plan.remove:  # else only pages change (a price): index and embeddings stay as they are
        new = _embed(config, layout, plan.embed) if plan.embed else embeddings_schema(emb_meta["dim"]).empty_table()
        summary["embedded"] = new.num_rows
        timer.lap("embed")
        refreshed = refreshed_embeddings(embeddings, plan.remove, new, emb_meta["dim"])
        # embeddings first, then the index that records their digest: a run cut off between the
        # two leaves an index behind its embeddings, which the next run sees and rebuilds
        digest = _commit_embeddings(emb_dir, refreshed, emb_meta, summary)
        timer.lap("embeddings")
        index_meta = _commit_index(config, index_dir, plan.remove, new, refreshed, emb_meta, digest)
        summary |= {"added": index_meta["refresh"]["added"], "removed": index_meta["refresh"]["dead_marked"],
                    "dead_rows": index_meta.get("dead_rows", 0), "index_count": index_meta["count"],
                    "rebuilt": index_meta["refresh"]["rebuilt"]}  # fmt: skip
        timer.lap("index")

    if content is not None:
        content_summary = content.apply()
        summary["content_regenerated"] = content_summary.get("regenerated", 0)
        summary["content"] = content_summary
    else:
        summary["content"] = {
            "skipped": "python -m data.refresh leaves page content alone; run `shopgraph data refresh`"
        }
    timer.lap("content")

    store.set_watermark(name, upto)  # last: a run that failed above is redone from the same mark
    summary["watermark"] |= {"to": upto, "to_utc": _iso(upto)}
    timer.lap("watermark")
    return {**summary, "seconds": timer.done()}


@contextlib.contextmanager
def one_at_a_time(engine):
    """Yields True when this process holds the refresh lock, False when another run does: a session
    advisory lock on PostgreSQL, a file lock beside the database on SQLite. Two runs at once would
    each append the same products to the index."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            mine = bool(conn.execute(text(f"SELECT pg_try_advisory_lock({LOCK_KEY})")).scalar())
            try:
                yield mine
            finally:
                if mine:
                    conn.execute(text(f"SELECT pg_advisory_unlock({LOCK_KEY})"))
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True
        return
    import fcntl

    with open(f"{database}.refresh.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _index_meta_extra(loaded_meta: dict, digest: str) -> dict[str, Any]:
    return {**{k: loaded_meta[k] for k in ("encoder",) if k in loaded_meta}, "embeddings_digest": digest}


def _resync_index(config, index_dir: Path, emb_dir: Path, embeddings: pa.Table, emb_meta: dict) -> str | None:
    """Rebuild the index in full when it was not built from the committed embeddings (a refresh cut
    off after committing the embeddings, or embeddings re-run without `shopgraph data index`);
    returns why, or None when they match. An index that records no provenance is trusted."""
    from core.manifest import files_digest, read_manifest
    from data.index import build_from_embeddings

    meta, manifest = read_manifest(index_dir)["meta"], read_manifest(emb_dir)
    digest = files_digest(manifest)
    if "embeddings_digest" in meta:
        behind = meta["embeddings_digest"] != digest
    else:
        behind = "embeddings_created" in meta and meta["embeddings_created"] != manifest["created_at"]
    if not behind:
        return None
    why = "the index was not built from the committed embeddings (an interrupted refresh?): rebuilt in full"
    log.warning(why)
    build_from_embeddings(config.data.index, embeddings, index_dir, dim=emb_meta.get("dim"), seed=config.data.seed,
                          extra_meta=_index_meta_extra(meta, digest))  # fmt: skip
    return why


def _commit_index(
    config, index_dir: Path, remove: set[str], new: pa.Table, refreshed: pa.Table, emb_meta: dict, digest: str
) -> dict[str, Any]:
    """Append / mark dead in place and commit; a full rebuild past the dead-row threshold."""
    from data.index import build_from_embeddings, write_index

    loaded = load_index(index_dir)
    index, ids, marked = update_index(loaded, remove, new)
    dead = ids["product_id"].null_count
    refresh = {"added": new.num_rows, "dead_marked": marked, "at": _iso(int(time.time() * 1000))}
    extra = _index_meta_extra(loaded.meta, digest)
    if dead > config.data.refresh.rebuild_dead_fraction * max(1, ids.num_rows) and refreshed.num_rows:
        rebuilt = build_from_embeddings(
            config.data.index, refreshed, index_dir, dim=emb_meta.get("dim"), seed=config.data.seed,
            extra_meta={**extra, "refresh": {**refresh, "rebuilt": True, "dead_before_rebuild": dead}},
        )  # fmt: skip
        return rebuilt.meta
    meta = {**loaded.meta, **extra, "count": int(index.ntotal), "dead_rows": dead,
            "refresh": {**refresh, "rebuilt": False}}  # fmt: skip
    write_index(index_dir, index, ids, meta)
    return meta


def _commit_embeddings(emb_dir: Path, table: pa.Table, meta: dict, summary: dict) -> str:
    """Commit the refreshed embeddings; returns their files digest (what the index records)."""
    from core.manifest import files_digest

    with staged_dir(emb_dir) as staging:
        pq.write_table(table, staging / "embeddings.parquet")
        manifest = write_manifest(
            staging,
            {**meta, "count": table.num_rows, "text_builder_version": TEXT_BUILDER_VERSION,
             "refresh": {k: summary[k] for k in ("embedded", "deleted")} | {"at": _iso(int(time.time() * 1000))}},
        )  # fmt: skip
    return files_digest(manifest)


def main(argv: list[str] | None = None) -> int:
    """`python -m data.refresh` (embeddings + index only); `shopgraph data refresh` runs train.refresh."""
    from core.cli import stage_main

    return stage_main(argv, run, prog="python -m data.refresh", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
