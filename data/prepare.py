"""Raw sources -> validated, deterministic products / events / quarantine shard sets (Ray Data).

    python -m data.prepare --config configs/local.yaml
    ray job submit --working-dir . -- python -m data.prepare --config configs/gpu-cluster.yaml
    shopgraph data prepare --set artifacts.root=/tmp/art

Steps:
1. plan (driver): resolve every `data.sources` entry, check files and columns; any problem
   stops the run here, before Ray starts work (`data.sources.SourceError`).
2. parse (Ray Data): one task per chunk of a file, `map_batches` -> parsed rows, each either
   valid or carrying its quarantine reason. With no sources, the embedded sample generator
   (`data.sample`) feeds the same path.
3. gather + validate: the driver streams the parsed blocks in as they finish and splits each
   into valid rows (contract columns + a compact position: plan chunk, line, sub) and quarantine
   rows; file names are recovered from the plan, never carried per row. Then duplicate product
   ids (first occurrence wins, in input order = chunk, line, sub) and events whose product is not
   in the catalog (checked in parallel in Ray Data).
4. write: sort deterministically (one copy of each table, taken in final order) and write
   committed shard sets (`core.shards`).

Measured with `bench/data_prepare.py` on a loaded 2-core box: 1M products + 10M events in
about 4 minutes, 4 GiB peak PSS over the driver and every Ray process.

Row accounting is exact and checked: for every source, read = kept + quarantined.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from core.config import ShopgraphConfig
from core.config.ingest import SourceConfig
from core.layout import ArtifactLayout
from core.privacy import IngestPrivacy, Pseudonymizer, TombstoneStore
from core.runtime import ensure_ray
from core.schemas import EVENTS, PRODUCTS, QUARANTINE
from core.shards import write_shard_set
from data.readers import ERASED, parse_chunk
from data.sources import plan_sources
from data.sqlsource import DELETED

SAMPLE_SOURCE = "sample"


@dataclass
class SourceCount:
    name: str
    table: str
    read: int = 0
    kept: int = 0
    quarantined: int = 0
    erased: int = 0  # rows of users with a tombstone (core.privacy): dropped, not quarantined
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class PrepareResult:
    counts: list[SourceCount]
    products: int
    events: int
    quarantined: int
    stubs: int
    seconds: float
    manifests: dict[str, dict[str, Any]]
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per step, for benchmarks
    erased: int = 0

    def table(self) -> str:
        lines = [f"{'source':<24} {'table':<9} {'read':>10} {'kept':>10} {'quarantined':>12} {'erased':>8}"]
        for c in self.counts:
            lines.append(f"{c.name:<24} {c.table:<9} {c.read:>10} {c.kept:>10} {c.quarantined:>12} {c.erased:>8}")
            for reason, n in sorted(c.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5]:
                lines.append(f"{'':<24}   {n:>8} x {reason}")
        if self.stubs:
            lines.append(
                f"{self.stubs} stub products created for event-only product ids (data.prepare.unknown_products=stub)"
            )
        lines.append(
            f"wrote {self.products} products, {self.events} events, {self.quarantined} quarantined rows "
            f"({self.erased} rows of erased users dropped) in {self.seconds:.1f}s"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- parse

# What a parse task hands the driver per row: the contract columns plus compact provenance.
# `_chunk` indexes the plan (`plan_sources`: source by source, file by file, offset by offset),
# so it names the source and the file without a file-name string on every row, and
# (_chunk, _line, _sub) is the row's unique position in input order. `_reason` / `_raw` are null
# on valid rows (a null string costs 4 bytes); only rejected rows carry their text.
PROVENANCE = [
    pa.field("_chunk", pa.int32()),
    pa.field("_line", pa.int64()),
    pa.field("_sub", pa.int32()),
    pa.field("_reason", pa.string()),
    pa.field("_raw", pa.string()),
]
INPUT_ORDER = ["_chunk", "_line", "_sub"]


def contract_of(table: str) -> pa.Schema:
    return PRODUCTS if table == "products" else EVENTS


def compact_schema(table: str) -> pa.Schema:
    """Contract columns (nullable: rejected rows leave them empty) plus `PROVENANCE`."""
    return pa.schema([f.with_nullable(True) for f in contract_of(table)] + PROVENANCE)


def _compact(parsed: pa.Table, chunk_index: int, table: str) -> pa.Table:
    n = parsed.num_rows
    columns = [parsed[f.name] for f in contract_of(table)]
    columns += [
        pa.array(np.full(n, chunk_index, dtype=np.int32)),
        parsed["_line"],
        parsed["_sub"],
        parsed["_reason"],
        parsed["_raw"],
    ]
    return pa.Table.from_arrays(columns, schema=compact_schema(table))


def _parse_batch(batch: pa.Table, sources: list[dict[str, Any]], privacy: IngestPrivacy | None) -> pa.Table:
    tables = []
    for chunk in batch.to_pylist():
        src = SourceConfig.model_validate(sources[chunk["src"]])
        tables.append(_compact(parse_chunk(chunk, src, privacy), chunk["index"], src.table))
    return pa.concat_tables(tables)


def _sample_parsed(cfg: ShopgraphConfig, table: str, chunk_index: int, privacy: IngestPrivacy | None) -> pa.Table:
    from data.sample import generate

    products, events = generate(cfg.data.sample, seed=cfg.data.seed)
    contract = products if table == "products" else events
    n = contract.num_rows
    reason = pa.nulls(n, pa.string())
    if table == "events" and privacy is not None:  # as the readers do (data.readers._Builder)
        raw = contract["user_id"]
        erased_raw = [u for u in pc.unique(raw).to_pylist() if privacy.erased(u)]
        contract = contract.set_column(
            contract.schema.get_field_index("user_id"), "user_id", privacy.pseudonymizer.column(raw)
        )
        if erased_raw:
            reason = pc.if_else(pc.is_in(raw, value_set=pa.array(erased_raw, pa.string())), ERASED, reason)
    meta = {
        "_chunk": pa.array(np.full(n, chunk_index, dtype=np.int32)),
        "_line": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "_sub": pa.array(np.zeros(n, dtype=np.int32)),
        "_reason": reason,
        "_raw": pa.nulls(n, pa.string()),
    }
    for name, col in meta.items():
        contract = contract.append_column(name, col)
    return contract.cast(compact_schema(table))


def sources_of(cfg: ShopgraphConfig) -> list[SourceConfig]:
    if cfg.data.sources:
        return cfg.data.sources
    return [
        SourceConfig(name=SAMPLE_SOURCE, format="jsonl", path="<generated>", table="products"),
        SourceConfig(name=SAMPLE_SOURCE, format="jsonl", path="<generated>", table="events"),
    ]


def plan_of(cfg: ShopgraphConfig) -> list[dict[str, Any]]:
    """Every parse task (`plan_sources`), each with its `index` in the plan. The sample is one
    pseudo-chunk per table: source 0 (products) and source 1 (events), as in `sources_of`."""
    if not cfg.data.sources:
        return [{"src": 0, "display": SAMPLE_SOURCE, "index": 0}, {"src": 1, "display": SAMPLE_SOURCE, "index": 1}]
    db_url = None
    if any(s.format == "sql" and not s.url for s in cfg.data.sources):
        from core.store import database_url

        try:
            db_url = database_url(cfg)
        except ValueError as e:
            from data.sources import SourceError

            raise SourceError(f"a format: sql source has no database: {e}") from None
    planned = plan_sources(
        cfg.data.sources, cfg.data.prepare.chunk_mb, database_url=db_url, password_env=cfg.online.password_env
    )
    return [{**c, "index": k} for k, c in enumerate(planned)]


def parsed_dataset(
    cfg: ShopgraphConfig,
    table: str,
    chunks: list[dict[str, Any]] | None = None,
    privacy: IngestPrivacy | None = None,
) -> ray.data.Dataset:
    """Stage: every input record of `table` as one row of `compact_schema(table)` (valid, or with `_reason`).

    `chunks` comes from `plan_of` (already checked); None plans here. With `privacy`, event rows
    hold pseudonyms and rows of tombstoned users carry `_reason` ERASED.
    """
    chunks = plan_of(cfg) if chunks is None else chunks
    if not cfg.data.sources:
        return ray.data.from_arrow(_sample_parsed(cfg, table, 0 if table == "products" else 1, privacy))
    mine = [c for c in chunks if cfg.data.sources[c["src"]].table == table]
    files = [c for c in mine if not c.get("sql")]
    sources = [s.model_dump() for s in cfg.data.sources]
    parts = []
    if files:
        parts.append(
            ray.data.from_items(files, override_num_blocks=len(files)).map_batches(
                _parse_batch,
                batch_size=1,
                batch_format="pyarrow",
                fn_kwargs={"sources": sources, "privacy": privacy},
                num_cpus=cfg.data.prepare.num_cpus,
            )
        )
    for c in mine:
        if c.get("sql"):  # the online database, through ray.data.read_sql (data.sqlsource)
            from data.sqlsource import read_dataset

            parts.append(read_dataset(c, sources[c["src"]], privacy, cfg.data.prepare.num_cpus))
    if not parts:
        return ray.data.from_arrow(compact_schema(table).empty_table())
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------------------------- gather


@dataclass
class Gathered:
    """What the driver keeps of one parsed table."""

    good: pa.Table  # valid rows: contract columns + INPUT_ORDER, in no particular order
    rejected: pa.Table  # quarantine rows (QUARANTINE columns + `_src`)
    read: np.ndarray  # rows read per plan chunk
    erased: np.ndarray = None  # rows of tombstoned users per plan chunk (dropped, not quarantined)
    erased_users: set[str] = field(default_factory=set)  # their pseudonyms under the current key
    deleted_products: set[str] = field(default_factory=set)  # soft-deleted in the online database (data.sqlsource)


def _sources(chunks: list[dict[str, Any]], chunk_idx: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(display file name, source index) of each row, from its `_chunk`."""
    idx = np.asarray(chunk_idx.to_numpy(), dtype=np.int64)
    names = pa.array([c["display"] for c in chunks], pa.string())
    srcs = np.array([c["src"] for c in chunks], dtype=np.int32)
    return pc.take(names, pa.array(idx)), srcs[idx]


