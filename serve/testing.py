"""Fake completions for the generator's engine seam (unit tests and the overhead benchmark).

Used as `fake_respond` in `build_app` args: `serve.testing:echo_facts`. The answers are built
from the prompt's facts block, so they are grounded and deterministic.
"""

from __future__ import annotations

import json
import re


def _facts(messages: list[dict[str, str]]) -> dict:
    m = re.search(r"<facts>\s*(\{.*?\})\s*</facts>", messages[-1]["content"], re.S)
    return json.loads(m.group(1)) if m else {}


def echo_facts(messages: list[dict[str, str]]) -> str:
    facts = _facts(messages)
    title = facts.get("title", "This product")
    if "PDP" in messages[0]["content"] or "highlights" in messages[-1]["content"].lower():
        highlights = [f"{k}: {v}" for k, v in (facts.get("attributes") or {}).items()][:3]
        return json.dumps({"title": title, "highlights": highlights, "description": f"{title} from {facts.get('brand', 'our shop')}."})
    return f"The {title} fits what you have been looking at."


def invent_claims(messages: list[dict[str, str]]) -> str:
    """A hallucinating model: every answer carries a claim the facts do not support."""
    facts = _facts(messages)
    title = facts.get("title", "This product")
    if "highlights" in messages[-1]["content"].lower():
        return json.dumps({"title": title, "highlights": ["Weight: 12 kg", "Made of titanium"], "description": f"{title} weighs 12 kg. It is made of titanium."})
    return f"The {title} weighs 12 kg and is made of titanium."
