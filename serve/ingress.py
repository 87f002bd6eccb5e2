"""The ingress deployment: shopgraph's HTTP API and the flow of each request.

    serve run serve.app:build_app config_path=configs/local.yaml      # built by serve.app

Routes: recommendations, product pages (JSON, server-sent events, the demo HTML page), health,
readiness and metrics. Each request gets a deadline and each stage a budget
(`serve.budgets`); the retriever and ranker are called with typed payloads
(`serve.deployments`); generation waits at most its budget (`serve.content.within_budget`), and
copy that is late, missing or ungrounded falls back to cached, then template text, labelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import time
import uuid
from typing import Any

import numpy as np
from fastapi import Cookie
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.app import AppArgs
from serve.content import generator_version, load_precomputed, tidy_highlight, within_budget
from serve.deployments import RankFilters, RankRequest, RetrieveRequest
from serve.http import ApiError, make_api
from serve.schemas import (
    MAX_ID_CHARS,
    ErrorBody,
    ErrorDetail,
    Evidence,
    PageSections,
    ProductPage,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
)

log = logging.getLogger("shopgraph.serve")

api = make_api()


# ----------------------------------------------------------------------------- helpers


async def _await(ref):
    return await ref


def _sse(event: str, obj: dict) -> str:
    """One server-sent event: `event: <name>` and its JSON `data:` line (README, Serving API)."""
    return f"event: {event}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _user_param(user_id: str | None, limit: int) -> str | None:
    """The `user_id` query parameter of the page routes: over `limit` characters -> 422; empty or
    blank (`?user_id=`, what an empty form field sends) -> anonymous, as when it is left out."""
    if user_id is None or not user_id.strip():
        return None
    if len(user_id) > limit:
        raise ApiError(422, f"user_id is {len(user_id)} characters long; the limit is {limit}", param="user_id")
    return user_id


_USER_COOKIE = "shopgraph_user"  # the demo shop's signed-in shopper (serve.page prints no user id)


def _flag(value: str | None, param: str) -> bool:
    """A yes/no query parameter: absent or empty -> no, `1`/`true` -> yes, anything else -> 422."""
    if value is None or value.strip().lower() in ("", "0", "false", "no"):
        return False
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    raise ApiError(422, f"{param} is {value[:40]!r}; use {param}=1 or leave it out", param=param)


def _history_of(catalog, user_id: str | None, product_id: str) -> np.ndarray:
    """The user's known items and then the viewed product: the history the retriever builds for the
    page's 'you may also like' request (`RetrieverCore.history_of`), without a retrieval."""
    history = catalog.user_history.get(user_id, np.zeros(0, np.int64)) if user_id else np.zeros(0, np.int64)
    idx = catalog.item_idx(product_id)
    return np.concatenate([history, np.asarray([idx], dtype=np.int64)]) if idx is not None else history


def _overall(sources: list[str]) -> str:
    kinds = set(sources)
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _evidence_key(evidence: list[dict]) -> str:
    return "/".join(
        f"{e.get('type')}:{e.get('product_id') or e.get('brand') or e.get('category') or ''}" for e in evidence[:2]
    )


def _self_scored(product_id: str, history: np.ndarray, catalog):
    """The viewed product as a 'scored' item, with the evidence that links it to the user."""
    from serve.recommend import Scored

    product = catalog.products[product_id]
    evidence = []
    hist_products = [
        catalog.products[catalog.by_item_idx[int(i)]] for i in history[::-1] if int(i) in catalog.by_item_idx
    ]
    same_brand = next(
        (p for p in hist_products if product.brand and p.brand == product.brand and p.product_id != product_id), None
    )
    if same_brand:
        evidence.append(
            {
                "type": "same_brand",
                "brand": product.brand,
                "product_id": same_brand.product_id,
                "title": same_brand.title,
            }
        )
    same_cat = [p for p in hist_products if product.category and p.category == product.category]
    if same_cat:
        evidence.append(
            {
                "type": "favourite_category",
                "category": product.category,
                "share": round(len(same_cat) / max(len(hist_products), 1), 2),
            }
        )
    return Scored(product_id, 0.0, evidence or [{"type": "popular", "category": product.category}])


