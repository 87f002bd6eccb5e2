"""Deterministic Parquet shard sets, committed with a manifest, and readers that refuse anything else.

A shard set is a directory of `part-00000.parquet`, `part-00001.parquet`, ... with a fixed
number of rows per file and per row group, rows in a fixed order, and no timestamps in file
content, so the same table always gives byte-identical files. It is complete only when its
manifest (`core.manifest.MANIFEST_NAME`, listing every file's size and sha256) exists:

- local roots: files go to a staging directory that is renamed into place after the manifest
  is written (`core.manifest.staged_dir`), so an interrupted run leaves the previous set or none;
- other fsspec roots (s3://, gs://, memory://): object stores cannot rename a directory, so the
  old manifest is deleted first, the files are written, and the manifest is written last, as
  the commit marker. A set without it is never read.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from core.layout import ArtifactLayout
from core.manifest import MANIFEST_NAME, MANIFEST_VERSION, IncompleteDirError, staged_dir, verify_dir, write_manifest
from core.schemas import EVENTS, PRODUCTS, QUARANTINE


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _parquet_bytes(table: pa.Table, row_group_rows: int) -> bytes:
    buf = io.BytesIO()
    # Fixed writer options: the same table always serializes to the same bytes.
    pq.write_table(table, buf, row_group_size=row_group_rows, compression="zstd", write_statistics=True)
    return buf.getvalue()


def _shards(table: pa.Table, rows_per_shard: int, row_group_rows: int) -> list[tuple[str, bytes]]:
    count = max(1, -(-table.num_rows // rows_per_shard))  # one (possibly empty) file keeps the schema
    return [
        (f"part-{k:05d}.parquet", _parquet_bytes(table.slice(k * rows_per_shard, rows_per_shard), row_group_rows))
        for k in range(count)
    ]


def write_shard_set(
    table: pa.Table, uri: str, *, rows_per_shard: int, row_group_rows: int, meta: dict[str, Any]
) -> dict[str, Any]:
    """Write `table` (already in its final order) as a committed shard set at `uri`; return the manifest."""
    fs, path = fsspec.core.url_to_fs(uri)
    meta = {**meta, "rows": table.num_rows}
    if _is_local(fs):
        with staged_dir(Path(path)) as staging:
            for name, data in _shards(table, rows_per_shard, row_group_rows):
                (staging / name).write_bytes(data)
            write_manifest(staging, meta)
        return verify_dir(path)
    marker = f"{path}/{MANIFEST_NAME}"
    if fs.exists(marker):
        fs.rm(marker)  # uncommit first: from here on the old set is incomplete, never half-new
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    files = {}
    for name, data in _shards(table, rows_per_shard, row_group_rows):
        with fs.open(f"{path}/{name}", "wb") as f:
            f.write(data)
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"manifest_version": MANIFEST_VERSION, "meta": meta, "files": files}
    with fs.open(marker, "wb") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode())
    return manifest


def verify_shard_set(uri: str) -> dict[str, Any]:
    """The manifest of a complete shard set, else `IncompleteDirError` saying what is wrong."""
    fs, path = fsspec.core.url_to_fs(uri)
    hint = "; run `shopgraph data prepare` to (re)build it"
    try:
        if _is_local(fs):
            return verify_dir(path)
        marker = f"{path}/{MANIFEST_NAME}"
        if not fs.exists(marker):
            raise IncompleteDirError(f"{uri} has no {MANIFEST_NAME}: it was never completed")
        manifest = json.loads(fs.cat_file(marker))
        for name, info in manifest["files"].items():
            file = f"{path}/{name}"
            if not fs.exists(file) or fs.size(file) != info["size"]:
                raise IncompleteDirError(f"{uri}: {name} is missing or has the wrong size")
        return manifest
    except IncompleteDirError as e:
        raise IncompleteDirError(str(e) + hint) from None


def read_shard_set(uri: str, schema: pa.Schema) -> pa.Table:
    manifest = verify_shard_set(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    tables = [pq.read_table(f"{path}/{name}", filesystem=fs, schema=schema) for name in sorted(manifest["files"])]
    return pa.concat_tables(tables)


def read_products(layout: ArtifactLayout) -> pa.Table:
    """The committed products table (raises `IncompleteDirError` for a missing or partial set)."""
    return read_shard_set(layout.products, PRODUCTS)


def read_events(layout: ArtifactLayout) -> pa.Table:
    """The committed events table, ordered by (user_id, ts, input order)."""
    return read_shard_set(layout.events, EVENTS)


def read_quarantine(layout: ArtifactLayout) -> pa.Table:
    return read_shard_set(layout.quarantine, QUARANTINE)
