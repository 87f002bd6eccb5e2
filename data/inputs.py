"""Inputs of the derived-data stages (splits, corpora, embeddings, index): products and events.

    python -m data.splits --config configs/local.yaml     # one of the stages that reads them

`load_products(layout)` and `load_events(layout)` are the single place those stages read the
prepared shard sets from: the shard writer's own readers (`core.shards`), which refuse a
missing or partially written set, with the error turned into "run `shopgraph data prepare`".

The local-directory rule for committed outputs and how a stage joins Ray live in `core.runtime`.
"""

from __future__ import annotations

import pyarrow as pa

from core.layout import ArtifactLayout


def _read_shard_set(read, layout: ArtifactLayout, what: str) -> pa.Table:
    from core.manifest import IncompleteDirError

    try:
        return read(layout)
    except IncompleteDirError as e:  # never prepared, or interrupted: say which stage to run
        raise FileNotFoundError(f"no complete {what} shard set ({e})") from None


def load_products(layout: ArtifactLayout) -> pa.Table:
    """Every product row of the committed shard set (`core.shards`), as a `PRODUCTS` table."""
    from core.shards import read_products

    return _read_shard_set(read_products, layout, "products")


def load_events(layout: ArtifactLayout) -> pa.Table:
    """Every event row of the committed shard set, as an `EVENTS` table, in shard order, less the
    rows of erased users (`load_events_counted`)."""
    return load_events_counted(layout)[0]


def load_events_counted(layout: ArtifactLayout) -> tuple[pa.Table, int]:
    """(events, rows dropped): the committed events less the rows of users with a tombstone
    (`core.privacy.TombstoneStore`), so a stage run after an erasure never sees them, even from
    shards prepared before it. Stages record the count in their manifests as `erased`."""
    import pyarrow.compute as pc

    from core.privacy import TombstoneStore
    from core.shards import read_events

    events = _read_shard_set(read_events, layout, "events")
    keys = TombstoneStore(layout.root).keys()
    if not keys or not events.num_rows:
        return events, 0
    gone = pc.is_in(events["user_id"], value_set=pa.array(sorted(keys), pa.string()))
    n = int(pc.sum(gone).as_py() or 0)
    return (events.filter(pc.invert(gone)), n) if n else (events, 0)


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Select and cast `table` to `schema`, or say which column is missing or mistyped."""
    missing = [n for n in schema.names if n not in table.column_names]
    required = [f.name for f in schema if not f.nullable]
    if any(n in required for n in missing):
        raise ValueError(f"{what} table lacks required column(s) {missing}; it must follow core.schemas.{what.upper()}")
    for name in missing:  # optional columns may be absent: fill with nulls
        table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise ValueError(f"{what} table does not cast to core.schemas.{what.upper()}: {e}") from e
