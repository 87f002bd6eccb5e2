"""Which (product, evidence) pairs get a precomputed reason, and how outputs are split for serving."""

from __future__ import annotations

import json

import pyarrow as pa

from core.facts import facts_hash
from ml.reasons import reason_key
from train.batch_reasons import likely_pairs, pair_rows, split_accepted

PRODUCTS = pa.Table.from_pylist(
    [
        {"product_id": "a", "title": "Oak Desk", "brand": "Hape", "category": "Home > Desks", "price": 99.0},
        {"product_id": "b", "title": "Desk Lamp", "brand": None, "category": "Home > Lamps", "price": 19.0},
        {"product_id": "c", "title": "Desk Chair", "brand": "Hape", "category": None, "price": 49.0},
    ]
)


def events(rows):
    return pa.Table.from_pylist([{"user_id": u, "product_id": p, "ts": t} for u, p, t in rows])


def test_popular_products_get_brand_category_and_co_occurrence_pairs():
    ev = events([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u3", "c", 1), ("u3", "b", 2)])
    pairs = likely_pairs(PRODUCTS, ev, max_products=1, anchors=2)
    assert {p["product_id"] for p in pairs} == {"b"}  # the most viewed product only
    evidence = [p["evidence"] for p in pairs]
    # "a" preceded "b" twice, "c" once: strongest first, as the ranker's co-occurrence
    assert [e.get("product_id") for e in evidence if e["type"] == "because_you_interacted"] == ["a", "c"]
    assert evidence[0] == {"type": "because_you_interacted", "product_id": "a", "title": "Oak Desk",
                           "detail": "often bought next"}  # fmt: skip
    assert {"type": "favourite_category", "category": "Home > Lamps"} in evidence
    assert not any(e["type"] == "same_brand" for e in evidence)  # "b" has no brand
    # a user's own repeat and another user's sequence are not co-occurrence
    assert likely_pairs(PRODUCTS, events([("u", "a", 1), ("u", "a", 2), ("v", "b", 1)]), max_products=3, anchors=2)
    assert all(
        p["evidence"]["type"] != "because_you_interacted"
        for p in likely_pairs(PRODUCTS, events([("u", "a", 1), ("v", "b", 2)]), max_products=3, anchors=2)
    )


def test_catalog_only_shops_and_zero_limits():
    pairs = likely_pairs(PRODUCTS, None, max_products=10, anchors=2)
    assert [p["product_id"] for p in pairs] == ["a", "a", "b", "c"]  # id order: brand + category where known
    assert likely_pairs(PRODUCTS, None, max_products=0, anchors=2) == []
    assert likely_pairs(PRODUCTS.slice(0, 0), None, max_products=5, anchors=2) == []


def test_rows_carry_the_serving_cache_key_inputs():
    pairs = likely_pairs(PRODUCTS, None, max_products=1, anchors=0)
    rows = pair_rows(pairs, PRODUCTS, "USD").to_pylist()
    assert [r["facts_hash"] for r in rows] == [facts_hash(PRODUCTS.to_pylist()[0], "USD")] * 2
    assert [reason_key([json.loads(r["evidence"])]) for r in rows] == [
        "same_brand:Hape",
        "favourite_category:Home > Desks",
    ]


def test_only_accepted_reasons_are_served_and_every_rejection_is_counted():
    table = pa.table(
        {
            "product_id": ["b", "a", "a"],
            "key": ["k1", "k2", "k3"],
            "model_version": ["m"] * 3,
            "facts_hash": ["h"] * 3,
            "text": ["It is from Hape, a brand you have chosen before.", "", ""],
            "rejected": ["", "third_person", "third_person"],
            "raw": ["x", "The shopper likes it.", "They like it."],
        }
    )
    accepted, rejected, stats = split_accepted(table)
    assert accepted.column_names == ["product_id", "key", "model_version", "facts_hash", "text"]
    assert accepted.column("product_id").to_pylist() == ["b"]
    assert rejected.num_rows == 2 and rejected.column("raw").to_pylist()[0] == "The shopper likes it."
    assert stats == {"pairs": 3, "accepted": 1, "rejected_third_person": 2}
