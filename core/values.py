"""Typed conversion of one raw field into a contract value, or a `RowError` with a readable reason.

Every reader funnels its fields through these functions, so "unparsable price 'abc'" reads the
same whether the row came from a CSV, a JSON line or a Parquet file.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from core.schemas import EVENT_TYPES

# 1970 .. 2100: anything outside is a unit mistake (seconds read as ms or the other way round).
_TS_MIN_MS, _TS_MAX_MS = 0, 4_102_444_800_000
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
# An optional currency symbol or code ("$", "₹", "¥", "USD "), digits with optional thousands commas.
_PRICE = re.compile(r"^([^\d\s.+-]{1,3}\s?)?([+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+)$")


class RowError(ValueError):
    """This row cannot be kept; the message is the quarantine reason. `column`: the field at fault,
    where one is (`product_row` sets it; the API answers 422 naming it)."""

    column: str | None = None


def _type(value: Any) -> str:
    return type(value).__name__


def as_id(value: Any, column: str) -> str:
    # Integer ids are common (sequence files, RetailRocket); floats and bools are not ids.
    if value is None:
        raise RowError(f"missing {column}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError(f"{column} has type {_type(value)}, expected a string or integer")
    text = str(value).strip()
    if not text:
        raise RowError(f"empty {column}")
    return text


def as_text(value: Any, column: str, *, required: bool = False) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(v.strip() for v in value if v.strip())  # Amazon 2018 descriptions are lists
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError(f"missing {column}" if value is None else f"empty {column}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"{column} has type {_type(value)}, expected text")
    return str(value).strip()


def as_category(value: Any) -> str | None:
    """A category path "a > b > c" from a string ("a >> b", "a > b") or a list (Amazon)."""
    if isinstance(value, list):
        if value and isinstance(value[0], list):  # Amazon 2014: [["Toys & Games", "Puzzles"], [...]]
            value = value[0]
        if not all(isinstance(v, str) for v in value):
            raise RowError(f"category has type {_type(value)} of non-strings, expected text or a list of strings")
        parts = [v.strip() for v in value if v.strip()]
        return " > ".join(parts) or None
    text = as_text(value, "category")
    if text is None:
        return None
    parts = [p.strip() for p in re.split(r"\s*>+\s*", text.strip("[]\"' ")) if p.strip()]
    return " > ".join(parts) or None


def as_price(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise RowError("price has type bool, expected a number")
    if isinstance(value, int | float):
        price = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        match = _PRICE.match(text)
        if not match:
            raise RowError(f"unparsable price {value!r}")
        price = float(match.group(2).replace(",", ""))
    else:
        raise RowError(f"price has type {_type(value)}, expected a number")
    if not math.isfinite(price) or price < 0:
        raise RowError(f"price {value!r} is negative or not finite")
    return price


def as_float(value: Any, column: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(f"{column} has type bool, expected a number")
    if isinstance(value, str):
        if not _NUMBER.match(value.strip()):
            raise RowError(f"unparsable {column} {value!r}")
        value = float(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise RowError(f"{column} has type {_type(value)}, expected a finite number")
    return float(value)


def as_bool(value: Any, column: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in ("true", "t", "1", "yes", "y", "in stock", "instock"):
            return True
        if text in ("false", "f", "0", "no", "n", "out of stock", "outofstock"):
            return False
    raise RowError(f"unparsable {column} {value!r}, expected true/false")


def as_timestamp_ms(value: Any, unit: str, column: str = "ts") -> int:
    """Milliseconds since the epoch (UTC). Naive ISO times are taken as UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"missing {column}")
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        ms = round(dt.timestamp() * 1000)
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"{column} has type {_type(value)}, expected a number or ISO 8601 text")
    elif isinstance(value, str) and not (unit != "iso" and _NUMBER.match(value.strip())):
        if unit in ("s", "ms"):
            raise RowError(f"unparsable {column} {value!r} (expected {unit} since the epoch; see timestamp_unit)")
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RowError(f"unparsable {column} {value!r}") from None
        dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
        ms = round(dt.timestamp() * 1000)
    else:
        number = float(value)
        if not math.isfinite(number):
            raise RowError(f"unparsable {column} {value!r}")
        millis = unit == "ms" or (unit == "auto" and abs(number) >= 1e11)
        ms = round(number if millis else number * 1000)
    if not _TS_MIN_MS <= ms < _TS_MAX_MS:
        raise RowError(f"{column} {value!r} is outside 1970..2100 (wrong timestamp_unit?)")
    return ms


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def as_duration_ms(text: Any, what: str) -> int:
    """'90s', '30m', '24h', '7d', '2w', '500ms' -> milliseconds (positive); anything else is a
    ValueError that names `what` (a flag or config key) and shows the form."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    ms = round(float(m.group(1)) * _UNIT_MS[m.group(2)]) if m else 0
    if ms <= 0:
        raise ValueError(
            f"{what} is {str(text)[:40]!r}; use a positive number and a unit: ms, s, m, h, d or w (e.g. 24h, 7d)"
        )
    return ms


def product_row(get, *, unit: str = "auto", product_id: str | None = None) -> dict[str, Any]:
    """One product's contract values from `get(column)` (the raw value of each contract column,
    already mapped from the source's names): what ingest keeps of a product row, and what
    the API's product writes store. A bad field raises `RowError` with `column` set."""

    from core.pii import scrub, scrub_value

    def field(column: str, convert) -> Any:
        try:
            return convert(get(column))
        except RowError as e:
            e.column = column
            raise

    def text(value: str | None) -> str | None:
        return scrub(value) if value else value

    updated = get("updated_at")
    # Personal data in catalog text (a seller's e-mail in a title, a phone number in a
    # description or an attribute) is replaced here, at the edge: no shard, database row, log
    # or prompt downstream ever holds it (`core.pii`; facts are scrubbed again, idempotently).
    return {
        "product_id": product_id if product_id is not None else field("product_id", lambda v: as_id(v, "product_id")),
        "title": field("title", lambda v: text(as_text(v, "title", required=True))),
        "category": field("category", lambda v: text(as_category(v))),
        "brand": field("brand", lambda v: text(as_text(v, "brand"))),
        "price": field("price", as_price),
        # converted by the caller (the source's format decides)
        "attributes": field("attributes", lambda v: scrub_value(v) if v else v),
        "description": field("description", lambda v: text(as_text(v, "description"))),
        "in_stock": field("in_stock", lambda v: as_bool(v, "in_stock")),
        "updated_at": None
        if updated in (None, "")
        else field("updated_at", lambda v: as_timestamp_ms(v, unit, "updated_at")),
    }


