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
3. validate: duplicate product ids (first occurrence wins, in input order), events whose
   product is not in the catalog (checked in parallel in Ray Data).
4. write: sort deterministically and write committed shard sets (`data.shards`).

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

from cluster.config import ShopgraphConfig
from data.ingest_config import SourceConfig
from data.layout import ArtifactLayout
from data.readers import parse_chunk, parsed_schema
from data.schemas import EVENTS, PRODUCTS, QUARANTINE
from data.shards import write_shard_set
from data.sources import plan_sources

SAMPLE_SOURCE = "sample"


@dataclass
class SourceCount:
    name: str
    table: str
    read: int = 0
    kept: int = 0
    quarantined: int = 0
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

    def table(self) -> str:
        lines = [f"{'source':<24} {'table':<9} {'read':>10} {'kept':>10} {'quarantined':>12}"]
        for c in self.counts:
            lines.append(f"{c.name:<24} {c.table:<9} {c.read:>10} {c.kept:>10} {c.quarantined:>12}")
            for reason, n in sorted(c.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5]:
                lines.append(f"{'':<24}   {n:>8} x {reason}")
        if self.stubs:
            lines.append(f"{self.stubs} stub products created for event-only product ids (data.prepare.unknown_products=stub)")
        lines.append(f"wrote {self.products} products, {self.events} events, {self.quarantined} quarantined rows in {self.seconds:.1f}s")
        return "\n".join(lines)


def ensure_ray(cfg: ShopgraphConfig) -> None:
    if not ray.is_initialized():
        ray.init(address=cfg.cluster.ray.address, num_cpus=cfg.cluster.ray.num_cpus if cfg.cluster.ray.address is None else None,
                 include_dashboard=False, log_to_driver=False)


# --------------------------------------------------------------------------------------------- parse


def _parse_batch(batch: pa.Table, sources: list[dict[str, Any]]) -> pa.Table:
    tables = [parse_chunk(chunk, SourceConfig.model_validate(sources[chunk["src"]])) for chunk in batch.to_pylist()]
    return pa.concat_tables(tables)


def _sample_parsed(cfg: ShopgraphConfig, table: str, src: int) -> pa.Table:
    from data.sample import generate

    products, events = generate(cfg.data.sample, seed=cfg.data.seed)
    contract = products if table == "products" else events
    n = contract.num_rows
    meta = {
        "_src": pa.array(np.full(n, src, dtype=np.int32)),
        "_file": pa.array([SAMPLE_SOURCE] * n, pa.string()) if n else pa.array([], pa.string()),
        "_line": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "_sub": pa.array(np.zeros(n, dtype=np.int32)),
        "_reason": pa.nulls(n, pa.string()),
        "_raw": pa.nulls(n, pa.string()),
    }
    for name, col in meta.items():
        contract = contract.append_column(name, col)
    return contract.cast(parsed_schema(table))


def sources_of(cfg: ShopgraphConfig) -> list[SourceConfig]:
    if cfg.data.sources:
        return cfg.data.sources
    return [
        SourceConfig(name=SAMPLE_SOURCE, format="jsonl", path="<generated>", table="products"),
        SourceConfig(name=SAMPLE_SOURCE, format="jsonl", path="<generated>", table="events"),
    ]


def parsed_dataset(cfg: ShopgraphConfig, table: str, chunks: list[dict[str, Any]] | None = None) -> ray.data.Dataset:
    """Stage: every input record of `table` as one parsed row (valid, or with `_reason`).

    `chunks` comes from `plan_sources` (already checked); None plans here.
    """
    if not cfg.data.sources:
        # sources_of(): the sample is source 0 (products) and source 1 (events)
        return ray.data.from_arrow(_sample_parsed(cfg, table, 0 if table == "products" else 1))
    chunks = plan_sources(cfg.data.sources, cfg.data.prepare.chunk_mb) if chunks is None else chunks
    mine = [c for c in chunks if cfg.data.sources[c["src"]].table == table]
    if not mine:
        return ray.data.from_arrow(parsed_schema(table).empty_table())
    sources = [s.model_dump() for s in cfg.data.sources]
    return ray.data.from_items(mine, override_num_blocks=len(mine)).map_batches(
        _parse_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"sources": sources}, num_cpus=cfg.data.prepare.num_cpus
    )


