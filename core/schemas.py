"""Arrow schemas of shopgraph's data contracts (see ARCHITECTURE.md, "Data contracts").

Every stage writes exactly these schemas and every reader maps its source format onto them,
so a later stage never needs to know where a row came from.
"""

from __future__ import annotations

import pyarrow as pa

EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

PRODUCTS = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string()),  # path "a > b > c"
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),  # currency from data.currency
        # Multi-valued: a key given several values by the source appears once per value, in source
        # order (Arrow and Parquet maps allow repeated keys). Read it with core.facts.attribute_values,
        # never dict(): dict() keeps only the last value. The value type stays string so single-valued
        # tables, old shard sets and every facts_hash are unchanged.
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("description", pa.string()),  # human-written reference, nullable
        pa.field("in_stock", pa.bool_()),
        pa.field("updated_at", pa.timestamp("ms", tz="UTC")),
    ]
)

EVENTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),  # one of EVENT_TYPES
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("value", pa.float64()),  # rating value
        pa.field("text", pa.string()),  # review / query text
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # file path or URI the row came from
        pa.field("line", pa.int64(), nullable=False),  # 1-based line / row number in the source
        pa.field("reason", pa.string(), nullable=False),  # human-readable, e.g. "unparsable price 'abc'"
        pa.field("table", pa.string(), nullable=False),  # "products" or "events"
        pa.field("raw", pa.string()),  # the rejected row as text (JSON for structured rows)
    ]
)

# Dense integer ids: 1..N, 0 is padding (as in SASRec). Saved so serving maps back.
USER_IDS = pa.schema(
    [pa.field("user_id", pa.string(), nullable=False), pa.field("user_idx", pa.int64(), nullable=False)]
)
ITEM_IDS = pa.schema(
    [pa.field("product_id", pa.string(), nullable=False), pa.field("item_idx", pa.int64(), nullable=False)]
)

# One row per user: every interaction in time order (ties broken by input order).
SEQUENCES = pa.schema(
    [
        pa.field("user_idx", pa.int64(), nullable=False),
        pa.field("items", pa.list_(pa.int64()), nullable=False),
        pa.field("ts", pa.list_(pa.timestamp("ms", tz="UTC")), nullable=False),
    ]
)

# Leave-one-out split exactly as in SASRec (Kang & McAuley, 2018): for a user with n >= 3
# interactions, the last is test, the second-to-last validation, the rest train. Users with
# fewer than 3 interactions keep everything in train and have null valid/test items.
LOO_SPLIT = pa.schema(
    [
        pa.field("user_idx", pa.int64(), nullable=False),
        pa.field("train_items", pa.list_(pa.int64()), nullable=False),
        pa.field("valid_item", pa.int64()),
        pa.field("test_item", pa.int64()),
    ]
)
