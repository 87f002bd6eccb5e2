"""Readers for real formats: one chunk of one raw file -> rows of the products/events contracts.

Every input record becomes exactly one parsed row: either the contract columns filled, or
`_reason` set (the quarantine reason) with `_raw` holding the record as text. `_src`, `_file`,
`_line` (1-based) and `_sub` (position within a line, for files that hold several events per
line) say where it came from; they fix the order of ties and are dropped before writing.

Text is decoded line by line, so one line in a wrong encoding is quarantined instead of
failing the file. Blank lines are not records and are not counted.

Formats (`data.sources[].format`):

- csv / jsonl / parquet: generic, columns named by `mapping` (contract column -> source column).
  `attribute_columns` sends further columns into `attributes` (Myntra's Primary_Color -> colour);
  `id_from: line` gives records without an id the id `<id_prefix>L<line>` (default prefix "<name>:").
- amazon_reviews / amazon_metadata: the 2014 and 2018 Amazon review dumps (JSON lines, gzip or
  not; the 2014 metadata is Python-literal dicts, read with `ast.literal_eval` as a fallback).
- user_item_pairs: "user item" per line, in time order; user_item_sequences: "user item item ...",
  one user per line, items in time order (as the S3-Rec / SASRec data files). Neither format has
  timestamps: they are synthesized, monotonically increasing in file order (one second apart,
  from 2000-01-01 UTC), so that "sort by time" reproduces the file order.
- retailrocket: `timestamp,visitorid,event,itemid[,transactionid]`, ms timestamps,
  view / addtocart / transaction -> view / cart / purchase.
- attribute_catalog: a delimited file whose attributes column holds `key#value*key#value`
  (common in Chinese e-commerce data); other fields may come from it via `attributes.<key>`.

Attributes are multi-valued: a key given several values (`风格#复古*风格#简约`, a JSON list, an
attribute column naming an existing key) keeps all of them, in order, exact repeats dropped; the
products table stores them as the key repeated in the `attributes` map (core.schemas).
"""

from __future__ import annotations

import ast
import codecs
import csv
import json
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa

from core.config.ingest import SourceConfig
from core.pii import scrub
from core.privacy import IngestPrivacy as Privacy
from core.schemas import EVENTS, PRODUCTS
from core.values import (
    RowError,
    add_value,
    as_attributes,
    as_event,
    as_float,
    as_id,
    as_text,
    as_timestamp_ms,
    product_row,
)

csv.field_size_limit(1 << 30)  # product descriptions can be long

SYNTH_TS_BASE_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: synthesized timestamps start here

# `_reason` of an event row whose user is tombstoned (`core.privacy`): counted as erased, never quarantined.
ERASED = "erased: the user asked to be forgotten"
# `_raw` of a rejected event line that could not be parsed far enough to find its user id.
WITHHELD = "<withheld: unparsable event record, it may hold a raw user id>"
# The user field of a database event whose user_key is not a pseudonym (data.sqlsource).
WITHHELD_USER = "<withheld: not a pseudonym>"

REQUIRED = {"products": ("product_id", "title"), "events": ("user_id", "product_id", "event", "ts")}

DEFAULT_MAPPING: dict[str, dict[str, str]] = {
    "amazon_reviews": {
        "user_id": "reviewerID",
        "product_id": "asin",
        "value": "overall",
        "ts": "unixReviewTime",
        "text": "reviewText",
    },
    "amazon_metadata": {
        "product_id": "asin",
        "title": "title",
        "brand": "brand",
        "category": "categories",
        "price": "price",
        "description": "description",
    },
    "retailrocket": {"ts": "timestamp", "user_id": "visitorid", "event": "event", "product_id": "itemid"},
}
DEFAULT_EVENT_MAP = {"retailrocket": {"view": "view", "addtocart": "cart", "transaction": "purchase"}}
DEFAULT_EVENT = {"amazon_reviews": "rating", "user_item_pairs": "view", "user_item_sequences": "view"}
DEFAULT_TS_UNIT = {"retailrocket": "ms", "amazon_reviews": "s", "sql": "ms"}  # the online database stores ms
DEFAULT_DELIMITER = {"csv": ",", "retailrocket": ",", "attribute_catalog": "\t"}
HEADER_FORMATS = ("csv", "retailrocket", "attribute_catalog")
JSON_FORMATS = ("jsonl", "amazon_reviews", "amazon_metadata")

