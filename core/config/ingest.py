"""Typed config of the ingest side of `data:` — raw sources, the sample generator, shard sizes.

Lives beside `core/config/data.py` (which mounts these models as `data.sources`, `data.sample` and
`data.prepare`) so the readers and their config read together:

    shopgraph cluster show-config --set 'data.sources=[{name: toys, format: user_item_sequences, path: raw/Toys_and_Games.txt, table: events}]'
"""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SourceFormat = Literal[
    "csv",
    "jsonl",
    "parquet",
    "amazon_reviews",
    "amazon_metadata",
    "user_item_pairs",
    "user_item_sequences",
    "retailrocket",
    "attribute_catalog",
    "sql",
]

# Formats whose rows can only be one kind of table.
FORMAT_TABLE: dict[str, str] = {
    "amazon_reviews": "events",
    "amazon_metadata": "products",
    "user_item_pairs": "events",
    "user_item_sequences": "events",
    "retailrocket": "events",
    "attribute_catalog": "products",
}

PRODUCT_COLUMNS = (
    "product_id",
    "title",
    "category",
    "brand",
    "price",
    "attributes",
    "description",
    "in_stock",
    "updated_at",
)
EVENT_COLUMNS = ("user_id", "product_id", "event", "ts", "value", "text")


class SourceConfig(BaseModel):
    """One raw input: a file, a glob or a directory in one format, feeding one table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        min_length=1,
        description="Short name used in the row-accounting table and as `source` prefix in quarantine rows.",
    )
    format: SourceFormat = Field(
        ...,
        description="Reader to use: csv, jsonl, parquet (generic, with `mapping`), amazon_reviews, amazon_metadata (2014/2018 JSON(L), gzip or not), user_item_pairs ('user item' per line), user_item_sequences ('user item item ...' per line), retailrocket (timestamp,visitorid,event,itemid[,transactionid]), attribute_catalog (delimited file with a 'key#value*key#value' attributes column), sql (the online database's products or events table, read with Ray Data read_sql; see `url`).",
    )
    path: str | None = Field(
        None,
        min_length=1,
        description="File, glob (`raw/*.csv`) or directory; a local path or any fsspec URI. Files ending in .gz are decompressed. Required by every format but sql.",
    )
    url: str | None = Field(
        None,
        min_length=1,
        description="format sql only: SQLAlchemy URL of the database to read, without a password (it comes from online.password_env); None = online.database_url, else the embedded SQLite under artifacts.root.",
    )
    table: Literal["products", "events"] = Field(..., description="Contract table the rows become: products or events.")
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Contract column -> source column (or JSON key). Merged over the format's defaults; a value 'attributes.<key>' takes the field from the parsed attributes (e.g. brand: attributes.品牌; several values are joined with ', ').",
    )
    attribute_columns: dict[str, str] = Field(
        default_factory=dict,
        description="Products only: further source columns (or JSON keys) that become attributes, as {column: attribute key} (e.g. {Primary_Color: colour, Gender: gender}) or a list of columns kept under their own names. Every column must exist in the file (checked before any work); empty cells add nothing; a key already in the attributes gains the value as a further value.",
    )
    id_from: Literal["column", "line"] = Field(
        "column",
        description="Products only: where product_id comes from. column: the mapped product_id column (a record without one is quarantined); line: the record's 1-based line number in its file (row number for Parquet), as '<id_prefix>L<line>', for catalogs without ids. Stable while lines are only appended; needs a single file.",
    )
    id_prefix: str | None = Field(
        None,
        description="Prefix of line-number ids (id_from: line); None = '<name>:' (e.g. 'advertisegen:L12').",
    )
    encoding: str = Field(
        "utf-8",
        description="Text encoding of the file (utf-8, gbk, gb18030, latin-1, ...); must be ASCII-compatible because lines are split on b'\\n'. Lines that do not decode are quarantined one by one.",
    )
    delimiter: str | None = Field(
        None,
        description="Field delimiter; None = the format's default (',' for csv/retailrocket, tab for attribute_catalog, whitespace for the sequence files).",
    )
    timestamp_unit: Literal["auto", "s", "ms", "iso"] = Field(
        "auto",
        description="How timestamps are written: s or ms since the epoch, ISO 8601 text, or auto (retailrocket: ms, amazon_reviews: s; otherwise numbers >= 1e11 are ms, smaller ones s, text ISO 8601).",
    )
    event_map: dict[str, str] = Field(
        default_factory=dict,
        description="Source event name -> contract event type (view, click, cart, purchase, rating); merged over the format's defaults (retailrocket maps addtocart->cart, transaction->purchase).",
    )
    default_event: Literal["view", "click", "cart", "purchase", "rating"] | None = Field(
        None,
        description="Event type for sources without an event column (sequence files default to 'view', Amazon reviews to 'rating').",
    )

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown encoding {value!r}; use a Python codec name such as utf-8, gbk, gb18030 or latin-1"
            ) from None
        if "\n".encode(info.name) != b"\n":
            raise ValueError(
                f"encoding {value!r} is not ASCII-compatible (lines are split on b'\\n'); convert the file to utf-8 first"
            )
        return value

    @field_validator("attribute_columns", mode="before")
    @classmethod
    def _columns_as_dict(cls, value):
        if isinstance(value, list):  # [Primary_Color, Gender]: attributes named as the columns
            if len(set(map(str, value))) != len(value):
                raise ValueError(f"lists a column twice ({value}); list each once")
            return {str(c): str(c) for c in value}
        return value

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be one character, got {value!r}; e.g. ',' or '\\t'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        if self.format == "sql":
            self._sql_only()
        elif self.path is None:
            raise ValueError(
                f"source '{self.name}': format {self.format} reads files; set path (a file, glob or directory)"
            )
        elif self.url is not None:
            raise ValueError(f"source '{self.name}': url applies to format sql only; remove it or set format: sql")
        fixed = FORMAT_TABLE.get(self.format)
        if fixed and fixed != self.table:
            raise ValueError(f"source '{self.name}': format {self.format} only produces {fixed}; set table: {fixed}")
        columns = PRODUCT_COLUMNS if self.table == "products" else EVENT_COLUMNS
        unknown = sorted(set(self.mapping) - set(columns))
        if unknown:
            raise ValueError(
                f"source '{self.name}': mapping has unknown contract column(s) {unknown}; keys must be among {list(columns)}"
            )
        if self.table != "products" and (self.attribute_columns or self.id_from != "column"):
            raise ValueError(
                f"source '{self.name}': attribute_columns and id_from apply to products only; remove them from this {self.table} source"
            )
        empty = [c for c, k in self.attribute_columns.items() if not c.strip() or not k.strip()]
        if empty:
            raise ValueError(f"source '{self.name}': attribute_columns has an empty column or key name: {empty}")
        if self.id_from == "line" and "product_id" in self.mapping:
            raise ValueError(
                f"source '{self.name}': id_from: line numbers the records itself; remove mapping.product_id "
                f"({self.mapping['product_id']!r}) or set id_from: column"
            )
        if self.id_prefix is not None and self.id_from != "line":
            raise ValueError(f"source '{self.name}': id_prefix applies only with id_from: line")
        bad = {k: v for k, v in self.event_map.items() if v not in ("view", "click", "cart", "purchase", "rating")}
        if bad:
            raise ValueError(
                f"source '{self.name}': event_map values {bad} are not event types; map to view, click, cart, purchase or rating"
            )
        return self

    def _sql_only(self) -> None:
        """The sql format reads the online database's own tables: their columns are fixed, so the
        file options mean nothing there and are refused rather than ignored."""
        if self.path is not None:
            raise ValueError(
                f"source '{self.name}': format sql reads a database, not files; remove path (set url, or leave it "
                "unset to read online.database_url)"
            )
        ignored = [
            key
            for key, default in (
                ("mapping", {}),
                ("attribute_columns", {}),
                ("id_from", "column"),
                ("id_prefix", None),
                ("encoding", "utf-8"),
                ("delimiter", None),
                ("timestamp_unit", "auto"),
                ("default_event", None),
            )
            if getattr(self, key) != default
        ]
        if ignored:
            raise ValueError(
                f"source '{self.name}': format sql reads the online tables' fixed columns; remove {', '.join(ignored)} "
                "(event_map still applies: e.g. {impression: view})"
            )
        if self.url is not None:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                parsed = make_url(self.url)
            except ArgumentError as e:
                raise ValueError(
                    f"source '{self.name}': url {self.url!r} is not a SQLAlchemy URL ({e}); e.g. "
                    "postgresql+psycopg://shopgraph@db:5432/shopgraph or sqlite:///artifacts/online/shop.db"
                ) from None
            if parsed.password is not None:
                raise ValueError(
                    f"source '{self.name}': url holds a password; remove it from the URL and put it in the "
                    "environment variable named by online.password_env"
                )


class SampleConfig(BaseModel):
    """Size of the embedded sample catalog and behaviour log (data/sample.py)."""

    model_config = ConfigDict(extra="forbid")

    num_products: int = Field(
        5000, ge=20, description="Products in the generated catalog (spread over every category)."
    )
    num_users: int = Field(2000, ge=1, description="Users whose behaviour is generated.")
    num_events: int = Field(
        100_000, ge=1, description="Events in total (views, carts, purchases, ratings); each user gets at least 3."
    )
    language: Literal["en", "zh"] = Field(
        "en",
        description="Language of the generated shop: en (electronics to toys, USD) or zh (a Chinese apparel and gadgets shop: Chinese titles, 服饰 > 上衣 > T恤 categories, AdvertiseGen-style attributes 材质/版型/领型, Chinese reviews, CNY prices).",
    )

    @model_validator(mode="after")
    def _enough_events(self) -> SampleConfig:
        if self.num_events < 3 * self.num_users:
            raise ValueError(
                f"num_events ({self.num_events}) must be >= 3 * num_users ({3 * self.num_users}) so every user has a sequence; raise data.sample.num_events or lower data.sample.num_users"
            )
        return self


class PrepareConfig(BaseModel):
    """How `shopgraph data prepare` parses, validates and shards."""

    model_config = ConfigDict(extra="forbid")

    rows_per_shard: int = Field(
        1_000_000, ge=1, description="Rows per Parquet file of a shard set; fixed so reruns give byte-identical files."
    )
    row_group_rows: int = Field(
        100_000, ge=1, description="Rows per Parquet row group (fixed for determinism; smaller = finer-grained reads)."
    )
    chunk_mb: int = Field(
        32,
        ge=1,
        description="Line-oriented files larger than this are split into chunks at line boundaries, parsed in parallel Ray tasks. CSV files with quoted newlines need a chunk size larger than the file.",
    )
    num_cpus: float = Field(
        0.5, gt=0, description="CPUs reserved per parse task (fractional so a 2-CPU node runs several)."
    )
    unknown_products: Literal["quarantine", "stub"] = Field(
        "quarantine",
        description="An event whose product_id is not in the products table: quarantine it, or create a stub product (title = product_id) for event-only datasets such as sequence files.",
    )
