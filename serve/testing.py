"""Fakes for the generator's engine seam (unit tests and the overhead benchmark).

Completions are used as `fake_respond` in `build_app` args (`serve.testing:echo_facts`); they are
built from the prompt's facts block, so they are deterministic (and grounded, except where a
function's name says otherwise). `LocalGenerator` stands in for the Generator deployment's
handle, so the ingress's routes can be unit-tested without Ray.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

# One product's facts as serving holds them: the fixture of the serve unit tests.
MUG_FACTS = {
    "title": "Brewly T76 Coffee Mug",
    "brand": "Brewly",
    "category": "Home & Kitchen > Coffee Mugs",
    "price": 12.99,
    "currency": "USD",
    "attributes": {"capacity": "350 ml", "material": "ceramic", "color": "green"},
}


def privacy_for_tests(root: str | None = None):
    """(pseudonymizer, tombstone store, privacy config) for an ingress built in a test: a fixed
    key (kid `t1`), tombstones in memory (or under `root`), the admin routes open."""
    import uuid

    from core.config.privacy import PrivacyConfig
    from core.privacy import Key, Pseudonymizer, TombstoneStore

    pz = Pseudonymizer([Key("t1", b"shopgraph-test-key-not-a-secret")])
    store = TombstoneStore(root or f"memory://shopgraph-test-{uuid.uuid4().hex}")
    return pz, store, PrivacyConfig(allow_unauthenticated_admin=True)


def _facts(messages: list[dict[str, str]]) -> dict:
    m = re.search(r"<facts>\s*(\{.*?\})\s*</facts>", messages[-1]["content"], re.S)
    return json.loads(m.group(1)) if m else {}


def _profile(messages: list[dict[str, str]]) -> dict:
    m = re.search(r"<profile>\s*(\{.*?\})\s*</profile>", messages[-1]["content"], re.S)
    return json.loads(m.group(1)) if m else {}


def echo_facts(messages: list[dict[str, str]]) -> str:
    """A well-behaved model: pages from the facts, reasons to "you" that name their evidence,
    answers that state the facts (or review counts) they were given."""
    facts = _facts(messages)
    if messages[0]["content"].startswith("You answer a shopper"):
        return _answer(messages, facts)
    title = facts.get("title", "This product")
    if "PDP" in messages[0]["content"] or "highlights" in messages[-1]["content"].lower():
        highlights = [f"{k}: {v}" for k, v in (facts.get("attributes") or {}).items()][:3]
        # only the facts' words and plain ones: the page gates keep a sentence only then
        description = (
            f"This {title} is made by {facts.get('brand', 'the brand')}, and you can have it for {facts.get('price', 'its price')} {facts.get('currency', '')}".rstrip()
            + "."
        )
        return json.dumps({"title": title, "highlights": highlights, "description": description})
    profile = _profile(messages)
    if profile.get("recent_items"):
        return f"Since you viewed the {profile['recent_items'][0]}, you may like this one too."
    if profile.get("top_brands"):
        return f"Since you often choose {profile['top_brands'][0]}, you may like this one too."
    if profile.get("top_categories"):
        return f"Since you like {profile['top_categories'][0].split('>')[-1].strip()}, you may like this one too."
    return f"You may like the {title} too."


def _answer(messages: list[dict[str, str]], facts: dict) -> str:
    m = re.search(r"<reviews>\s*(\[.*?\])\s*</reviews>", messages[-1]["content"], re.S)
    reviews = json.loads(m.group(1)) if m else []
    said = [f"The {k} is {v}." for k, v in (facts.get("attributes") or {}).items()]
    said += [f"{r['positive']} of {r['mentions']} reviews on {r['aspect']} are positive." for r in reviews]
    return " ".join(said) or f"It is the {facts.get('title', 'product')}."


def invent_claims(messages: list[dict[str, str]]) -> str:
    """A hallucinating model: every answer carries a claim the facts do not support."""
    facts = _facts(messages)
    if messages[0]["content"].startswith("You answer a shopper"):
        return "It is made of titanium and weighs 12 kg."
    title = facts.get("title", "This product")
    if "highlights" in messages[-1]["content"].lower():
        return json.dumps(
            {
                "title": title,
                "highlights": ["Weight: 12 kg", "Made of titanium"],
                "description": f"{title} weighs 12 kg. It is made of titanium.",
            }
        )
    return f"The {title} weighs 12 kg and is made of titanium."


GROUNDED_SENTENCE = "It comes from {brand}, and you can have it."
INVENTED_SENTENCE = "It is made of titanium and weighs 12 kg."


def echo_question(messages: list[dict[str, str]]) -> str:
    """A small model's habit: the shopper's question repeated (naming the product) before the answer."""
    facts = _facts(messages)
    return f"Is the {facts.get('title', 'product')} {(facts.get('attributes') or {}).get('color', 'it')}? " + _answer(
        messages, facts
    )


def half_grounded(messages: list[dict[str, str]]) -> str:
    """A page whose description has one grounded and one invented sentence (and one highlight
    of each kind): what a stream must never show is `INVENTED_SENTENCE`."""
    facts = _facts(messages)
    title = facts.get("title", "This product")
    if messages[0]["content"].startswith("You answer a shopper"):
        return f"{_answer(messages, facts)} {INVENTED_SENTENCE}"
    if "highlights" in messages[-1]["content"].lower():
        first = next(iter((facts.get("attributes") or {}).items()), ("brand", facts.get("brand", "")))
        description = f"{GROUNDED_SENTENCE.format(brand=facts.get('brand', 'our shop'))} {INVENTED_SENTENCE}"
        highlights = [f"{first[0]}: {first[1]}", "Waterproof to 100 m"]
        return json.dumps({"title": title, "highlights": highlights, "description": description})
    return echo_facts(messages)


class _Call:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class _LocalStream:
    """What `handle.options(stream=True).method.remote()` returns: an async iterator with `cancel()`."""

    def __init__(self, agen):
        self.agen, self.cancelled = agen, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.agen.__anext__()

    def cancel(self) -> None:
        self.cancelled = True


class LocalGenerator:
    """In-process stand-in for the Generator deployment's handle, around a `GeneratorCore`."""

    def __init__(self, core):
        self.core = core
        self.streams: list[_LocalStream] = []

    def options(self, *, stream: bool = False) -> LocalGenerator:
        return self

    @property
    def reason(self) -> _Call:
        return _Call(lambda facts, profile: asyncio.ensure_future(self.core.reason(facts, profile)))

    @property
    def page(self) -> _Call:
        return _Call(lambda facts, segment=None: asyncio.ensure_future(self.core.page(facts, segment)))

    @property
    def stream_page(self) -> _Call:
        def start(facts: dict[str, Any], segment: dict[str, Any] | None = None) -> _LocalStream:
            self.streams.append(_LocalStream(self.core.stream_page(facts, segment)))
            return self.streams[-1]

        return _Call(start)

    @property
    def stream_answer(self) -> _Call:
        def start(question: str, plan, max_tokens: int | None = None) -> _LocalStream:
            self.streams.append(_LocalStream(self.core.stream_answer(question, plan, max_tokens)))
            return self.streams[-1]

        return _Call(start)

    @property
    def stats(self) -> _Call:
        async def stats() -> dict[str, Any]:
            return {"chunks": self.core.chunks, "model_version": self.core.model_version}

        return _Call(lambda: asyncio.ensure_future(stats()))

    @property
    def health(self) -> _Call:
        async def health() -> dict[str, Any]:
            check = getattr(self.core.engine, "check_health", None)
            if check is not None:
                await check()
            return {"chunks": self.core.chunks, "model_version": self.core.model_version}

        return _Call(lambda: asyncio.ensure_future(health()))