META_FIELDS = [
    pa.field("_src", pa.int32()),
    pa.field("_file", pa.string()),
    pa.field("_line", pa.int64()),
    pa.field("_sub", pa.int32()),
    pa.field("_reason", pa.string()),
    pa.field("_raw", pa.string()),
]


def parsed_schema(table: str) -> pa.Schema:
    """Contract columns (all nullable: rejected rows leave them empty) plus provenance."""
    base = PRODUCTS if table == "products" else EVENTS
    return pa.schema([f.with_nullable(True) for f in base] + META_FIELDS)


def mapping_for(src: SourceConfig) -> dict[str, str]:
    columns = [f.name for f in (PRODUCTS if src.table == "products" else EVENTS)]
    identity = {c: c for c in columns} if src.format not in DEFAULT_MAPPING else {}
    if src.format == "sql" and src.table == "events":
        identity["user_id"] = "user_key"  # core.store.models.EventRow
    return {**identity, **DEFAULT_MAPPING.get(src.format, {}), **src.mapping}


def ts_unit(src: SourceConfig) -> str:
    return DEFAULT_TS_UNIT.get(src.format, "auto") if src.timestamp_unit == "auto" else src.timestamp_unit


def default_event(src: SourceConfig) -> str | None:
    return src.default_event or DEFAULT_EVENT.get(src.format)


def required_source_columns(src: SourceConfig) -> dict[str, str]:
    """Contract column -> source column that must exist in the file (checked before any work).

    The contract's required columns, plus every column the user mapped explicitly: a typo in
    `mapping` should stop the run, not turn into a column of nulls.
    """
    mapping = mapping_for(src)
    needed = {c: mapping[c] for c in REQUIRED[src.table] if c in mapping}
    if src.table == "events" and default_event(src) and "event" not in src.mapping:
        needed.pop("event", None)
    if src.id_from == "line":
        needed.pop("product_id", None)
    needed.update(src.mapping)
    return {c: s for c, s in needed.items() if not s.startswith("attributes.")}


def line_id(src: SourceConfig, line: int) -> str:
    """The product id of the record on `line` (1-based) when `id_from: line`: stable while the file's
    lines stay where they are (appending keeps every id; inserting or deleting lines shifts them)."""
    prefix = src.id_prefix if src.id_prefix is not None else f"{src.name}:"
    return f"{prefix}L{line}"


# ---------------------------------------------------------------------------------------------
# rows


