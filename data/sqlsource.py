"""`format: sql`: the online database (`core.store`) as a `data prepare` source, read with Ray Data.

    data:
      sources:
        - {name: shop-db, format: sql, table: products}     # url: unset = online.database_url / SQLite
        - {name: shop-db, format: sql, table: events, event_map: {impression: view}}

`read_dataset` runs `ray.data.read_sql` over the source's table (one query; sharded by row id
across read tasks where the database has MOD and ABS, as both SQLite and PostgreSQL do), every
column cast to text, so a value goes through the same converters (`data.readers.product_values`,
`event_values`) and the same quarantine as a CSV cell does. The password is never in the URL,
the config or a task argument: each read task takes it from `online.password_env` in its own
environment (the rendered manifests put the Secret there on every Ray pod).

What the database holds that files do not, and what becomes of it:

- soft-deleted products (`deleted_at` set): quarantined, reason "deleted in the online database
  (at <time>)"; a file source's row for the same product_id is quarantined too, so a product
  deleted through the API does not come back from an older catalog file;
- events with `flagged_reason` (e.g. unknown_product at ingest): quarantined, "flagged in the
  online database (<reason>)";
- impressions: not an event type of the contract, so, as for any source, quarantined as an
  unknown event type unless the source's `event_map` maps them (e.g. `{impression: view}`);
- user ids: `user_key` is already the pseudonym the API made (`core.privacy`). It is kept as
  is, never hashed again; a tombstoned pseudonym's rows are dropped and counted as erased, and a
  value that is not a pseudonym of a configured key is quarantined (its text withheld).

Provenance: `line` is the event's `id`, or the product's rank by product_id (stable while rows
are only added); `source` is the URL without password and the table.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from core.config.ingest import SourceConfig
from core.privacy import IngestPrivacy
from core.values import RowError
from data.readers import _Builder, event_values, mapping_for, product_values

DELETED = "deleted in the online database"  # reason prefix of soft-deleted product rows
FLAGGED = "flagged in the online database"
NOT_PSEUDONYM = (
    "user_key is not a pseudonym of a configured key (privacy.key_env): the API stores only pseudonyms; "
    "was the row written by hand, or its key dropped from the configuration?"
)
ROWS_PER_BLOCK = 200_000  # rows per read task: on a loaded 2-core box, 200k events read as 4 shards took 2x one read (each shard scans)

# The online tables' columns (core.store.models), every value as text: SQLite stores whatever it
# was given, and a stray text in a number column must reach the converters, not break the read.
_TEXT = "CAST({0} AS TEXT) AS {0}"
COLUMNS = {
    "products": [
        "product_id", "title", "category", "brand", "price", "attributes", "description", "in_stock",
        "updated_at", "deleted_at",
    ],
    "events": ["user_key", "product_id", "event", "ts", "value", "request_id", "idempotency_key", "flagged_reason"],
}  # fmt: skip
LINE = {"products": "ROW_NUMBER() OVER (ORDER BY product_id) AS _line", "events": "id AS _line"}


def query(table: str) -> str:
    return f"SELECT {LINE[table]}, {', '.join(_TEXT.format(c) for c in COLUMNS[table])} FROM {table}"


def display(url: str, table: str) -> str:
    """The `source` of this table's quarantine rows: the URL without its password, and the table."""
    from sqlalchemy.engine import make_url

    return f"{make_url(url).render_as_string(hide_password=True)}#{table}"


class Connect:
    """Ray Data's `connection_factory`: a DB-API connection to `url`, the password taken from
    `$password_env` in the process that connects (a read task), never carried with the task."""

    def __init__(self, url: str, password_env: str | None):
        self.url, self.password_env = url, password_env

    def __call__(self):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        parsed = make_url(self.url)
        if parsed.password is None and self.password_env and os.environ.get(self.password_env):
            parsed = parsed.set(password=os.environ[self.password_env])
        # NullPool: closing the connection (Ray Data does, after each read) really closes it.
        return create_engine(parsed, poolclass=NullPool).raw_connection()


