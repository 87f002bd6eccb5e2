"""core.facts with multi-valued attributes: lists where the catalog repeats a key, single values unchanged."""

from __future__ import annotations

import hashlib

from core.facts import Values, attribute_text, attribute_values, facts_hash, facts_of, parse_facts, serialize_facts

MUG = {"title": "Mug", "brand": "Brewly", "price": 12.5, "attributes": {"material": "ceramic", "color": "green"}}


def test_single_values_serialize_exactly_as_before():
    # Pinned: the serialization (and so the facts_hash every content cache is keyed by) of a
    # single-valued product must not change when attributes became multi-valued.
    expected = (
        '{"title": "Mug", "brand": "Brewly", "price": 12.5, "attributes": {"color": "green", "material": "ceramic"}}'
    )
    assert serialize_facts(MUG) == expected
    assert facts_hash(MUG) == hashlib.sha256(expected.encode()).hexdigest()
    pairs = {**MUG, "attributes": [("material", "ceramic"), ("color", "green")]}  # as a Parquet map row reads
    assert facts_hash(pairs) == facts_hash(MUG)
    one = {**MUG, "attributes": {"material": ["ceramic"], "color": ["green", "green"]}}  # one value, as a list
    assert facts_hash(one) == facts_hash(MUG)


def test_repeated_keys_become_lists_in_source_order():
    product = {
        "title": "牛仔外套",
        "attributes": [("风格", "复古"), ("材质", "牛仔布"), ("风格", "文艺"), ("风格", " 复古 ")],
    }
    facts = facts_of(product)
    assert facts["attributes"] == {"材质": "牛仔布", "风格": ["复古", "文艺"]}  # keys sorted, values in order
    s = serialize_facts(product)
    assert s == '{"title": "牛仔外套", "attributes": {"材质": "牛仔布", "风格": ["复古", "文艺"]}}'
    assert parse_facts(s) == facts and isinstance(parse_facts(s)["attributes"]["风格"], Values)
    assert facts_hash(product) != facts_hash({**product, "attributes": [("风格", "文艺"), ("风格", "复古")]})


def test_values_read_as_text_where_code_expects_one_value():
    facts = facts_of({"title": "t", "attributes": {"style": ["retro", "minimal"], "fit": "slim"}})
    style = facts["attributes"]["style"]
    assert style == ["retro", "minimal"] and isinstance(style, list)  # JSON array, one fact per value
    assert f"style: {style}" == "style: retro, minimal" and str(style) == "retro, minimal"
    assert attribute_text(style) == "retro, minimal" and attribute_text("slim") == "slim"
    assert attribute_text(["a", "b"]) == "a, b"  # a plain list (e.g. from json.loads) too


def test_attribute_values_drops_empty_and_keeps_first_seen_order():
    assert attribute_values(None) == {}
    assert attribute_values([("b", ""), ("a", "1"), ("b", "2"), ("", "x"), ("a", None)]) == {"a": "1", "b": "2"}
    assert facts_of({"title": "t", "attributes": [("a", " ")]}) == {"title": "t"}