# The ingress class comes last: `serve.ingress` serializes it when the class is defined,
# so every module-level helper it uses must already exist at that point.


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(
        self, args: dict, retriever: DeploymentHandle, ranker: DeploymentHandle, generator: DeploymentHandle | None
    ):
        from serve.catalog import load_catalog

        self.args = AppArgs(**args)
        self.cfg = self.args.load_config()
        self._setup(self.cfg.serve, load_catalog(self.cfg), retriever, ranker, generator, generator_version(self.cfg))
        if self.gen_cfg.precomputed_content:
            self.precomputed = load_precomputed(self.cfg, self.cache, self.model_version, self.catalog)

    def _setup(self, serve_cfg, catalog, retriever, ranker, generator, model_version: str) -> None:
        """Everything but loading: also how unit tests build an ingress around in-process fakes."""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        from serve.content import ContentCache

        # The app this replica serves: `serve.ingress` froze a copy of the module's `api` together
        # with this class, so inside its methods `api` is that copy. The middleware of serve.http
        # reads this replica's settings and request counter from its state. (Not `self.app`: Serve's
        # replica wrapper defines `app` as a read-only property.)
        self.http_app = api
        api.state.max_body_bytes = serve_cfg.limits.max_body_bytes
        self.catalog = catalog
        self.retriever, self.ranker, self.generator = retriever, ranker, generator
        self.budgets, self.limits, self.gen_cfg = serve_cfg.budgets, serve_cfg.limits, serve_cfg.generation
        self.model_version = model_version
        self.cache = ContentCache(self.gen_cfg.cache_entries)
        self.precomputed = 0
        self.registry = CollectorRegistry()
        self.m_latency = Histogram(
            "shopgraph_stage_latency_seconds",
            "Latency per stage",
            ["stage"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.m_content = Counter(
            "shopgraph_content_total", "Content served by source", ["kind", "source"], registry=self.registry
        )
        self.m_fallback = Counter(
            "shopgraph_fallbacks_total", "Stage fallbacks", ["stage", "why"], registry=self.registry
        )
        # Counted by serve.http's middleware for every response (route template, status), errors included.
        self.m_requests = Counter(
            "shopgraph_requests_total",
            "Requests by endpoint (route template) and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        api.state.requests = self.m_requests
        self.m_tokens = Counter(
            "shopgraph_generated_chars_total", "Characters of generated text served", registry=self.registry
        )
        self._background: set[asyncio.Task] = set()  # late streams being cached; held so they are not collected

    # -- helpers

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    async def _timed(self, stage: str, coro, budget_ms: int, deadline: float):
        timeout = min(budget_ms / 1000, self._remaining(deadline))
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(coro, timeout=timeout)
        finally:
            self.m_latency.labels(stage).observe(time.perf_counter() - started)

    def _user_param(self, user_id: str | None) -> str | None:
        return _user_param(user_id, min(self.limits.max_text_chars, MAX_ID_CHARS))

    def _check_ids(self, values: list[str | None], param: str) -> None:
        for v in values:
            if v is not None and len(v) > self.limits.max_text_chars:
                raise ApiError(
                    422, f"{param} is {len(v)} characters long; the limit is {self.limits.max_text_chars}", param=param
                )

    async def _recommend(
        self, req: RecommendationRequest, deadline: float, exclude: set[str] = frozenset()
    ) -> tuple[list, bool, dict]:
        timings: dict[str, float] = {}
        n = min(max(req.k * 3, 50), 300)
        started = time.perf_counter()
        try:
            retrieve = RetrieveRequest(user_id=req.user_id, recent_items=req.recent_items, n=n)
            got = await self._timed(
                "retrieve", self.retriever.retrieve.remote(retrieve), self.budgets.retrieval_ms, deadline
            )
            timings["retrieve"] = 1000 * (time.perf_counter() - started)
            started = time.perf_counter()
            filters = RankFilters(**req.filters.model_dump(), exclude=sorted(set(exclude) | set(req.recent_items)))
            rank = RankRequest(
                user_id=req.user_id, history=got.history, candidates=got.candidates, k=req.k, filters=filters
            )
            ranked = await self._timed("rank", self.ranker.rank.remote(rank), self.budgets.ranking_ms, deadline)
            timings["rank"] = 1000 * (time.perf_counter() - started)
            cold = bool(got.candidates.cold_start)
            history = got.history
        except Exception as e:  # a failed or slow stage degrades to the popularity list
            self.m_fallback.labels("recommend", type(e).__name__).inc()
            log.warning("recommendation stages failed (%s); serving popular items", e)
            ranked, cold, history = self._popular(req), True, np.zeros(0, np.int64)
        ranked = [s for s in ranked if s.product_id not in exclude][: req.k]
        return ranked, cold, {"timings": timings, "history": history}

    def _popular(self, req: RecommendationRequest) -> list:
        from serve.recommend import Scored

        out = []
        for pid in self.catalog.popular:
            p = self.catalog.products[pid]
            if p.in_stock is False or (
                req.filters.category and not (p.category or "").startswith(req.filters.category)
            ):
                continue
            out.append(Scored(pid, -len(out), [{"type": "popular", "category": p.category}]))
            if len(out) == req.k:
                break
        return out

    async def _reasons(self, items: list, history: np.ndarray, deadline: float) -> tuple[list[tuple[str, str]], str]:
        from serve.catalog import facts_hash, facts_of
        from serve.content import CacheKey
        from serve.recommend import template_reason

        segment = self.catalog.segment(history)
        profile = self._profile(history)
        results: list[tuple[str, str] | None] = [None] * len(items)
        pending = []
        for i, s in enumerate(items):
            product = self.catalog.products[s.product_id]
            key = CacheKey(
                s.product_id,
                "reason",
                f"{segment}|{_evidence_key(s.evidence)}",
                self.model_version,
                facts_hash(product, self.catalog.currency),
            )
            cached = self.cache.get(key)
            if cached:
                results[i] = (cached, "cached")
            elif (
                self.generator is not None
                and self.gen_cfg.enabled
                and len(pending) < self.gen_cfg.max_reasons_per_request
            ):
                pending.append(
                    (i, key, self.generator.reason.remote(facts_of(product, self.catalog.currency), profile))
                )
        if pending:
            started = time.perf_counter()
            # Late reasons are served as templates now and cached for the next request of this
            # (product, segment, evidence) when they land.
            got = await within_budget(
                [r for _, _, r in pending],
                min(self.budgets.reasons_ms / 1000, self._remaining(deadline)),
                on_late=lambda j, result: self._cache_text(pending[j][1], result.get("text")),
            )
            self.m_latency.labels("generate_reasons").observe(time.perf_counter() - started)
            for (i, key, _), (result, status) in zip(pending, got, strict=True):
                if status != "ok":
                    self.m_fallback.labels("generate_reason", status).inc()
                elif result.get("text"):
                    text = result["text"]
                    self.cache.put(key, text)
                    self.m_tokens.inc(len(text))
                    results[i] = (text, "generated")
        final = [
            r or (template_reason(self.catalog.products[s.product_id], s.evidence), "template")
            for r, s in zip(results, items)
        ]
        for _, source in final:
            self.m_content.labels("reason", source).inc()
        return final, _overall([src for _, src in final])

    def _cache_text(self, key, value) -> None:
        """Cache a late generation's grounded output (reason text or page sections), if any."""
        if value:
            self.cache.put(key, value)

    def _profile(self, history: np.ndarray) -> dict[str, Any]:
        recent = [
            self.catalog.products[self.catalog.by_item_idx[int(i)]]
            for i in history[::-1][:5]
            if int(i) in self.catalog.by_item_idx
        ]
        cats = [p.category for p in recent if p.category]
        brands = [p.brand for p in recent if p.brand]
        return {
            "recent_items": [p.title for p in recent],
            "top_categories": sorted(set(cats), key=cats.count, reverse=True)[:3],
            "top_brands": sorted(set(brands), key=brands.count, reverse=True)[:3],
        }

    def _item(self, scored, reason: tuple[str, str] | None) -> RecommendedItem:
        p = self.catalog.products[scored.product_id]
        return RecommendedItem(
            product_id=p.product_id,
            title=p.title,
            category=p.category,
            brand=p.brand,
            price=p.price,
            score=round(float(scored.score), 6),
            evidence=[
                Evidence(type=e["type"], detail={k: v for k, v in e.items() if k != "type"}) for e in scored.evidence
            ],
            reason=reason[0] if reason else None,
            reason_source=reason[1] if reason else "none",
        )

    # -- routes

    @api.post(
        "/v1/recommendations",
        response_model=RecommendationResponse,
        responses={400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    async def recommendations(self, req: RecommendationRequest) -> RecommendationResponse:
        """Top-k items for a user (or an anonymous session's recent items), with evidence and a reason each."""
        started = time.perf_counter()
        deadline = time.monotonic() + self.budgets.request_deadline_ms / 1000
        self._check_ids(
            [req.user_id, *req.recent_items, req.filters.category, req.filters.brand], "user_id/recent_items/filters"
        )
        if len(req.recent_items) > self.limits.max_recent_items:
            raise ApiError(
                422,
                f"recent_items has {len(req.recent_items)} entries; the limit is {self.limits.max_recent_items}",
                param="recent_items",
            )
        ranked, cold, info = await self._recommend(req, deadline)
        reasons, source = (
            await self._reasons(ranked, info["history"], deadline)
            if req.with_reasons
            else ([None] * len(ranked), "none")
        )
        timings = {**info["timings"], "total": 1000 * (time.perf_counter() - started)}
        self.m_latency.labels("recommendations_total").observe(timings["total"] / 1000)
        return RecommendationResponse(
            request_id=uuid.uuid4().hex,
            user_id=req.user_id,
            cold_start=cold,
            items=[self._item(s, r) for s, r in zip(ranked, reasons)],
            content_source=source,
            model_version=self.model_version,
            timings_ms={k: round(v, 2) for k, v in timings.items()},
        )

    def _page_request(self, product_id: str, user_id: str | None):
        """Validate a page route's parameters: (user_id or None, product, facts, facts hash, page cache key).

        Bad input raises ApiError before any work: 422 for over-long ids, 404 for an unknown product.
        """
        from serve.catalog import facts_hash, facts_of
        from serve.content import CacheKey

        user_id = self._user_param(user_id)
        self._check_ids([product_id], "product_id")
        product = self.catalog.products.get(product_id)
        if product is None:
            raise ApiError(404, f"unknown product {product_id!r}", "not_found_error", "product_id")
        facts = facts_of(product, self.catalog.currency)
        fhash = facts_hash(product, self.catalog.currency)
        return user_id, product, facts, fhash, CacheKey(product_id, "page", "all", self.model_version, fhash)

    async def _page(self, product_id: str, user_id: str | None):
        from serve.content import template_page

        user_id, product, facts, fhash, key = self._page_request(product_id, user_id)
        started = time.perf_counter()
        deadline = time.monotonic() + self.budgets.request_deadline_ms / 1000
        sections, source = self.cache.get(key), "cached"
        also_req = RecommendationRequest(user_id=user_id, recent_items=[product_id], k=6, with_reasons=True)
        also_task = asyncio.create_task(self._recommend(also_req, deadline, exclude={product_id}))
        if sections is None and self.generator is not None and self.gen_cfg.enabled:
            gen_started = time.perf_counter()
            # Late: template now, the generated page is cached when it lands.
            ((result, status),) = await within_budget(
                [self.generator.page.remote(facts)],
                min(self.budgets.page_ms / 1000, self._remaining(deadline)),
                on_late=lambda _, result: self._cache_text(key, result.get("sections")),
            )
            self.m_latency.labels("generate_page").observe(time.perf_counter() - gen_started)
            if status != "ok":
                self.m_fallback.labels("generate_page", status).inc()
            elif result.get("sections"):
                sections, source = result["sections"], "generated"
                self.cache.put(key, sections)
            else:
                self.m_fallback.labels("generate_page", result.get("why", "ungrounded")).inc()
        if sections is None:
            sections, source = template_page(facts), "template"
        self.m_content.labels("page", source).inc()
        ranked, _, info = await also_task
        user_history = info["history"]
        note_items = [_self_scored(product_id, user_history, self.catalog)]
        (note,), note_source = (
            await self._reasons(note_items, user_history, deadline) if user_id else ([(None, "none")], "none")
        )
        reasons, _ = await self._reasons(ranked, user_history, deadline)
        timings = {**info["timings"], "total": 1000 * (time.perf_counter() - started)}
        page = ProductPage(
            request_id=uuid.uuid4().hex,
            product_id=product_id,
            price=product.price,
            in_stock=product.in_stock,
            sections=PageSections(**sections),
            sections_source=source,
            personalized_note=note[0],
            note_source=note[1] if note[0] else "none",
            also_like=[self._item(s, r) for s, r in zip(ranked, reasons)],
            facts_hash=fhash,
            model_version=self.model_version,
            timings_ms={k: round(v, 2) for k, v in timings.items()},
        )
        return page, product

    @api.get(
        "/v1/products/{product_id}/page",
        response_model=ProductPage,
        responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    async def product_page(self, product_id: str, user_id: str | None = None) -> ProductPage:
        """Product-page sections (title, highlights, description), a personalized note and 'you may also like'."""
        page, _ = await self._page(product_id, user_id)
        return page

    async def _note(self, product_id: str, user_id: str, deadline: float) -> tuple[str | None, str]:
        """The page's personalized note (same evidence, cache key and grounding as `_page`)."""
        history = _history_of(self.catalog, user_id, product_id)
        (note,), _ = await self._reasons([_self_scored(product_id, history, self.catalog)], history, deadline)
        return (note[0], note[1]) if note[0] else (None, "none")

    async def _drain_late_stream(self, key, nxt: asyncio.Future, events) -> None:
        """A stream past its budget keeps generating: cache its page for the next request, as
        `_page` does with a late generation."""
        final = None
        try:
            while True:
                event = await nxt
                if "section" not in event:
                    final = event
                nxt = asyncio.ensure_future(events.__anext__())
        except StopAsyncIteration:
            pass
        except Exception as e:
            self.m_fallback.labels("stream_page_late", type(e).__name__).inc()
        if final and final.get("sections"):
            self.cache.put(key, final["sections"])

    async def _stream_sections(self, facts: dict, key, deadline: float, out: dict):
        """Grounded section pieces from the generator within min(page budget, deadline); the final
        sections, their source and the fallback reason (None, "budget", "ungrounded", an error
        name) are left in `out`. Past the budget the generation is left to finish and be cached."""
        from serve.content import template_page

        sections, source, why = self.cache.get(key), "cached", None
        if sections is None and self.generator is not None and self.gen_cfg.enabled:
            budget_end = min(time.monotonic() + self.budgets.page_ms / 1000, deadline)
            started = time.perf_counter()
            stream = self.generator.options(stream=True).stream_page.remote(facts)
            events, nxt, final, settled = stream.__aiter__(), None, None, False
            try:
                while True:
                    nxt = asyncio.ensure_future(events.__anext__())
                    done, _ = await asyncio.wait([nxt], timeout=max(0.0, budget_end - time.monotonic()))
                    if not done:
                        why, settled = "budget", True
                        task = asyncio.create_task(self._drain_late_stream(key, nxt, events))
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                        break
                    try:
                        event = nxt.result()
                    except StopAsyncIteration:
                        settled = True
                        break
                    if "section" in event:
                        piece = event["section"]
                        self.m_tokens.inc(len(piece["text"]))
                        if piece["field"] == "highlights":  # as the final sections show it (PageSections)
                            piece = {**piece, "text": tidy_highlight(piece["text"])}
                        yield piece
                    else:
                        final = event
            except Exception as e:  # the generator is down or failed: template copy, not an error
                why = type(e).__name__
            finally:
                if not settled:  # failed, or the client went away: stop generating
                    if nxt is not None and not nxt.done():
                        nxt.cancel()
                    with contextlib.suppress(Exception):  # best effort, as Serve's cancel is
                        stream.cancel()
                self.m_latency.labels("generate_page_stream").observe(time.perf_counter() - started)
            if final and final.get("sections"):
                sections, source = final["sections"], "generated"
                self.cache.put(key, sections)
            elif final and why is None:
                why = final.get("why", "ungrounded")
            if why:
                self.m_fallback.labels("stream_page", why).inc()
        if sections is None:
            sections, source = template_page(facts), "template"
        out.update(sections=sections, source=source, fallback=why)

    @api.get(
        "/v1/products/{product_id}/page/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-sent events: start, section*, sections, note?, done.",
            },
            404: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )
    async def product_page_stream(self, product_id: str, user_id: str | None = None) -> StreamingResponse:
        """Server-sent events: grounded section text as each sentence completes, then the final sections
        (generated, cached or template, as on the page), the personalized note, and `done`."""
        user_id, product, facts, fhash, key = self._page_request(product_id, user_id)
        started = time.perf_counter()
        deadline = time.monotonic() + self.budgets.request_deadline_ms / 1000
        request_id = uuid.uuid4().hex

        async def events():
            note_task = asyncio.create_task(self._note(product_id, user_id, deadline)) if user_id else None
            try:
                yield _sse(
                    "start",
                    {
                        "request_id": request_id,
                        "product_id": product_id,
                        "facts_hash": fhash,
                        "model_version": self.model_version,
                    },
                )
                final: dict[str, Any] = {}
                async with contextlib.aclosing(self._stream_sections(facts, key, deadline, final)) as pieces:
                    async for piece in pieces:  # aclosing: a client that goes away stops the generation
                        yield _sse("section", piece)
                self.m_content.labels("page", final["source"]).inc()
                sections = PageSections(**final["sections"]).model_dump()
                yield _sse(
                    "sections",
                    {"sections": sections, "sections_source": final["source"], "fallback": final["fallback"]},
                )
                if note_task is not None:
                    note, note_source = await note_task
                    yield _sse("note", {"personalized_note": note, "note_source": note_source})
            except Exception as e:  # a bug, not a slow or failed generator (those fall back above)
                log.exception("page stream failed")
                self.m_fallback.labels("page_stream", type(e).__name__).inc()  # the HTTP status was 200 already
                message = f"internal error ({type(e).__name__}); the stream stopped"
                detail = ErrorDetail(message=message, type="server_error", code=500)
                yield _sse("error", ErrorBody(error=detail).model_dump())
            finally:
                if note_task is not None and not note_task.done():
                    note_task.cancel()
            total_ms = round(1000 * (time.perf_counter() - started), 2)
            yield _sse("done", {"request_id": request_id, "timings_ms": {"total": total_ms}})

        no_buffering = {
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }  # each event reaches the shopper at once
        return StreamingResponse(events(), media_type="text/event-stream", headers=no_buffering)

    @api.get("/shop/products/{product_id}", response_class=HTMLResponse)
    async def shop_page(
        self,
        product_id: str,
        user_id: str | None = None,
        debug: str | None = None,
        shopgraph_user: str | None = Cookie(None),
    ) -> HTMLResponse:
        """The demo product page: generated sections, the personalized note, recommendations with reasons.

        `?user_id=` signs the shopper in (empty: signs out); it is kept in a cookie, not in the page
        or its links. `?debug=1` shows where each text came from, the model and the facts hash."""
        from serve.page import render_page

        try:
            show_debug = _flag(debug, "debug")
            user = self._user_param(user_id if user_id is not None else shopgraph_user)
            page, product = await self._page(product_id, user)
        except ApiError as e:
            title = "Not found" if e.status == 404 else "Bad request"
            body = f"<!doctype html><title>{title}</title><h1>{e.status} {title}</h1><p>{html.escape(e.message)}</p>"
            return HTMLResponse(body, status_code=e.status)
        response = HTMLResponse(render_page(page, product, self.catalog.currency, debug=show_debug))
        if user_id is not None:  # the shopper chose: remember it for the links, or forget it
            if user:
                response.set_cookie(_USER_COOKIE, user, httponly=True, samesite="lax")
            else:
                response.delete_cookie(_USER_COOKIE)
        return response

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress replica answers."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness: the retriever and ranker answer; the generator is reported, not required."""
        status: dict[str, Any] = {
            "catalog_products": len(self.catalog.products),
            "cache_entries": len(self.cache),
            "precomputed": self.precomputed,
        }
        try:
            probe = RecommendationRequest(recent_items=[self.catalog.popular[0]], k=1, with_reasons=False)
            ranked, _, _ = await self._recommend(probe, time.monotonic() + 5)
            status["recommendations"] = "ok" if ranked else "empty"
        except Exception as e:
            status["recommendations"] = f"failing: {e}"
        if self.generator is not None and self.gen_cfg.enabled:
            try:
                status["generator"] = await asyncio.wait_for(_await(self.generator.stats.remote()), 2)
            except Exception as e:
                status["generator"] = f"unavailable ({type(e).__name__}); serving cached or template copy"
        else:
            status["generator"] = "disabled; serving cached or template copy"
        ready = status["recommendations"] == "ok"
        return JSONResponse({"ready": ready, **status}, status_code=200 if ready else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> PlainTextResponse:
        """Prometheus metrics of this ingress replica: stage latency, content sources, fallbacks."""
        from prometheus_client import generate_latest

        return PlainTextResponse(generate_latest(self.registry).decode(), media_type="text/plain; version=0.0.4")