def as_event(value: Any, event_map: dict[str, str]) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("missing event")
    if not isinstance(value, str):
        raise RowError(f"event has type {_type(value)}, expected text")
    name = value.strip()
    event = event_map.get(name, event_map.get(name.lower(), name.lower()))
    if event not in EVENT_TYPES:
        raise RowError(
            f"unknown event type {value!r}; map it with the source's event_map to one of {', '.join(EVENT_TYPES)}"
        )
    return event


AttributeValue = str | list[str]  # a list when the source repeats the key (order kept, exact repeats dropped)


def add_value(out: dict[str, AttributeValue], key: str, value: str) -> None:
    """Add `value` under `key`: a second distinct value turns the attribute into a list."""
    have = out.get(key)
    if have is None:
        out[key] = value
    elif isinstance(have, list):
        if value not in have:
            have.append(value)
    elif have != value:
        out[key] = [have, value]


def parse_kv_attributes(text: str) -> dict[str, AttributeValue]:
    """'颜色#黑色*尺寸#XL' -> {'颜色': '黑色', '尺寸': 'XL'} (attribute-style catalogs).

    A repeated key keeps every value, in order: '风格#复古*风格#简约' -> {'风格': ['复古', '简约']}
    (AdvertiseGen repeats keys on two rows in three; keeping only the last lost a fifth of the values).
    """
    out: dict[str, AttributeValue] = {}
    for part in text.split("*"):
        if not part.strip():
            continue
        key, sep, val = part.partition("#")
        if not sep or not key.strip():
            raise RowError(f"attribute {part!r} is not key#value")
        add_value(out, key.strip(), val.strip())
    return out


def _scalar(key: Any, value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        raise RowError(f"attribute {key!r} holds a nested {_type(value)}; flatten it or leave it out of the mapping")
    return str(value)


def as_attributes(value: Any, *, kv: bool = False) -> dict[str, AttributeValue] | None:
    """Attributes from a JSON object (text or parsed), `key#value*key#value` text or key/value pairs.

    A value is a string, or a list of strings (a JSON list, or a key given several times);
    a one-element list is a plain string, so single values read the same whatever the source.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if kv:
            return parse_kv_attributes(text)
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise RowError(f"attributes is not a JSON object ({e.msg})") from None
        elif "#" in text:
            return parse_kv_attributes(text)
        else:
            raise RowError(f"unparsable attributes {text[:60]!r}, expected a JSON object or key#value*key#value")
    if isinstance(value, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        pairs = value  # key/value pairs (a Parquet map column): a key may repeat
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise RowError(f"attributes has type {_type(value)}, expected an object")
    out: dict[str, AttributeValue] = {}
    for key, val in pairs:
        if isinstance(val, dict):
            raise RowError(f"attribute {key!r} is a nested object; flatten it or leave it out of the mapping")
        if val is None:
            continue
        for v in val if isinstance(val, list | tuple) else [val]:
            if v is not None:
                add_value(out, str(key), _scalar(key, v))
    return out
