"""The Generator deployment: vLLM behind an engine seam, prompts, and the grounding filter.

It only generates: caching and fallbacks live in the ingress, so a slow or dead generator
costs the client nothing but the generated text. Every output passes the same grounding check
as the offline evaluation; sentences with unsupported claims are removed, and an output with
nothing left (or a page that is not valid JSON) is reported as `None`, so the caller falls back.
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve

class GeneratorCore:
    """Prompts -> engine -> grounding. Async; one instance per replica.

    Prompts and the grounding check are the ones training and evaluation use
    (`models.prompts`, `models.grounding`), so the served model sees the prompts it was tuned on
    and its output is held to the same standard it was measured by.
    """

    def __init__(self, engine, generation_cfg, known_brands: list[str] | None = None):
        self.engine = engine
        self.cfg = generation_cfg
        self.known_brands = known_brands or []
        self.chunks = 0

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    async def _complete(self, messages, max_tokens: int, json_schema=None) -> str:
        parts = []
        async for delta in self.engine.stream(messages, max_tokens=max_tokens, json_schema=json_schema):
            parts.append(delta)
            self.chunks += 1
        return "".join(parts).strip()

    async def reason(self, facts: dict, profile: dict) -> dict[str, Any]:
        from models.grounding import remove_unsupported
        from models.prompts import reason_messages

        started = time.perf_counter()
        raw = await self._complete(reason_messages(profile, facts), self.cfg.reason_max_tokens)
        kept = _first_sentence(remove_unsupported(raw, facts, profile=profile, known_brands=self.known_brands))
        return {"text": kept or None, "raw": raw, "ms": 1000 * (time.perf_counter() - started)}

    async def page(self, facts: dict) -> dict[str, Any]:
        from models.prompts import pdp_messages, PDP_SCHEMA

        started = time.perf_counter()
        raw = await self._complete(pdp_messages(facts), self.cfg.page_max_tokens, json_schema=PDP_SCHEMA)
        return {**ground_page(raw, facts, self.known_brands), "ms": 1000 * (time.perf_counter() - started)}

    async def stream_page(self, facts: dict):
        """Yields {"delta": text} while generating, then the grounded {"sections": ...}."""
        from models.prompts import pdp_messages, PDP_SCHEMA

        parts = []
        async for delta in self.engine.stream(pdp_messages(facts), max_tokens=self.cfg.page_max_tokens, json_schema=PDP_SCHEMA):
            parts.append(delta)
            self.chunks += 1
            yield {"delta": delta}
        yield ground_page("".join(parts), facts, self.known_brands)


def ground_page(raw: str, facts: dict, known_brands: list[str]) -> dict[str, Any]:
    """Parse the generated JSON and drop every unsupported claim; None sections = fall back."""
    from models.grounding import ground_pdp
    from models.prompts import repair_pdp

    page = repair_pdp(raw)  # an answer cut off by the token limit is closed, not thrown away
    if page is None:
        return {"sections": None, "why": "invalid_json", "error": "generated page is not valid JSON with title, highlights, description"}
    grounded = ground_pdp(page, facts, known_brands=known_brands)
    # The page title is the catalog's: a small model's "The Ultimate Toys For Kids" claims
    # nothing checkable yet names no product. Generation writes highlights and description.
    grounded["title"] = facts.get("title") or grounded["title"]
    if not grounded["highlights"]:  # every generated highlight was unsupported: list the facts
        from serve.content import template_page

        grounded["highlights"] = template_page(facts)["highlights"]
    if not grounded["description"]:
        return {"sections": None, "why": "ungrounded", "error": "every sentence of the description had an unsupported claim"}
    removed = len(page["highlights"]) - len(grounded["highlights"]) + (grounded["description"] != page["description"])
    return {"sections": grounded, "removed": removed}


def _first_sentence(text: str) -> str:
    from models.grounding import sentences

    parts = [s.strip() for s in sentences(text.strip().strip('"')) if s.strip()]
    return parts[0] if parts else ""


@serve.deployment(name="Generator")
class Generator:
    def __init__(self, engine_spec: dict, generation: dict, known_brands: list[str]):
        from core.config.serve import GenerationConfig
        from serve.engine import build_engine

        self.core = GeneratorCore(build_engine(engine_spec), GenerationConfig(**generation), known_brands)

    async def reason(self, facts: dict, profile: dict) -> dict[str, Any]:
        return await self.core.reason(facts, profile)

    async def page(self, facts: dict) -> dict[str, Any]:
        return await self.core.page(facts)

    async def stream_page(self, facts: dict):
        async for event in self.core.stream_page(facts):
            yield event

    async def stats(self) -> dict[str, Any]:
        return {"chunks": self.core.chunks, "model_version": self.core.model_version}