def _quarantine_rows(
    rows: pa.Table,
    reasons: list[str] | pa.Array,
    table: str,
    raw: list[str | None] | pa.Array,
    chunks: list[dict[str, Any]],
) -> pa.Table:
    files, srcs = _sources(chunks, rows["_chunk"])
    return pa.table(
        {
            "source": files,
            "line": rows["_line"],
            "reason": pa.array(reasons, pa.string()) if isinstance(reasons, list) else reasons,
            "table": pa.array([table] * rows.num_rows, pa.string()),
            "raw": pa.array(raw, pa.string()) if isinstance(raw, list) else raw,
            "_src": pa.array(srcs, pa.int32()),
        }
    )


def gather(ds: ray.data.Dataset, table: str, chunks: list[dict[str, Any]]) -> Gathered:
    """Stream the parsed blocks into the driver, splitting each into valid and rejected rows as it
    arrives: the driver never holds the rejected rows' columns, nor a second copy of the valid ones
    (the valid rows stay in their blocks until the final sort copies them once)."""
    keep = [f.name for f in contract_of(table)] + INPUT_ORDER
    schema = compact_schema(table)
    good, rejected = [], []
    read = np.zeros(len(chunks), dtype=np.int64)
    erased = np.zeros(len(chunks), dtype=np.int64)
    erased_users: set[str] = set()
    deleted: set[str] = set()
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if not block.num_rows:
            continue
        block = block.cast(schema) if block.schema != schema else block
        read += np.bincount(block["_chunk"].to_numpy(), minlength=len(chunks))
        gone = pc.fill_null(pc.equal(block["_reason"], ERASED), False)
        if pc.any(gone).as_py():
            rows = block.filter(gone)
            erased += np.bincount(rows["_chunk"].to_numpy(), minlength=len(chunks))
            erased_users.update(pc.unique(rows["user_id"]).to_pylist())
            block = block.filter(pc.invert(gone))
        bad = pc.is_valid(block["_reason"])
        if pc.any(bad).as_py():
            rows = block.filter(bad)
            if table == "products":
                gone = pc.fill_null(pc.starts_with(rows["_reason"], DELETED), False)
                deleted.update(rows.filter(gone)["product_id"].to_pylist())
            rejected.append(_quarantine_rows(rows, rows["_reason"], table, rows["_raw"], chunks))
            block = block.filter(pc.invert(bad))
        good.append(block.select(keep))
    return Gathered(
        good=pa.concat_tables(good) if good else pa.schema([schema.field(n) for n in keep]).empty_table(),
        rejected=pa.concat_tables(rejected)
        if rejected
        else _quarantine_rows(schema.empty_table(), [], table, [], chunks),
        read=read,
        erased=erased,
        erased_users=erased_users,
        deleted_products=deleted,
    )