def _collect(ds: ray.data.Dataset, schema: pa.Schema) -> pa.Table:
    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    table = pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()
    # Input order: Ray Data does not promise block order, the source position does.
    return table.sort_by([("_src", "ascending"), ("_line", "ascending"), ("_sub", "ascending")])


# --------------------------------------------------------------------------------------------- validate


def _quarantine_rows(rows: pa.Table, reasons: list[str] | pa.Array, table: str, raw: list[str | None] | pa.Array) -> pa.Table:
    return pa.table(
        {
            "source": rows["_file"],
            "line": rows["_line"],
            "reason": pa.array(reasons, pa.string()) if isinstance(reasons, list) else reasons,
            "table": pa.array([table] * rows.num_rows, pa.string()),
            "raw": pa.array(raw, pa.string()) if isinstance(raw, list) else raw,
            "_src": rows["_src"],
        }
    )


def _row_json(rows: pa.Table, columns: list[str]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False, default=str) for r in rows.select(columns).to_pylist()]


def _split_rejected(parsed: pa.Table, table: str) -> tuple[pa.Table, pa.Table]:
    bad = pc.is_valid(parsed["_reason"])
    rejected = parsed.filter(bad)
    return parsed.filter(pc.invert(bad)), _quarantine_rows(rejected, rejected["_reason"], table, rejected["_raw"])