class _Builder:
    """Column lists for one chunk's parsed rows."""

    def __init__(
        self,
        table: str,
        src_idx: int,
        file: str,
        privacy: Privacy | None = None,
        mapping: dict[str, str] | None = None,
        pseudonymized: bool = False,
    ):
        self.table, self.src_idx, self.file = table, src_idx, file
        self.schema = parsed_schema(table)
        self.cols: dict[str, list[Any]] = {f.name: [] for f in self.schema}
        # Events only: raw user ids become pseudonyms here, inside the parse task, before any row
        # leaves it; rows of tombstoned users leave as `ERASED` markers (pseudonym, no raw text).
        self.privacy = privacy if table == "events" else None
        # The online database's user ids are pseudonyms already (made at the API edge): kept as
        # they are, never hashed a second time (data.sqlsource).
        self.pseudonymized = pseudonymized
        self.user_col = (mapping or {}).get("user_id")
        self.mapped = set((mapping or {}).values())
        self._users: dict[str, tuple[str, bool]] = {}  # raw id -> (pseudonym, erased), this chunk only

    def ok(self, line: int, sub: int, values: dict[str, Any]) -> None:
        if self.privacy is not None:
            pseudonym, erased = self._user(values["user_id"])
            if erased:
                return self._erased_row(line, sub, pseudonym)
            values = {**values, "user_id": pseudonym}
        for name, col in self.cols.items():
            if not name.startswith("_"):
                col.append(values.get(name))
        self._meta(line, sub, None, None)

    def bad(
        self,
        line: int,
        sub: int,
        reason: str,
        raw: str | None,
        record: dict | None = None,
        user: str | None = None,
        product_id: str | None = None,
    ) -> None:
        """A rejected row. For events under `privacy`, its raw text keeps no raw user id: the parsed
        `record` is written back as JSON, mapped fields only, its user field pseudonymized; a
        sequence line gets its leading `user` replaced; a line that could not be parsed is withheld."""
        if self.privacy is not None:
            known = record.get(self.user_col) if record is not None and self.user_col else user
            if isinstance(known, str | int) and not isinstance(known, bool) and str(known).strip():
                pseudonym, erased = self._user(str(known).strip())
                if erased:  # an erased user's rejected rows are not kept either
                    return self._erased_row(line, sub, pseudonym)
            if raw is not None:
                raw = self._scrub(raw, record, user)
        for name, col in self.cols.items():
            if not name.startswith("_"):
                col.append(product_id if name == "product_id" else None)  # product_id: a deleted product's id
        self._meta(line, sub, reason, scrub(raw) if raw else raw)  # the quarantine keeps free text too

    def _erased_row(self, line: int, sub: int, pseudonym: str) -> None:
        for name, col in self.cols.items():
            if not name.startswith("_"):
                col.append(pseudonym if name == "user_id" else None)
        self._meta(line, sub, ERASED, None)

    def _user(self, raw: str) -> tuple[str, bool]:
        got = self._users.get(raw)
        if got is None and self.pseudonymized:
            if self.privacy.pseudonymizer.is_pseudonym(raw):  # tombstones hold every key's pseudonym
                got = self._users[raw] = (raw, raw in self.privacy.tombstones)
            else:  # not ours: perhaps a raw id, so its text goes nowhere
                got = self._users[raw] = (WITHHELD_USER, False)
        elif got is None:
            got = self._users[raw] = (self.privacy.pseudonymizer.user_key(raw), self.privacy.erased(raw))
        return got

    def _scrub(self, raw: str, record: dict | None, user: str | None) -> str:
        """Only the mapped fields of a parsed record are kept (a review dump's reviewerName and the
        like never reach the quarantine), its user field as the pseudonym."""
        if record is not None:
            kept = {k: v for k, v in record.items() if k in self.mapped}
            value = kept.get(self.user_col) if self.user_col else None
            if value is not None:
                kept[self.user_col] = self._user(str(value).strip())[0]
            return json.dumps(kept, ensure_ascii=False, default=str)
        if user:
            return raw.replace(user, self._user(user)[0], 1)
        return WITHHELD

    def _meta(self, line: int, sub: int, reason: str | None, raw: str | None) -> None:
        self.cols["_src"].append(self.src_idx)
        self.cols["_file"].append(self.file)
        self.cols["_line"].append(line)
        self.cols["_sub"].append(sub)
        self.cols["_reason"].append(reason)
        self.cols["_raw"].append(raw)

    def to_arrow(self) -> pa.Table:
        if self.table == "products":  # a multi-valued attribute is its key repeated, values in order
            self.cols["attributes"] = [
                None if a is None else [(k, x) for k, v in a.items() for x in (v if isinstance(v, list) else [v])]
                for a in self.cols["attributes"]
            ]
        return pa.Table.from_pydict(self.cols, schema=self.schema)


def _get(record: dict[str, Any], key: str, attributes: dict[str, Any] | None) -> Any:
    if key.startswith("attributes.") and key not in record:
        value = (attributes or {}).get(key.removeprefix("attributes."))
        return ", ".join(value) if isinstance(value, list) else value  # several values: all of them, as text
    return record.get(key)


def _add_columns(attributes: dict[str, Any] | None, record: dict[str, Any], columns: dict[str, str]) -> dict | None:
    """`attribute_columns` (source column -> attribute key) merged into the parsed attributes: a key
    already there gains the column's value as a further value; an empty cell adds nothing."""
    out = dict(attributes or {})
    for column, key in columns.items():
        value = record.get(column)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict | list):
                raise RowError(
                    f"column {column!r} (attribute_columns) holds a nested {type(v).__name__}, expected text"
                )
            if text := ("" if v is None else str(v).strip()):
                add_value(out, key, text)
    return out if out else attributes