# --------------------------------------------------------------------------------------------- validate


def _row_json(rows: pa.Table, columns: list[str]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False, default=str) for r in rows.select(columns).to_pylist()]


def _input_order(good: pa.Table) -> np.ndarray:
    """Row indices of `good` in input order (unique keys: the order is total)."""
    return np.lexsort([good[k].to_numpy() for k in reversed(INPUT_ORDER)])


def dedupe_products(good: pa.Table, chunks: list[dict[str, Any]]) -> tuple[np.ndarray, pa.Table]:
    """Keep the first row of each product_id (in input order); quarantine the later ones.

    Returns the row indices of `good` that are kept, and the quarantine rows of the others.
    """
    if not good.num_rows:
        return np.zeros(0, dtype=np.int64), _quarantine_rows(good, [], "products", [], chunks)
    order = _input_order(good)
    codes = pc.dictionary_encode(good["product_id"]).combine_chunks().indices.to_numpy()
    _, first_pos = np.unique(codes[order], return_index=True)
    first_row = order[first_pos]  # per product id (code order): the row of its first occurrence
    keep = np.zeros(good.num_rows, dtype=bool)
    keep[first_row] = True
    dup_idx = order[~keep[order]]  # in input order
    if not len(dup_idx):
        return np.sort(first_row), _quarantine_rows(good.slice(0, 0), [], "products", [], chunks)
    first_of_code = np.empty(codes.max() + 1, dtype=np.int64)
    first_of_code[codes[first_row]] = first_row
    dup_first = first_of_code[codes[dup_idx]]
    dups = good.take(pa.array(dup_idx))
    first = good.select(["_chunk", "_line"]).take(pa.array(dup_first))
    files, _ = _sources(chunks, first["_chunk"])
    reasons = [
        f"duplicate product_id {pid!r} (first seen at {file}:{line}; the first is kept)"
        for pid, file, line in zip(
            dups["product_id"].to_pylist(), files.to_pylist(), first["_line"].to_pylist(), strict=True
        )
    ]
    contract = [f.name for f in PRODUCTS]
    return np.sort(first_row), _quarantine_rows(dups, reasons, "products", _row_json(dups, contract), chunks)