def dedupe_products(good: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Keep the first row of each product_id (in input order); quarantine the later ones."""
    if not good.num_rows:
        return good, _quarantine_rows(good, [], "products", [])
    codes = pc.dictionary_encode(good["product_id"]).combine_chunks().indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    keep = np.zeros(good.num_rows, dtype=bool)
    keep[first] = True
    dups = good.filter(pa.array(~keep))
    first_of_code = np.empty(codes.max() + 1, dtype=np.int64)
    first_of_code[codes[first]] = first
    dup_first = first_of_code[codes[~keep]]
    files, lines = good["_file"].to_pylist(), good["_line"].to_pylist()
    reasons = [
        f"duplicate product_id {pid!r} (first seen at {files[f]}:{lines[f]}; the first is kept)"
        for pid, f in zip(dups["product_id"].to_pylist(), dup_first.tolist(), strict=True)
    ]
    contract = [f.name for f in PRODUCTS]
    return good.filter(pa.array(keep)), _quarantine_rows(dups, reasons, "products", _row_json(dups, contract))


def _mark_unknown(batch: pa.Table, known_ref: list[ray.ObjectRef]) -> pa.Table:
    known = ray.get(known_ref[0])
    ok = pc.is_in(batch["product_id"], value_set=known)
    ok = pc.or_(ok, pc.is_valid(batch["_reason"]))  # already-rejected rows keep their first reason
    reasons = pc.if_else(ok, batch["_reason"], pc.binary_join_element_wise("unknown product_id '", batch["product_id"], "' (not in the products table)", ""))
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


# --------------------------------------------------------------------------------------------- run


def _count(counts: list[SourceCount], table: pa.Table, attr: str) -> None:
    if not table.num_rows:
        return
    values, freq = np.unique(table["_src"].to_numpy(), return_counts=True)
    for src, n in zip(values.tolist(), freq.tolist(), strict=True):
        setattr(counts[src], attr, getattr(counts[src], attr) + n)


def prepare(cfg: ShopgraphConfig, *, log=print) -> PrepareResult:
    """Run the whole ingest: plan, parse, validate, write. Raises `SourceError` before any work."""
    start = time.perf_counter()
    sources = sources_of(cfg)
    chunks = plan_sources(cfg.data.sources, cfg.data.prepare.chunk_mb) if cfg.data.sources else None
    ensure_ray(cfg)
    counts = [SourceCount(s.name, s.table) for s in sources]
    pcfg = cfg.data.prepare

    products_parsed = _collect(parsed_dataset(cfg, "products", chunks), parsed_schema("products"))
    good, rejected = _split_rejected(products_parsed, "products")
    good, dups = dedupe_products(good)
    known = good["product_id"].combine_chunks() if good.num_rows else pa.array([], pa.string())

    events_ds = parsed_dataset(cfg, "events", chunks)
    if pcfg.unknown_products == "quarantine":
        events_ds = check_known_products(events_ds, known, pcfg.num_cpus)
    events_parsed = _collect(events_ds, parsed_schema("events"))
    events_good, events_rejected = _split_rejected(events_parsed, "events")

    for table, attr in ((products_parsed, "read"), (events_parsed, "read"), (good, "kept"), (events_good, "kept")):
        _count(counts, table, attr)
    quarantine = pa.concat_tables([rejected, dups, events_rejected])
    _count(counts, quarantine, "quarantined")
    for src, reason in zip(quarantine["_src"].to_pylist(), quarantine["reason"].to_pylist(), strict=True):
        key = reason.split("'")[0].split("(")[0].strip() or reason  # group "unknown product_id 'x'" by kind
        counts[src].reasons[key] = counts[src].reasons.get(key, 0) + 1
    for c in counts:
        if c.read != c.kept + c.quarantined:  # an internal bug, never bad input
            raise AssertionError(f"row accounting broken for source {c.name}: read {c.read} != kept {c.kept} + quarantined {c.quarantined}")

    products = good.select([f.name for f in PRODUCTS]).cast(PRODUCTS)
    stubs = 0
    if pcfg.unknown_products == "stub":
        stub = _stub_products(events_good, known)
        stubs = stub.num_rows
        products = pa.concat_tables([products, stub])
    products = products.sort_by("product_id")
    events = events_good.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("_src", "ascending"), ("_line", "ascending"), ("_sub", "ascending")])
    events = events.select([f.name for f in EVENTS]).cast(EVENTS)
    quarantine = quarantine.sort_by([("table", "ascending"), ("source", "ascending"), ("line", "ascending"), ("reason", "ascending")])
    quarantine = quarantine.select([f.name for f in QUARANTINE]).cast(QUARANTINE)

    layout = ArtifactLayout(cfg.artifacts.root)
    meta = {"sources": [s.model_dump(mode="json") for s in sources], "sample": cfg.data.sample.model_dump(), "seed": cfg.data.seed}
    shard = {"rows_per_shard": pcfg.rows_per_shard, "row_group_rows": pcfg.row_group_rows}
    manifests = {
        # Quarantine and events first, products last: later stages look for products first.
        "quarantine": write_shard_set(quarantine, layout.quarantine, meta={**meta, "table": "quarantine"}, **shard),
        "events": write_shard_set(events, layout.events, meta={**meta, "table": "events"}, **shard),
        "products": write_shard_set(products, layout.products, meta={**meta, "table": "products"}, **shard),
    }
    result = PrepareResult(counts, products.num_rows, events.num_rows, quarantine.num_rows, stubs, time.perf_counter() - start, manifests)
    log(result.table())
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    from cluster.config import ConfigError, load_config
    from data.sources import SourceError

    parser = argparse.ArgumentParser(prog="python -m data.prepare", description="Validate raw sources and write products/events/quarantine shards.")
    parser.add_argument("--config", "-c", default=None, help="YAML config (default: configs/local.yaml).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Override one key, e.g. --set data.sample.num_events=5000.")
    args = parser.parse_args(argv)
    try:
        prepare(load_config(args.config, args.overrides))
    except (ConfigError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