class FakeStage:
    """In-process stand-in for the Retriever or Ranker handle: `handle.<method>.remote(request)`
    runs `fn(request)` after `delay_s`, or raises when `fail` is set, or raises Serve's own
    BackPressureError (what a handle raises when the stage's `max_queued_requests` is reached)
    when `overloaded` is set. These may be changed while a test runs (a stage that hangs, dies,
    is saturated, recovers); `calls` counts the calls."""

    def __init__(self, method: str, fn, *, delay_s: float = 0.0, fail: bool = False, overloaded: bool = False):
        self.method, self.fn, self.delay_s, self.fail, self.overloaded = method, fn, delay_s, fail, overloaded
        self.calls = 0

    async def _run(self, request):
        from ray.serve.exceptions import BackPressureError

        self.calls += 1
        if self.overloaded:  # the caller's router refuses at once, before any replica sees it
            raise BackPressureError(num_queued_requests=8, max_queued_requests=8)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError(f"fake {self.method} stage is down")
        return self.fn(request)

    def __getattr__(self, name: str) -> _Call:
        if name != self.method:
            raise AttributeError(name)
        return _Call(lambda request: asyncio.ensure_future(self._run(request)))


def fake_retriever(catalog, **kwargs) -> FakeStage:
    """A retriever over `catalog`: the user's history plus the known recent items; every known
    product as a candidate, in item-id order (the ranker's rules filter them) except that products
    of the last history item's category come first, as a sequential recommender's would; cold
    start when there is no history. `requests` keeps what it was sent."""
    import numpy as np

    from serve.deployments import Retrieved
    from serve.recommend import Candidates

    def retrieve(r):
        stage.requests.append(r)
        if r.history is not None:
            history = np.asarray(r.history, np.int64)
        else:
            history = catalog.user_history.get(r.user_id, np.zeros(0, np.int64)) if r.user_id else np.zeros(0, np.int64)
        extra = [catalog.item_idx(p) for p in r.recent_items if catalog.item_idx(p) is not None]
        history = np.concatenate([history, np.asarray(extra, np.int64)])
        last = catalog.products[catalog.by_item_idx[int(history[-1])]].category if len(history) else None
        order = sorted(
            catalog.by_item_idx, key=lambda i: (catalog.products[catalog.by_item_idx[i]].category != last, i)
        )
        ids = np.asarray(order, np.int64)[: r.n]
        cands = Candidates(ids, np.linspace(1, 0, len(ids)).astype(np.float32), cold_start=not len(history))
        return Retrieved(history=history, candidates=cands)

    stage = FakeStage("retrieve", retrieve, **kwargs)
    stage.requests = []
    return stage


def fake_ranker(catalog, **kwargs) -> FakeStage:
    """A ranker that keeps the candidates' order, drops excluded ids, and gives each item
    `same_brand`/`favourite_category` evidence from its facts."""
    from serve.recommend import Scored

    def rank(r):
        excluded = set(r.filters.exclude)
        out = []
        for i, idx in enumerate(r.candidates.item_ids.tolist()):
            pid = catalog.by_item_idx[idx]
            if pid in excluded:
                continue
            p = catalog.products[pid]
            out.append(Scored(pid, 1.0 - 0.01 * i, [{"type": "favourite_category", "category": p.category}]))
        return out[: r.k]

    return FakeStage("rank", rank, **kwargs)