def drop_deleted(good: pa.Table, deleted: set[str], chunks: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """Rows of products soft-deleted in the online database, from any other source (an older
    catalog file): quarantined, so a product deleted through the API does not come back."""
    hit = pc.is_in(good["product_id"], value_set=pa.array(sorted(deleted), pa.string()))
    rows = good.filter(hit)
    reasons = [f"{DELETED}: product_id {pid!r} (this row is not kept)" for pid in rows["product_id"].to_pylist()]
    raw = _row_json(rows, [f.name for f in PRODUCTS])
    return good.filter(pc.invert(hit)), _quarantine_rows(rows, reasons, "products", raw, chunks)


def dedupe_events_across_sources(good: pa.Table, chunks: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """An event read from two sources (the online database and a file exported from it, say) is
    kept once: a row with the same (user_id, product_id, event, ts) as an earlier row (input order)
    of another source is quarantined. Rows of one source are never compared with each other: a
    file may hold two equal events, and the database's idempotency keys are unique already."""
    if not good.num_rows:
        return good, _quarantine_rows(good, [], "events", [], chunks)
    order = _input_order(good)
    codes = [
        pc.dictionary_encode(good[c]).combine_chunks().indices.to_numpy() for c in ("user_id", "product_id", "event")
    ]
    identity = np.stack([*codes, good["ts"].cast(pa.int64()).to_numpy()], axis=1)[order]
    _, first_pos, group = np.unique(identity, axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    srcs = np.array([c["src"] for c in chunks], dtype=np.int64)[good["_chunk"].to_numpy()[order]]
    dup_sorted = srcs != srcs[first_pos][group]
    if not dup_sorted.any():
        return good, _quarantine_rows(good.slice(0, 0), [], "events", [], chunks)
    dup = np.zeros(good.num_rows, dtype=bool)
    dup[order[dup_sorted]] = True
    first = good.select(["_chunk", "_line"]).take(pa.array(order[first_pos][group][dup_sorted]))
    files, _ = _sources(chunks, first["_chunk"])
    rows = good.take(pa.array(order[dup_sorted]))
    reasons = [
        f"duplicate event (same user_id, product_id, event and ts as {f}:{line}, another source; the first is kept)"
        for f, line in zip(files.to_pylist(), first["_line"].to_pylist(), strict=True)
    ]
    raw = _row_json(rows, [f.name for f in EVENTS])
    return good.filter(pa.array(~dup)), _quarantine_rows(rows, reasons, "events", raw, chunks)


def _mark_unknown(batch: pa.Table, known_ref: list[ray.ObjectRef]) -> pa.Table:
    known = ray.get(known_ref[0])
    ok = pc.is_in(batch["product_id"], value_set=known)
    ok = pc.or_(ok, pc.is_valid(batch["_reason"]))  # already-rejected rows keep their first reason
    reasons = pc.if_else(
        ok,
        batch["_reason"],
        pc.binary_join_element_wise("unknown product_id '", batch["product_id"], "' (not in the products table)", ""),
    )
    return batch.set_column(batch.schema.get_field_index("_reason"), "_reason", reasons)


def check_known_products(events: ray.data.Dataset, product_ids: pa.Array, num_cpus: float) -> ray.data.Dataset:
    """Stage: set `_reason` on events whose product_id is not in `product_ids` (parallel, vectorized)."""
    ref = ray.put(product_ids)
    return events.map_batches(_mark_unknown, batch_format="pyarrow", fn_kwargs={"known_ref": [ref]}, num_cpus=num_cpus)


def _stub_products(events: pa.Table, known: pa.Array) -> pa.Table:
    ids = pc.unique(events.filter(pc.invert(pc.is_in(events["product_id"], value_set=known)))["product_id"])
    ids = pc.take(ids, pc.sort_indices(ids))  # deterministic order
    n = len(ids)
    return pa.table(
        {
            "product_id": ids,
            "title": ids,
            "category": pa.nulls(n, pa.string()),
            "brand": pa.nulls(n, pa.string()),
            "price": pa.nulls(n, pa.float64()),
            "attributes": pa.array([[]] * n, PRODUCTS.field("attributes").type),
            "description": pa.nulls(n, pa.string()),
            "in_stock": pa.nulls(n, pa.bool_()),
            "updated_at": pa.nulls(n, PRODUCTS.field("updated_at").type),
        },
        schema=PRODUCTS,
    )


def _events_order(good: pa.Table) -> pa.Array:
    """Row indices of `good` in output order: (user_id, ts, input order).

    The user ids are ranked once (sort of the distinct ids, then a hash lookup) so the multi-key
    sort runs on integers; sorting 10M strings with tie-break keys is several times slower.
    """
    users = pc.unique(good["user_id"])
    users = pc.take(users, pc.sort_indices(users))
    keys = pa.table(
        {
            "rank": pc.index_in(good["user_id"], value_set=users),
            "ts": good["ts"].cast(pa.int64()),
            **{k: good[k] for k in INPUT_ORDER},
        }
    )
    return pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])


# --------------------------------------------------------------------------------------------- run


def _per_source(n_sources: int, chunks: list[dict[str, Any]], per_chunk: np.ndarray) -> np.ndarray:
    srcs = np.array([c["src"] for c in chunks], dtype=np.int64)
    return (
        np.bincount(srcs, weights=per_chunk, minlength=n_sources).astype(np.int64)
        if len(chunks)
        else np.zeros(n_sources, np.int64)
    )


def _chunk_counts(chunk_idx: pa.ChunkedArray | np.ndarray, n_chunks: int) -> np.ndarray:
    values = chunk_idx if isinstance(chunk_idx, np.ndarray) else chunk_idx.to_numpy()
    return np.bincount(values, minlength=n_chunks) if len(values) else np.zeros(n_chunks, np.int64)


def prepare(cfg: ShopgraphConfig, *, log=print) -> PrepareResult:
    """Run the whole ingest: plan, parse, validate, write. Raises `SourceError` before any work."""
    start = time.perf_counter()
    sources = sources_of(cfg)
    chunks = plan_of(cfg)
    # Keys and tombstones are read once, here, and travel to the parse tasks as arguments.
    tombstones = TombstoneStore(cfg.artifacts.root)
    privacy = IngestPrivacy(Pseudonymizer.from_config(cfg), frozenset(tombstones.keys()))
    ensure_ray(cfg, log_to_driver=False)
    counts = [SourceCount(s.name, s.table) for s in sources]
    pcfg = cfg.data.prepare
    contract_products = [f.name for f in PRODUCTS]
    contract_events = [f.name for f in EVENTS]
    read = np.zeros(len(chunks), dtype=np.int64)
    kept = np.zeros(len(chunks), dtype=np.int64)

    phases: dict[str, float] = {}
    mark = start

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 2)
        mark = now

    lap("plan_s")  # includes starting Ray when it is not up yet
    p = gather(parsed_dataset(cfg, "products", chunks, privacy), "products", chunks)
    lap("products_parse_s")
    gone = _quarantine_rows(p.good.slice(0, 0), [], "products", [], chunks)
    if p.deleted_products:
        p.good, gone = drop_deleted(p.good, p.deleted_products, chunks)
    keep_idx, dups = dedupe_products(p.good, chunks)
    read += p.read
    kept += _chunk_counts(
        p.good["_chunk"].to_numpy()[keep_idx] if len(keep_idx) else np.zeros(0, np.int32), len(chunks)
    )
    ids = pc.take(p.good["product_id"], pa.array(keep_idx))
    by_id = pc.take(pa.array(keep_idx), pc.sort_indices(ids))  # product ids are unique now: a total order
    products = p.good.select(contract_products).take(by_id).combine_chunks()  # the one copy of the catalog
    products_rejected = pa.concat_tables([p.rejected, gone, dups])
    del p, ids, by_id, keep_idx, dups  # release the parsed blocks
    known = products["product_id"].combine_chunks() if products.num_rows else pa.array([], pa.string())
    lap("products_dedupe_sort_s")

    events_ds = parsed_dataset(cfg, "events", chunks, privacy)
    if pcfg.unknown_products == "quarantine":
        events_ds = check_known_products(events_ds, known, pcfg.num_cpus)
    e = gather(events_ds, "events", chunks)
    lap("events_parse_s")
    event_srcs = {c["src"] for c in chunks if sources[c["src"]].table == "events"}
    if len(event_srcs) > 1 and any(sources[i].format == "sql" for i in event_srcs):
        e.good, twice = dedupe_events_across_sources(e.good, chunks)
        e.rejected = pa.concat_tables([e.rejected, twice])
    read += e.read
    erased = e.erased
    kept += _chunk_counts(e.good["_chunk"], len(chunks))
    # A user erased under an old key is tombstoned under the current one too: the old key can go.
    tombstones.add((privacy.pseudonymizer.current.kid, u) for u in sorted(e.erased_users))
    stubs = 0
    if pcfg.unknown_products == "stub":
        stub = _stub_products(e.good, known)
        stubs = stub.num_rows
        products = pa.concat_tables([products.cast(PRODUCTS), stub]).sort_by("product_id")
    events = e.good.select(contract_events).take(_events_order(e.good)).combine_chunks()  # the one copy of the events
    events_rejected = e.rejected
    del e
    lap("events_sort_s")

    for c, r, k, x in zip(
        counts,
        _per_source(len(sources), chunks, read),
        _per_source(len(sources), chunks, kept),
        _per_source(len(sources), chunks, erased),
        strict=True,
    ):
        c.read, c.kept, c.erased = int(r), int(k), int(x)
    quarantine = pa.concat_tables([products_rejected, events_rejected])
    if quarantine.num_rows:
        q_src = quarantine["_src"].to_numpy()
        for src, n in zip(*np.unique(q_src, return_counts=True), strict=True):
            counts[int(src)].quarantined = int(n)
    for src, reason in zip(quarantine["_src"].to_pylist(), quarantine["reason"].to_pylist(), strict=True):
        key = reason.split("'")[0].split("(")[0].strip() or reason  # group "unknown product_id 'x'" by kind
        counts[src].reasons[key] = counts[src].reasons.get(key, 0) + 1
    for c in counts:
        if c.read != c.kept + c.quarantined + c.erased:  # an internal bug, never bad input
            raise AssertionError(
                f"row accounting broken for source {c.name}: read {c.read} != kept {c.kept} + quarantined "
                f"{c.quarantined} + erased {c.erased}"
            )

    products = products.cast(PRODUCTS)
    events = events.cast(EVENTS)
    quarantine = quarantine.sort_by(
        [("table", "ascending"), ("source", "ascending"), ("line", "ascending"), ("reason", "ascending")]
    )
    quarantine = quarantine.select([f.name for f in QUARANTINE]).cast(QUARANTINE)

    layout = ArtifactLayout(cfg.artifacts.root)
    meta = {
        "sources": [s.model_dump(mode="json") for s in sources],
        "sample": cfg.data.sample.model_dump(),
        "seed": cfg.data.seed,
        "pseudonym_kid": privacy.pseudonymizer.current.kid,
    }
    shard = {"rows_per_shard": pcfg.rows_per_shard, "row_group_rows": pcfg.row_group_rows}
    manifests = {
        # Quarantine and events first, products last: later stages look for products first.
        "quarantine": write_shard_set(quarantine, layout.quarantine, meta={**meta, "table": "quarantine"}, **shard),
        "events": write_shard_set(
            events, layout.events, meta={**meta, "table": "events", "erased": int(erased.sum())}, **shard
        ),
        "products": write_shard_set(products, layout.products, meta={**meta, "table": "products"}, **shard),
    }
    lap("write_s")
    result = PrepareResult(
        counts,
        products.num_rows,
        events.num_rows,
        quarantine.num_rows,
        stubs,
        time.perf_counter() - start,
        manifests,
        phases,
        int(erased.sum()),
    )
    log(result.table())
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m data.prepare` (a `ray job submit` / RayJob entry point) and `shopgraph data prepare`.

    Prints the row accounting per source; a missing file or column stops before any work,
    naming the data.sources key to change (exit 2).
    """
    from core.cli import stage_main
    from data.sources import SourceError

    return stage_main(
        argv,
        lambda cfg: prepare(cfg),
        prog="python -m data.prepare",
        description=__doc__,
        show=lambda _: None,
        usage_errors=(SourceError,),
    )


if __name__ == "__main__":
    sys.exit(main())