def product_values(record: dict[str, Any], src: SourceConfig, mapping: dict[str, str], line: int) -> dict[str, Any]:
    kv = src.format == "attribute_catalog"
    attributes = as_attributes(record.get(mapping["attributes"]), kv=kv) if "attributes" in mapping else None
    if src.attribute_columns:
        attributes = _add_columns(attributes, record, src.attribute_columns)
    get = lambda c: _get(record, mapping[c], attributes) if c in mapping else None  # noqa: E731
    row = product_row(
        lambda c: attributes if c == "attributes" else get(c),
        unit=ts_unit(src),
        product_id=line_id(src, line) if src.id_from == "line" else None,
    )
    return row  # personal data in its text scrubbed by product_row, as review text is


def _free_text(text: str | None) -> str | None:
    """Free text (descriptions, reviews, queries) as shards keep it: personal data replaced (`core.pii`)."""
    return scrub(text) if text else text


def event_values(
    record: dict[str, Any], src: SourceConfig, mapping: dict[str, str], event_map: dict[str, str], line: int
) -> dict[str, Any]:
    get = lambda c: record.get(mapping[c]) if c in mapping else None  # noqa: E731
    fallback = default_event(src)
    raw_event = get("event")
    return {
        "user_id": as_id(get("user_id"), "user_id"),
        "product_id": as_id(get("product_id"), "product_id"),
        "event": fallback if raw_event is None and fallback else as_event(raw_event, event_map),
        "ts": as_timestamp_ms(get("ts"), ts_unit(src)),
        "value": as_float(get("value"), "value"),
        "text": _free_text(as_text(get("text"), "text")),
    }


# ---------------------------------------------------------------------------------------------
# bytes -> lines -> records