def plan_sql(src: SourceConfig, i: int, url: str, url_key: str, password_env: str | None) -> dict[str, Any]:
    """Check the database before any work (reachable, table and columns there) and return the
    source's one plan entry; a problem raises `SourceError` naming `url_key`."""
    from sqlalchemy.engine import make_url

    from data.sources import SourceError

    shown = display(url, src.table)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not os.path.isfile(path):
            raise SourceError(
                f"source '{src.name}': no SQLite database at {path!r}; the Serve app creates it when events or "
                f"products are first written (online.enabled), or set {url_key} to the shop's database"
            )
    connection = None
    try:
        connection = Connect(url, password_env)()
        cursor = connection.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM {src.table}")
        rows = int(cursor.fetchone()[0])
        cursor.execute(f"{query(src.table)} LIMIT 0")
        cursor.fetchall()
    except Exception as e:  # the driver's own error types differ per database
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(
            f"source '{src.name}': cannot read table {src.table} of {shown} ({message}); check {url_key}, the "
            f"password in ${password_env}, and that the schema is migrated (core.store.upgrade)"
        ) from None
    finally:
        if connection is not None:
            connection.close()
    return {"src": i, "display": shown, "sql": True, "url": url, "password_env": password_env, "rows": rows}


def state(src: SourceConfig, url: str, password_env: str | None) -> str:
    """What changes whenever the table's rows do: row count plus the highest event id / the latest
    product write (`updated_at` moves on every write and delete). For the demo pipeline's
    "is prepare stale" check (cluster.pipeline.source_digests), without reading the rows."""
    latest = "MAX(id)" if src.table == "events" else "MAX(updated_at)"
    connection = Connect(url, password_env)()
    try:
        cursor = connection.cursor()
        cursor.execute(f"SELECT COUNT(*), {latest} FROM {src.table}")
        count, top = cursor.fetchone()
    finally:
        connection.close()
    return f"{display(url, src.table)} rows={count} latest={top}"


def read_dataset(chunk: dict[str, Any], source: dict[str, Any], privacy: IngestPrivacy | None, num_cpus: float):
    """Stage: the source's table as parsed rows (`data.prepare.compact_schema`), one per database row."""
    import ray.data

    from data.prepare import _compact

    src = SourceConfig.model_validate(source)
    blocks = max(1, math.ceil(chunk["rows"] / ROWS_PER_BLOCK))
    ds = ray.data.read_sql(
        query(src.table),
        Connect(chunk["url"], chunk["password_env"]),
        shard_keys=["_line"],
        shard_hash_fn="ABS",  # MOD(ABS(ABS(_line)), n): the row id itself spreads the rows
        override_num_blocks=blocks,
        num_cpus=num_cpus,
    )

    def parse(batch: pa.Table) -> pa.Table:
        return _compact(parse_rows(batch, chunk, src, privacy), chunk["index"], src.table)

    return ds.map_batches(parse, batch_format="pyarrow", batch_size=None, num_cpus=num_cpus)


def _iso(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(float(ms)) / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ms)


def parse_rows(rows: pa.Table, chunk: dict[str, Any], src: SourceConfig, privacy: IngestPrivacy | None) -> pa.Table:
    """Database rows (text columns plus `_line`) -> parsed rows (`data.readers.parsed_schema`),
    through the readers' converters and row builder."""
    mapping = mapping_for(src)
    b = _Builder(src.table, chunk["src"], chunk["display"], privacy, mapping, pseudonymized=True)
    if src.table == "products":
        for record in rows.to_pylist():
            line = int(record.pop("_line"))
            if (record["attributes"] or "").strip() == "null":  # SQLAlchemy's JSON column stores None as JSON null
                record["attributes"] = None
            raw = json.dumps(record, ensure_ascii=False)
            if record["deleted_at"] is not None:
                b.bad(line, 0, f"{DELETED} (at {_iso(record['deleted_at'])})", raw, product_id=record["product_id"])
                continue
            try:
                b.ok(line, 0, product_values(record, src, mapping, line))
            except RowError as e:
                b.bad(line, 0, str(e), raw)
        return b.to_arrow()
    event_map = dict(src.event_map)
    for record in rows.to_pylist():
        line = int(record.pop("_line"))
        raw = json.dumps(record, ensure_ascii=False)
        if record["flagged_reason"] is not None:
            b.bad(line, 0, f"{FLAGGED} ({record['flagged_reason']})", raw, record)
            continue
        try:
            values = event_values(record, src, mapping, event_map, line)
            if privacy is not None and not privacy.pseudonymizer.is_pseudonym(values["user_id"]):
                raise RowError(NOT_PSEUDONYM)
            b.ok(line, 0, values)
        except RowError as e:
            b.bad(line, 0, str(e), raw, record)
    return b.to_arrow()
