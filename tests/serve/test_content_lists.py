"""The template page with multi-valued attributes (core.facts): every value, as 'a, b, c'."""

from __future__ import annotations

from core.facts import facts_of, parse_facts, serialize_facts
from serve.content import highlight, template_page


def test_template_page_lists_every_value():
    product = {"title": "Denim jacket", "attributes": [("style", "retro"), ("style", "minimal"), ("fit", "slim")]}
    page = template_page(facts_of(product))
    assert page["highlights"] == ["Fit: slim", "Style: retro, minimal"]
    assert template_page(parse_facts(serialize_facts(product)))["highlights"] == page["highlights"]
    assert highlight("style", ["retro", "minimal"]) == "Style: retro, minimal"  # a plain list too
    assert highlight("color", "green") == "Color: green"
