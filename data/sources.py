"""Plan the read of `data.sources` before any work: resolve files, check them, cut chunks.

Everything that would make the whole run pointless — a path that matches nothing, a file that
cannot be opened, a required or mapped column missing from a header — raises `SourceError`
here, naming the file, the column and the config key to change. Only then do Ray tasks start.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from core.config.ingest import SourceConfig
from core.values import RowError
from data.readers import DEFAULT_DELIMITER, HEADER_FORMATS, JSON_FORMATS, _json_record, required_source_columns

_SCAN = 8 * 1024 * 1024  # bytes read at a time when counting lines for chunk offsets
_PROBE_LINES = 20  # JSON lines looked at to find one record whose keys can be checked


class SourceError(ValueError):
    """A source cannot be read at all; the message names the file and the key to change."""


def _key(i: int, field: str) -> str:
    return f"data.sources[{i}].{field}"


def resolve_files(src: SourceConfig, i: int) -> list[tuple[fsspec.AbstractFileSystem, str]]:
    fs, path = fsspec.core.url_to_fs(src.path)
    if any(c in path for c in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        files = sorted(p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith((".", "_")))
    elif fs.exists(path):
        files = [path]
    else:
        raise SourceError(f"source '{src.name}': {src.path} does not exist; fix {_key(i, 'path')}")
    files = [p for p in files if fs.isfile(p)]
    if not files:
        raise SourceError(f"source '{src.name}': no file matches {src.path}; fix {_key(i, 'path')}")
    return [(fs, p) for p in files]


def _display(fs: fsspec.AbstractFileSystem, path: str, src: SourceConfig) -> str:
    # Local files keep the spelling of the config (relative stays relative: reruns elsewhere match).
    if "://" not in src.path and fs.protocol in ("file", "local", ("file", "local")):
        return path if src.path.startswith("/") else _relative(path, src.path)
    return fs.unstrip_protocol(path)


def _relative(abs_path: str, configured: str) -> str:
    import os

    try:
        return os.path.relpath(abs_path)
    except ValueError:
        return configured


def _first_line(fs: fsspec.AbstractFileSystem, path: str, encoding: str, compressed: bool) -> tuple[str, int]:
    """The first line (decoded) and its byte length including the newline."""
    with fs.open(path, "rb", compression="infer" if compressed else None) as f:
        raw = f.readline()
    text = raw.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n").decode(encoding)
    return text, len(raw)


def _shown(have: list[str]) -> str:
    return ", ".join(have[:30]) + (" ..." if len(have) > 30 else "")


def _check_columns(have: list[str], src: SourceConfig, i: int, file: str, what: str) -> None:
    for contract, column in required_source_columns(src).items():
        if column not in have:
            raise SourceError(
                f"source '{src.name}': {file} has no column {column!r} (needed for {contract}); {what}: [{_shown(have)}]; "
                f"set {_key(i, f'mapping.{contract}')} to one of them"
            )
    _check_attribute_columns(have, src, i, file, what)


def _check_attribute_columns(have, src: SourceConfig, i: int, file: str, what: str) -> None:
    missing = [c for c in src.attribute_columns if c not in have]
    if missing:
        raise SourceError(
            f"source '{src.name}': {file} has no column {missing[0]!r} (named in {_key(i, 'attribute_columns')}"
            f"{f'; also missing: {missing[1:]}' if missing[1:] else ''}); {what}: [{_shown(list(have))}]; "
            f"fix or remove it in {_key(i, 'attribute_columns')}"
        )


def _line_chunks(fs, path: str, start: int, size: int, chunk_bytes: int) -> list[tuple[int, int, int]]:
    """(start, end, lines before) byte ranges of about `chunk_bytes`, each cut right after a newline."""
    if size - start <= chunk_bytes:
        return [(start, -1, 0)]
    cuts: list[tuple[int, int]] = []  # (offset just after a newline, newlines before that offset)
    with fs.open(path, "rb") as f:
        f.seek(start)
        pos, lines, target = start, 0, start + chunk_bytes
        while block := f.read(_SCAN):
            done = 0
            while target < pos + len(block):
                cut = block.find(b"\n", max(target - pos, done))
                if cut < 0:
                    break
                lines += block.count(b"\n", done, cut + 1)
                done = cut + 1
                cuts.append((pos + done, lines))
                target = pos + done + chunk_bytes
            lines += block.count(b"\n", done)
            pos += len(block)
    cuts = [c for c in cuts if c[0] < size]
    starts = [(start, 0), *cuts]
    return [(s, starts[k + 1][0] if k + 1 < len(starts) else -1, n) for k, (s, n) in enumerate(starts)]


def plan_source(src: SourceConfig, i: int, chunk_bytes: int) -> list[dict[str, Any]]:
    """Check one source and cut it into parse tasks (dicts, so Ray Data can carry them)."""
    chunks = []
    files = resolve_files(src, i)
    if src.id_from == "line" and len(files) > 1:
        raise SourceError(
            f"source '{src.name}': id_from: line numbers the lines of one file, but {src.path!r} matches {len(files)} files "
            f"(their line numbers would collide); give each file its own source with its own {_key(i, 'id_prefix')}"
        )
    for fs, path in files:
        display = _display(fs, path, src)
        compressed = path.endswith(".gz")
        uri = fs.unstrip_protocol(path)
        base = {"src": i, "path": uri, "display": display, "compressed": compressed, "header": None}
        try:
            size = fs.size(path)
            if src.format == "parquet":
                _check_columns(pq.read_schema(fs.open(path, "rb")).names, src, i, display, "its Parquet columns are")
                chunks.append({**base, "start": 0, "end": -1, "first_line": 1, "is_file_end": True})
                continue
            start, first_line = 0, 1
            if src.format in HEADER_FORMATS:
                text, nbytes = _first_line(fs, path, src.encoding, compressed)
                header = next(
                    csv.reader(io.StringIO(text), delimiter=src.delimiter or DEFAULT_DELIMITER[src.format]), []
                )
                header = [h.strip() for h in header]
                _check_columns(header, src, i, display, "its header is")
                base["header"], start, first_line = header, (0 if compressed else nbytes), 2
            elif src.format in JSON_FORMATS:
                _probe_json(fs, path, src, i, display, compressed)
        except UnicodeDecodeError as e:
            raise SourceError(
                f"source '{src.name}': the first line of {display} is not {src.encoding} ({e.reason}); set {_key(i, 'encoding')}"
            ) from None
        except (OSError, pa.ArrowInvalid) as e:
            raise SourceError(
                f"source '{src.name}': cannot read {display} ({e}); fix {_key(i, 'path')} or the file's permissions"
            ) from None
        ranges = [(start, -1, 0)] if compressed else _line_chunks(fs, path, start, size, chunk_bytes)
        for j, (s, e, lines_before) in enumerate(ranges):
            chunks.append(
                {
                    **base,
                    "start": s,
                    "end": e,
                    "first_line": first_line + lines_before,
                    "is_file_end": j == len(ranges) - 1,
                }
            )
    return chunks


def _probe_json(fs, path: str, src: SourceConfig, i: int, display: str, compressed: bool) -> None:
    """Check the id keys on the first parsable record, `attribute_columns` on the keys of the first
    `_PROBE_LINES` records (JSON keys come and go per record: a column in none of them is a typo)."""
    records = []
    with fs.open(path, "rb", compression="infer" if compressed else None) as f:
        for _ in range(_PROBE_LINES):
            raw = f.readline()
            if not raw:
                break
            try:
                record = _json_record(raw.decode(src.encoding, "replace"), src.format == "amazon_metadata")
            except (RowError, json.JSONDecodeError):
                continue
            if src.format == "amazon_metadata" and "categories" not in record and "category" in record:
                record["categories"] = record["category"]
            records.append(record)
    if not records:
        return
    record, keys = records[0], list(records[0])
    # Only the ids must be in the first record.
    required = {c: s for c, s in required_source_columns(src).items() if c in ("product_id", "user_id")}
    missing = {c: s for c, s in required.items() if s not in record}
    if missing:
        contract, column = next(iter(missing.items()))
        raise SourceError(
            f"source '{src.name}': the first record of {display} has no key {column!r} (needed for {contract}); "
            f"its keys are {keys[:30]}; set {_key(i, f'mapping.{contract}')} to one of them"
            + (f", or set {_key(i, 'id_from')}: line to number the records" if contract == "product_id" else "")
        )
    seen = sorted({k for r in records for k in r})
    _check_attribute_columns(seen, src, i, display, f"the keys of its first {len(records)} records are")


def plan_sources(
    sources: list[SourceConfig],
    chunk_mb: int,
    *,
    database_url: str | None = None,
    password_env: str | None = None,
) -> list[dict[str, Any]]:
    """Every parse task. A `format: sql` source is one entry (`data.sqlsource.plan_sql`), read from
    its own `url` or else `database_url` (the online database, `core.store.database_url`)."""
    chunks: list[dict[str, Any]] = []
    for i, src in enumerate(sources):
        if src.format != "sql":
            chunks += plan_source(src, i, chunk_mb * 1024 * 1024)
            continue
        from data.sqlsource import plan_sql

        url, key = (src.url, _key(i, "url")) if src.url else (database_url, "online.database_url")
        if not url:
            raise SourceError(f"source '{src.name}': no database to read; set {_key(i, 'url')} or online.database_url")
        chunks.append(plan_sql(src, i, url, key, password_env))
    return chunks