def _lines(
    data: bytes, first_line: int, encoding: str, is_file_end: bool
) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text or None, error) per non-blank line; undecodable lines carry an error."""
    parts = data.split(b"\n")
    ends_with_newline = parts[-1] == b""
    if ends_with_newline:
        parts.pop()
    for i, raw in enumerate(parts):
        line = first_line + i
        raw = raw.removesuffix(b"\r")
        if line == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            continue
        truncated = is_file_end and not ends_with_newline and i == len(parts) - 1
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as e:
            yield (
                line,
                raw.decode(encoding, "replace"),
                f"invalid {encoding} at byte {e.start} of the line ({e.reason})",
            )
            continue
        yield line, text, ("TRUNCATED" if truncated else None)


def _note(error: str | None) -> str:
    return " (last line has no newline: truncated file?)" if error == "TRUNCATED" else ""


def _json_record(text: str, python_literals: bool) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        record = None
        if python_literals:  # Amazon 2014 metadata: {'asin': '...', 'categories': [[...]]}
            try:
                record = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
        if record is None:
            raise RowError(f"malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    return record


def _parse_json(b: _Builder, data: bytes, chunk: dict[str, Any], src: SourceConfig, convert) -> None:
    literals = src.format == "amazon_metadata"
    for line, text, err in _lines(data, chunk["first_line"], src.encoding, chunk["is_file_end"]):
        if err and err != "TRUNCATED":
            b.bad(line, 0, err, text)
            continue
        record = None
        try:
            record = _json_record(text, literals)
            if src.format == "amazon_metadata" and "categories" not in record and "category" in record:
                record["categories"] = record["category"]  # 2018 shape
            b.ok(line, 0, convert(record, line))
        except RowError as e:
            b.bad(line, 0, str(e) + _note(err), text, record)


def _parse_delimited(b: _Builder, data: bytes, chunk: dict[str, Any], src: SourceConfig, convert) -> None:
    header: list[str] = chunk["header"]
    delimiter = src.delimiter or DEFAULT_DELIMITER[src.format]
    consumed: list[tuple[int, str, str | None]] = []

    def feed() -> Iterator[str]:
        for line, text, err in _lines(data, chunk["first_line"], src.encoding, chunk["is_file_end"]):
            if err and err != "TRUNCATED":
                b.bad(line, 0, err, text)
                continue
            consumed.append((line, text, err))
            yield text + "\n"

    reader = csv.reader(feed(), delimiter=delimiter)
    while True:
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error as e:
            fields, error = None, f"malformed CSV: {e}"
        lines, consumed[:] = list(consumed), []
        if not lines:
            continue
        line, raw, note = lines[0][0], "\n".join(t for _, t, _ in lines), _note(lines[-1][2])
        if error is None and len(fields) != len(header):
            error = f"expected {len(header)} fields, got {len(fields)}"
        if error:
            b.bad(line, 0, error + note, raw)
            continue
        record = dict(zip(header, fields, strict=True))
        try:
            b.ok(line, 0, convert(record, line))
        except RowError as e:
            b.bad(line, 0, str(e) + note, raw, record)


def _parse_sequences(b: _Builder, data: bytes, chunk: dict[str, Any], src: SourceConfig) -> None:
    pairs = src.format == "user_item_pairs"
    event = default_event(src)
    for line, text, err in _lines(data, chunk["first_line"], src.encoding, chunk["is_file_end"]):
        if err and err != "TRUNCATED":
            b.bad(line, 0, err, text)
            continue
        tokens = text.split(src.delimiter) if src.delimiter else text.split()
        tokens = [t.strip() for t in tokens]
        if pairs and len(tokens) != 2:
            b.bad(line, 0, f"expected 'user item', got {len(tokens)} fields" + _note(err), text, user=tokens[0])
            continue
        if not pairs and len(tokens) < 2:
            b.bad(line, 0, "expected 'user item item ...', got a user with no items" + _note(err), text, user=tokens[0])
            continue
        user = tokens[0]
        for j, item in enumerate(tokens[1:]):
            if not item:
                b.bad(line, j, f"empty product_id at position {j + 1}", text, user=user)
                continue
            # One second per step: pairs files are ordered globally, sequence files per user.
            ts = SYNTH_TS_BASE_MS + 1000 * (line if pairs else j)
            b.ok(line, j, {"user_id": user, "product_id": item, "event": event, "ts": ts, "value": None, "text": None})


def _parse_parquet(b: _Builder, path: str, src: SourceConfig, convert) -> None:
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        line = 0
        for batch in pf.iter_batches(batch_size=65536):
            for record in batch.to_pylist():
                line += 1
                try:
                    b.ok(line, 0, convert(record, line))
                except RowError as e:
                    b.bad(line, 0, str(e), json.dumps(record, ensure_ascii=False, default=str), record)


def read_bytes(chunk: dict[str, Any]) -> bytes:
    if chunk["compressed"]:
        with fsspec.open(chunk["path"], "rb", compression="infer") as f:
            return f.read()
    with fsspec.open(chunk["path"], "rb") as f:
        f.seek(chunk["start"])
        return f.read(chunk["end"] - chunk["start"]) if chunk["end"] >= 0 else f.read()


def parse_chunk(chunk: dict[str, Any], src: SourceConfig, privacy: Privacy | None = None) -> pa.Table:
    """Parse one chunk (a byte range of a file, or a whole file) into parsed rows.

    With `privacy`, event rows carry pseudonyms, never raw user ids (`_Builder`)."""
    mapping = mapping_for(src)
    b = _Builder(src.table, chunk["src"], chunk["display"], privacy, mapping)
    if src.table == "products":
        convert = lambda r, line: product_values(r, src, mapping, line)  # noqa: E731
    else:
        event_map = {**DEFAULT_EVENT_MAP.get(src.format, {}), **src.event_map}
        convert = lambda r, line: event_values(r, src, mapping, event_map, line)  # noqa: E731
    if src.format == "parquet":
        _parse_parquet(b, chunk["path"], src, convert)
        return b.to_arrow()
    data = read_bytes(chunk)
    if chunk["compressed"] and chunk["header"] is not None:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""  # header was read by the planner
    if src.format in JSON_FORMATS:
        _parse_json(b, data, chunk, src, convert)
    elif src.format in HEADER_FORMATS:
        _parse_delimited(b, data, chunk, src, convert)
    else:
        _parse_sequences(b, data, chunk, src)
    return b.to_arrow()
