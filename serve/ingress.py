"""The ingress deployment: shopgraph's HTTP API and the flow of each request.

    serve run serve.app:build_app config_path=configs/local.yaml      # built by serve.app

Routes: recommendations, product pages (JSON, server-sent events, the demo HTML page), health,
readiness and metrics. Each request gets a deadline and each stage a budget (`serve.budgets`);
the retriever and ranker are called with typed payloads (`serve.deployments`) through a circuit
breaker each (`serve.resilience`): a stage found down is skipped at once and the response says
which stage it lost (`degraded`). Generated copy is served from the content cache; a miss is
answered with template copy now and queued for generation in the background
(`GenerationQueue`: bounded, de-duplicated, aged), unless the client asks to wait (`wait_ms`).
`/readyz` reads the stages' last health probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote, unquote

import numpy as np
from fastapi import Cookie, Depends, Header, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from core.runtime import freeze_startup_heap
from ml.reasons import reason_key, reason_profile
from serve.app import AppArgs
from serve.content import generator_version, load_precomputed, tidy_highlight
from serve.deployments import RankFilters, RankRequest, RetrieveRequest
from serve.http import ApiError, make_api, require_scope
from serve.resilience import Busy, CircuitBreaker, GenerationQueue, StageMonitor, awaited, overloaded
from serve.schemas import (
    MAX_ID_CHARS,
    QA_MODEL,
    QA_TEMPLATE_MODEL,
    ChatCompletionRequest,
    ErrorBody,
    ErrorDetail,
    EventsRequest,
    EventsResponse,
    Evidence,
    PageSections,
    ProductIn,
    ProductOut,
    ProductPage,
    ProductPatch,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
    ReviewSummary,
)
from serve.security import RateLimiter

log = logging.getLogger("shopgraph.serve")

api = make_api()


# ----------------------------------------------------------------------------- helpers


STAGES = ("retriever", "ranker", "generator")


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


# The bounds of the page routes' parameters in the API schema (every string an API takes has one);
# the deployment's own limits (serve.limits, serve.budgets.max_wait_ms) are checked in the routes.
ProductIdPath = Annotated[str, Path(max_length=MAX_ID_CHARS, description="A catalog product id.")]
AuthHeader = Annotated[str | None, Header(max_length=4096, description="`Bearer <API key>` (online.api_keys).")]
UserIdPath = Annotated[
    str, Path(max_length=MAX_ID_CHARS, description="The shop's own user id (pseudonymized on arrival).")
]
UserIdQuery = Annotated[
    str | None, Query(max_length=MAX_ID_CHARS, description="The shopper; empty or absent: anonymous.")
]
WaitQuery = Annotated[
    str | None, Query(max_length=16, description="Milliseconds to wait for generation (0 to max_wait_ms).")
]

AcceptLanguageHeader = Annotated[
    str | None,
    Header(
        max_length=512,
        description="The shopper's languages (`zh-CN,zh;q=0.9,en;q=0.8`): the segment's language when it names one of serve.segments.languages.",
    ),
]

_USER_COOKIE = "shopgraph_user"  # the demo shop's signed-in shopper (serve.page prints no user id)


def _wait_param(value: str | int | None, cap_ms: int, param: str = "wait_ms") -> int:
    """How long the client lets a response wait for generation, in ms: absent -> 0 (answer at once
    with cached or template copy); not a whole number, negative or over `serve.budgets.max_wait_ms`
    -> 422 naming the limit."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    try:
        ms = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise ApiError(422, f"{param} is {value[:40]!r}; use a whole number of milliseconds", param=param) from None
    if ms < 0 or ms > cap_ms:
        raise ApiError(422, f"{param} is {ms}; use 0 to {cap_ms} (serve.budgets.max_wait_ms) milliseconds", param=param)
    return ms


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


class PageTarget(NamedTuple):
    """What a page route validated: who reads which product, for which segment (`ml.segments`)."""

    user_id: str | None  # the pseudonym; None = anonymous or erased
    product: Any
    facts: dict
    fhash: str
    key: Any  # serve.content.CacheKey of the page's sections, for `segment`
    segment: Any  # ml.segments.Segment
    profile: dict | None  # the generator's segment profile; None for segment "all"
    cares: list[str]  # what the segment reads first on this page


def _overall(sources: list[str]) -> str:
    kinds = set(sources)
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"


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


_PRODUCT_IN_SYSTEM = re.compile(r"product[ _-]?id\s*[:=：]\s*[\"']?([^\s\"',;，；]+)", re.IGNORECASE)


def _qa_matcher(cfg):
    """The question matcher of a replica: cue words, and the text encoder (loaded on the first
    question without a cue word, off the event loop: `plan_answer` runs in a thread)."""
    from ml.qa import QuestionMatcher

    def load():
        from ml.encoder import TextEncoder, resolve_encoder_dir

        return TextEncoder(resolve_encoder_dir(cfg.models.dir, cfg.models.encoder))

    return QuestionMatcher(loader=load)


def _stop_at(emitted: str, piece: str, stops: list[str]) -> tuple[str, bool]:
    """`piece` cut before the first stop string found in the answer so far (OpenAI's `stop`)."""
    if not stops:
        return piece, False
    full = emitted + piece
    start = max(0, len(emitted) - max(len(s) for s in stops))
    found = [i for i in (full.find(s, start) for s in stops) if i >= 0]
    if not found:
        return piece, False
    return full[len(emitted) : max(min(found), len(emitted))], True


def _chunk(completion_id: str, created: int, model: str, delta: dict, finish: str | None = None, **extra) -> str:
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


# The ingress class comes last: `serve.ingress` serializes it when the class is defined,
# so every module-level helper it uses must already exist at that point.


def _with_transport(transport: str, *handles):
    """The stage handles set to call over `serve.handle_transport` (grpc or actor). Serve's own
    default is fixed when `ray.serve` is first imported in the process that builds the app, so
    `shopgraph serve run` (actor calls) and KubeRay's controller (gRPC) differed."""
    by_reference = transport == "actor"
    return [h.options(_by_reference=by_reference) if h is not None else None for h in handles]


def _transport_of(handle) -> str:
    """How calls through `handle` travel: grpc, actor, or in-process (a unit test's stand-in)."""
    options = getattr(handle, "handle_options", None)
    if options is None:
        return "in-process"
    return "actor" if options._by_reference else "grpc"


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(
        self, args: dict, retriever: DeploymentHandle, ranker: DeploymentHandle, generator: DeploymentHandle | None
    ):
        from core.privacy import Pseudonymizer, TombstoneStore
        from serve.catalog import load_catalog

        self.args = AppArgs(**args)
        self.cfg = self.args.load_config()
        retriever, ranker, generator = _with_transport(self.cfg.serve.handle_transport, retriever, ranker, generator)
        privacy = self.cfg.privacy
        live = None
        if self.cfg.online.enabled:
            from serve.live import LiveState

            live = LiveState.open(self.cfg)  # the online database: migrated here, keys read here
        self._setup(
            self.cfg.serve,
            load_catalog(self.cfg),
            retriever,
            ranker,
            generator,
            generator_version(self.cfg),
            # Keys are read here, at replica start (never at import or bind time): the same key the
            # batch pipeline used, from privacy.key_env or the generated key under artifacts.root.
            pseudonymizer=Pseudonymizer.from_config(self.cfg),
            tombstones=TombstoneStore(self.cfg.artifacts.root, privacy.tombstone_refresh_s),
            privacy=privacy,
            live=live,
            max_len=self.cfg.train.recommender.max_len,
        )
        from serve.content import content_dir, read_precomputed
        from serve.reload import Reloader, manifest_stamp

        # Catalog writes in the background too (requests then rarely wait for the poll), and a
        # refreshed content directory reloaded without a restart (serve.reload).
        self.reloader = Reloader(
            self.cfg.serve.reload_poll_ms / 1000, live=live, catalog=self.catalog, on_change=self._forget
        )
        from serve.content import load_review_summaries

        self.review_summaries = load_review_summaries(self.cfg)
        self.qa_matcher = _qa_matcher(self.cfg)
        self.generator_name = str(self.cfg.models.generator)
        if self.gen_cfg.precomputed_content:
            root = content_dir(self.cfg)
            loaded = manifest_stamp([root])  # before the load: a commit racing with it is reloaded
            self.precomputed = load_precomputed(self.cfg, self.cache, self.model_version, self.catalog)
            self.reloader.watch(
                "content",
                [root],
                lambda: read_precomputed(root, self.model_version, self.catalog),
                self._use_content,
                stamp=loaded,
            )
        freeze_startup_heap()

    def _setup(
        self,
        serve_cfg,
        catalog,
        retriever,
        ranker,
        generator,
        model_version: str,
        *,
        pseudonymizer,
        tombstones,
        privacy,
        user_store=None,
        live=None,
        max_len: int = 50,
    ) -> None:
        """Everything but loading: also how unit tests build an ingress around in-process fakes.

        `user_store` is the seam for erasure and export (`core.privacy.UserDataStore`); None = the
        online database's rows when there is one (`live`, serve.live.LiveState), else nothing."""
        from collections import OrderedDict

        from prometheus_client import CollectorRegistry

        from core.privacy import UserDataStore
        from serve.content import ContentCache, shared_cache
        from serve.metrics import GC_PAUSES, MetricSet

        self.pseudonymizer, self.tombstones, self.privacy = pseudonymizer, tombstones, privacy
        stages = (("retriever", retriever), ("ranker", ranker), ("generator", generator))
        self.transport = {name: _transport_of(h) for name, h in stages if h is not None}  # /readyz
        if user_store is None and live is not None:
            from serve.live import OnlineUserData

            user_store = OnlineUserData(live.store)
        self.user_store = user_store if user_store is not None else UserDataStore()
        # Cache keys each (pseudonymous) user's answers used, so erasing them purges those entries.
        self._user_keys: OrderedDict[str, set] = OrderedDict()

        # The app this replica serves: `serve.ingress` froze a copy of the module's `api` together
        # with this class, so inside its methods `api` is that copy. The middleware of serve.http
        # reads this replica's settings and request counter from its state. (Not `self.app`: Serve's
        # replica wrapper defines `app` as a read-only property.)
        self.http_app = api
        api.state.max_body_bytes = serve_cfg.limits.max_body_bytes
        api.state.allow_unauthenticated_admin = privacy.allow_unauthenticated_admin
        # require_scope (the user routes) checks bearer keys with this replica's online keys
        api.state.authorize = (lambda authorization, scope: self._authorize(authorization, scope)) if live else None
        sec = serve_cfg.security
        api.state.rate_limiter = RateLimiter(sec.rate_limit) if sec.rate_limit.enabled else None
        api.state.cors_origins = frozenset(sec.cors_allowed_origins)
        self.catalog = catalog
        self.live, self.max_len = live, max_len
        if live is not None:
            api.state.body_limits = {"/v1/events": live.cfg.max_batch_bytes}
        self.retriever, self.ranker, self.generator = retriever, ranker, generator
        self.budgets, self.limits, self.gen_cfg = serve_cfg.budgets, serve_cfg.limits, serve_cfg.generation
        self.rules = serve_cfg.rules
        self._facts_memo: dict[str, tuple[dict, str]] = {}
        self.model_version = model_version
        self.cache = ContentCache(self.gen_cfg.cache_entries, shared_cache(serve_cfg.cache))
        from ml.segments import SegmentIndex

        self.segments = SegmentIndex(catalog.products.values(), serve_cfg.segments)
        self.precomputed = 0
        self.review_summaries: dict[str, dict] = {}  # product_id -> ml.aspects summary (train.sentiment)
        from ml.qa import QuestionMatcher

        self.qa_matcher = QuestionMatcher()  # cue words only; a real replica adds the encoder (__init__)
        self.generator_name = "generator"
        self.created = int(time.time())
        self.reloader = None  # serve.reload.Reloader of a real replica (__init__); None in unit tests
        # Written to this replica's registry (/metrics) and, in a Ray actor, to Ray's metrics (serve.metrics).
        self.metrics = MetricSet(CollectorRegistry())
        self.registry = self.metrics.registry
        ms = self.metrics
        GC_PAUSES.watch(ms)  # shopgraph_gc_pause_seconds: the collector's pauses every request waits out
        self._gauge_task: asyncio.Task | None = None
        self.m_latency = ms.histogram("shopgraph_stage_latency_seconds", "Latency per stage", ["stage"])
        self.m_content = ms.counter("shopgraph_content_total", "Content served by source", ["kind", "source"])
        self.m_fallback = ms.counter(
            "shopgraph_fallbacks_total",
            "Fallbacks by stage (retriever, ranker, generator, generate_page, generate_reason, stream_page; language: a product in a language the generator does not write) and cause",
            ["stage", "why"],
        )
        # Counted by serve.http's middleware for every response (route template, status), errors included.
        self.m_requests = ms.counter(
            "shopgraph_requests_total", "Requests by endpoint (route template) and status", ["endpoint", "status"]
        )
        api.state.requests = self.m_requests
        self.m_tokens = ms.counter("shopgraph_generated_chars_total", "Characters of generated text served")
        self.m_jobs = ms.counter(
            "shopgraph_generation_jobs_total",
            "Background generation jobs by event (submitted, deduplicated, shed, expired, refused, done, failed, timeout, cancelled)",
            ["event"],
        )
        self.m_queue = ms.gauge("shopgraph_generation_queue", "Background generation jobs waiting / running", ["what"])
        self.m_stage = ms.gauge("shopgraph_stage_up", "Last health probe per stage: 1 ok, 0.5 busy, 0 down", ["stage"])
        self.m_events = ms.counter(
            "shopgraph_events_total",
            "Events received through POST /v1/events by outcome (stored, duplicate, flagged)",
            ["outcome"],
        )
        self.m_served = ms.counter(
            "shopgraph_served_log_rows_total",
            "Served items for online evaluation by outcome: written, dropped (queue full or closing), failed (the write failed); never the request",
            ["outcome"],
        )
        self.m_served_queue = ms.gauge(
            "shopgraph_served_log_queue", "Served items waiting to be written to the online database"
        )
        self.m_cache = ms.gauge(
            "shopgraph_content_cache",
            "Content cache of this replica: entries, hits, misses, shared_hits (found in Redis), shared_errors (Redis calls that failed and were skipped)",
            ["what"],
        )
        self.served = self.online_gauges = None
        if live is not None and live.cfg.served_log.enabled:
            from serve.served import ServedLog

            self.served = ServedLog(
                live.store, live.cfg.served_log, lambda outcome, n: self.m_served.labels(outcome).inc(n)
            )
        if live is not None and live.cfg.evaluation.metrics_refresh_s > 0:
            from serve.served import OnlineGauges

            self.online_gauges = OnlineGauges(live.store.engine, live.cfg.evaluation, self.registry)
        self._background: set[asyncio.Task] = set()  # late streams being cached; held so they are not collected
        h = serve_cfg.health
        self.breakers = {s: CircuitBreaker(h.breaker_failures, h.breaker_cooldown_ms / 1000) for s in STAGES}
        probes = {"retriever": self._probe_retriever, "ranker": self._probe_ranker}
        if self._generates():
            probes["generator"] = self._probe_generator
        self.monitor = StageMonitor(
            probes,
            self.breakers,
            interval_s=h.probe_interval_ms / 1000,
            timeout_s=h.probe_timeout_ms / 1000,
            busy_s=h.busy_ms / 1000,
            down_after=h.down_after_timeouts,
        )
        q = self.gen_cfg.queue
        self.queue = GenerationQueue(
            max_length=q.max_length,
            max_age_s=q.max_age_ms / 1000,
            workers=q.workers,
            gate=lambda: self.breakers["generator"].state != "open",
            on_outcome=self._job_outcome,
        )

    def _started(self) -> None:
        """Start the stage probes, the background refresh, the served log's writer and the online
        gauges' refresh on this replica's event loop (idempotent; every route calls it)."""
        self.monitor.start()
        if self.reloader is not None:
            self.reloader.start()
        if self.served is not None:
            self.served.start()
        if self.online_gauges is not None:
            self.online_gauges.start()
        if self.metrics.ray and self._gauge_task is None:  # Ray's endpoint is scraped without asking us
            self._gauge_task = asyncio.get_running_loop().create_task(self._export_gauges())

    async def _export_gauges(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a metric is never worth a replica
                self._refresh_gauges()
            await asyncio.sleep(self.monitor.interval_s)

    def __del__(self) -> None:
        """Serve calls this at graceful shutdown: write the served items still waiting."""
        served, gauges = self.__dict__.get("served"), self.__dict__.get("online_gauges")
        if gauges is not None:
            gauges.close()
        if served is not None:
            served.close()

    def _record_served(self, request_id: str, items: list[RecommendedItem], raw_user: str | None, surface: str,
                       degraded: list[str]) -> None:  # fmt: skip
        """What this answer showed, queued for the database (serve.served): never waits, never fails
        the request. The user is the pseudonym events are stored under (None: anonymous or erased)."""
        if self.served is None or not items:
            return
        user_key = self._event_user(raw_user) if raw_user is not None else None
        common = {
            "request_id": request_id,
            "user_key": user_key,
            "surface": surface,
            "recommender_version": str(self.catalog.model_version)[:64],
            "generator_version": str(self.model_version)[:64],
            "degraded": ",".join(degraded)[:64] or None,
            "ts": int(time.time() * 1000),
        }
        self.served.record(
            [
                {**common, "position": n, "product_id": item.product_id, "reason_source": item.reason_source}
                for n, item in enumerate(items, start=1)
            ]
        )

    async def check_health(self) -> None:
        """Serve's periodic replica check: keeps the probes running; the ingress itself never fails it."""
        self._started()

    # -- helpers

    def _generates(self) -> bool:
        return self.generator is not None and self.gen_cfg.enabled

    def _writes(self, facts: dict) -> bool:
        """Whether generated copy may serve this product: the generator writes its language
        (serve.generation.languages). Otherwise template copy in the product's own language
        (`serve.content.template_page`, `ml.reasons.template_reason`): no generation is queued,
        and no cached or precomputed text is looked up (a batch job may have written some)."""
        from core.facts import facts_language

        lang = facts_language(facts)
        if lang in self.gen_cfg.languages:
            return True
        self.m_fallback.labels("language", lang).inc()
        return False

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    async def _call(self, stage: str, name: str, send, budget_ms: int, deadline: float):
        """One retriever or ranker call (`send()` makes it) within min(budget, deadline): the breaker
        learns the outcome; a late call is cancelled (`awaited`)."""
        started = time.perf_counter()
        try:
            out = await awaited(send(), min(budget_ms / 1000, self._remaining(deadline)))
        except Exception as e:
            if overloaded(e):  # its queue is full: skipped for this request, not a failure of the stage
                self.m_fallback.labels(stage, "overloaded").inc()
                log.debug("%s refused the call for overload; serving without it", stage)
                return None
            self.breakers[stage].failure()
            why = "timeout" if isinstance(e, asyncio.TimeoutError) else type(e).__name__
            self.m_fallback.labels(stage, why).inc()
            log.warning("%s failed (%s); serving without it", stage, why)
            return None
        finally:
            self.m_latency.labels(name).observe(time.perf_counter() - started)
        self.breakers[stage].success()
        return out

    def _usable(self, stage: str) -> bool:
        """Whether to call `stage` now: its breaker is closed, or half-open and this is the trial."""
        if self.breakers[stage].allow():
            return True
        self.m_fallback.labels(stage, "down").inc()
        return False

    # -- health probes (serve.resilience.StageMonitor runs them every serve.health.probe_interval_ms)

    async def _probe_retriever(self):
        probe = RetrieveRequest(recent_items=self.catalog.popular[:1], n=5)
        return await awaited(self.retriever.retrieve.remote(probe))

    async def _probe_ranker(self):
        from serve.recommend import Candidates

        empty = Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32))
        probe = RankRequest(history=np.zeros(0, np.int64), candidates=empty, k=1)
        return await awaited(self.ranker.rank.remote(probe))

    async def _probe_generator(self):
        stats = await awaited(self.generator.health.remote())
        if len(self.queue) >= self.queue.max_length:  # it answers, but this replica's queue is full
            return Busy(f"generation queue full ({len(self.queue)} waiting, new work is shed)")
        return stats

    def _generator_failed(self, e: Exception) -> str:
        """The fallback cause of a streamed generation that raised; only a real failure counts
        against the generator's breaker (one that refused the call for overload is alive)."""
        if overloaded(e):
            return "overloaded"
        self.breakers["generator"].failure()
        return type(e).__name__

    def _job_outcome(self, event: str, cause: str) -> None:
        """Metrics and the generator's breaker, from the background queue's events."""
        self.m_jobs.labels(event).inc()
        if event == "done":
            self.breakers["generator"].success()
        elif event == "failed" and cause == "overloaded":  # refused for overload: alive, not failing
            self.m_fallback.labels("generator", "overloaded").inc()
        elif event in ("failed", "timeout"):
            self.breakers["generator"].failure()
            self.m_fallback.labels("generator", cause or event).inc()
        elif event in ("shed", "expired"):
            self.m_fallback.labels("generator", event).inc()

    def _user_param(self, user_id: str | None) -> str | None:
        return _user_param(user_id, min(self.limits.max_text_chars, MAX_ID_CHARS))

    def _check_ids(self, values: list[str | None], param: str) -> None:
        for v in values:
            if v is not None and len(v) > self.limits.max_text_chars:
                raise ApiError(
                    422, f"{param} is {len(v)} characters long; the limit is {self.limits.max_text_chars}", param=param
                )

    # -- pseudonymous users (core.privacy): raw ids are hashed here, once, before any lookup,
    # cache key, log line, metric label or prompt; everything past these methods sees pseudonyms.

    def _user_keys_of(self, raw: str) -> dict[str, str]:
        """kid -> pseudonym of a raw id under every configured key; an id already shaped like a
        pseudonym of a configured key is taken as is (privacy.accept_pseudonyms)."""
        if self.privacy.accept_pseudonyms and self.pseudonymizer.is_pseudonym(raw):
            return {raw.split("_")[1]: raw}
        return self.pseudonymizer.all_keys(raw)

    def _event_user(self, raw: str) -> str:
        """The pseudonym an event is stored under: the current key's (what `_user` finds in the
        online database's rows; shards under an older key are re-keyed by the next prepare)."""
        return next(iter(self._user_keys_of(raw).values()))

    def _erased(self, keys: dict[str, str]) -> bool:
        tombstoned = self.tombstones.keys()
        return bool(tombstoned) and any(k in tombstoned for k in keys.values())

    def _user(self, raw: str | None) -> str | None:
        """The pseudonym the stages look the user up by; None (anonymous) for no user or an erased one.

        During a key rotation the shards may still hold the old key's pseudonyms: the first key
        (current first) under which the catalog knows the user wins, else the current one."""
        if raw is None:
            return None
        keys = self._user_keys_of(raw)
        if self._erased(keys):
            return None
        return next((k for k in keys.values() if k in self.catalog.user_history), next(iter(keys.values())))

    def _remember(self, user: str | None, keys) -> None:
        """Note the cache keys an answer for `user` used (bounded like the cache itself)."""
        if not user:
            return
        held = self._user_keys.setdefault(user, set())
        new = [k for k in keys if k not in held]
        held.update(keys)
        if new:  # noted in the shared cache too, so an erasure through any replica purges them
            self.cache.own(user, new)
        self._user_keys.move_to_end(user)
        while len(self._user_keys) > max(self.gen_cfg.cache_entries, 1):
            self._user_keys.popitem(last=False)

    # -- the online database (serve.live)

    async def _sync(self) -> None:
        """Catalog writes of every replica into this one's catalog (at most every online.poll_ms)."""
        if self.live is not None:
            await self.live.sync(self.catalog, self._forget)

    def _use_content(self, entries: list) -> None:
        """A refreshed content directory: its pages and reasons replace the ones they supersede."""
        dropped = self.cache.replace(entries)
        self.precomputed = len(entries)
        log.info("content reloaded: %d precomputed entries, %d superseded ones dropped", len(entries), dropped)

    def _forget(self, product_id: str) -> None:
        self._facts_memo.pop(product_id, None)  # its facts (and so its facts hash) changed

    def _online(self):
        if self.live is None:
            raise ApiError(503, "the write API is off (online.enabled is false)", "server_error")
        return self.live

    def _authorize(self, authorization: str | None, scope: str | None):
        """The API key of `Authorization: Bearer <token>`: 401 without one or for an unknown one
        (with `WWW-Authenticate: Bearer`), 403 when it lacks `scope` (None: any valid key)."""
        from core.store.keys import HOW_TO

        live = self._online()
        challenge = {"WWW-Authenticate": 'Bearer realm="shopgraph"'}
        if not live.keys.keys:
            raise ApiError(
                401,
                f"no API keys are configured on this deployment; {HOW_TO}",
                "authentication_error",
                headers=challenge,
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "this route needs an API key: send the header 'Authorization: Bearer <token>'",
                "authentication_error",
                headers=challenge,
            )
        key = live.keys.find(token.strip())
        if key is None:
            raise ApiError(401, "the API key is not recognised", "authentication_error", headers=challenge)
        if scope is not None and not key.allows(scope):
            raise ApiError(
                403,
                f"API key {key.name!r} lacks the {scope!r} scope; mint a key with it (python -m core.store.keys)",
                "permission_error",
            )
        return key

    def _product_id(self, product_id: str) -> str:
        from core.values import RowError, as_id

        self._check_ids([product_id], "product_id")
        try:
            return as_id(product_id, "product_id")
        except RowError as e:
            raise ApiError(422, str(e), param="product_id") from None

    async def _db(self, fn, *args):
        """A store call off the event loop; a database that fails is a 503 (nothing was applied)."""
        try:
            return await asyncio.to_thread(fn, *args)
        except ApiError:
            raise
        except Exception as e:
            log.warning("online database call failed: %s", e)
            raise ApiError(
                503,
                f"the online database is unavailable ({type(e).__name__}); nothing was applied, retry",
                "server_error",
            ) from None

    def _product_out(self, row: dict | None, product_id: str) -> ProductOut:
        if row is not None:
            fields = {k: v for k, v in row.items() if k in ProductOut.model_fields}
            return ProductOut(**fields | {"attributes": row.get("attributes") or {}}, source="database")
        return ProductOut(**self.catalog.products[product_id].as_record(), source="catalog")

    def _catalog_facts(self, product_id: str) -> dict | None:
        p = self.catalog.products.get(product_id)
        return p.as_record() if p is not None else None

    def _known_history(
        self, user_id: str | None, recent_items: list[str], merged: np.ndarray | None = None
    ) -> np.ndarray:
        """The user's known items and the session's, as the retriever builds them (without it)."""
        if merged is not None:
            history = merged
        else:
            history = (
                self.catalog.user_history.get(user_id, np.zeros(0, np.int64)) if user_id else np.zeros(0, np.int64)
            )
        extra = [self.catalog.item_idx(p) for p in recent_items if self.catalog.item_idx(p) is not None]
        return np.concatenate([history, np.asarray(extra, np.int64)]) if extra else history

    async def _recommend(
        self, req: RecommendationRequest, deadline: float, exclude: set[str] = frozenset()
    ) -> tuple[list, bool, dict]:
        """Retrieve, then rank. A stage that is down (breaker open) is skipped at once, one that
        fails or runs past its budget is given up: without the retriever the answer is popular
        items, without the ranker the retrieved candidates in retrieval order, both under the same
        rules and filters, and `degraded` names the stage. `cold_start` is only about the user
        (no usable history), never about a lost stage."""
        timings: dict[str, float] = {}
        degraded: list[str] = []
        n = min(max(req.k * 3, 50), 300)
        exclude = set(exclude) | set(req.recent_items)
        merged = None
        if self.live is not None:
            in_stock_only = self.rules.in_stock_only if req.filters.in_stock_only is None else req.filters.in_stock_only
            exclude |= self.live.hidden(in_stock_only)  # deleted / out of stock in the database since the shards
            if req.user_id:
                started = time.perf_counter()
                merged, bought = await self.live.history(req.user_id, self.catalog, self.max_len)
                if self.rules.exclude_purchased:
                    exclude |= bought
                timings["live"] = 1000 * (time.perf_counter() - started)
        filters = RankFilters(**req.filters.model_dump(), exclude=sorted(exclude))
        got = None
        if self._usable("retriever"):
            started = time.perf_counter()
            retrieve = RetrieveRequest(
                user_id=req.user_id,
                recent_items=req.recent_items,
                n=n,
                history=merged.tolist() if merged is not None else None,
            )
            got = await self._call(
                "retriever",
                "retrieve",
                lambda: self.retriever.retrieve.remote(retrieve),
                self.budgets.retrieval_ms,
                deadline,
            )
            timings["retrieve"] = 1000 * (time.perf_counter() - started)
        if got is None:
            degraded.append("retriever")
            history = self._known_history(req.user_id, req.recent_items, merged)
            ranked, cold = self._popular(req, history, filters), not len(history)
        else:
            history, cold = got.history, bool(got.candidates.cold_start)
            ranked = None
            if self._usable("ranker"):
                started = time.perf_counter()
                rank = RankRequest(
                    user_id=req.user_id, history=got.history, candidates=got.candidates, k=req.k, filters=filters
                )
                ranked = await self._call(
                    "ranker", "rank", lambda: self.ranker.rank.remote(rank), self.budgets.ranking_ms, deadline
                )
                timings["rank"] = 1000 * (time.perf_counter() - started)
            if ranked is None:
                degraded.append("ranker")
                ranked = self._unranked(req, got, filters)
        ranked = [s for s in ranked if s.product_id not in exclude][: req.k]
        return ranked, cold, {"timings": timings, "history": history, "degraded": degraded}

    def _popular(self, req: RecommendationRequest, history: np.ndarray, filters: RankFilters) -> list:
        from serve.recommend import Scored, allowed_filter

        allowed = allowed_filter(self.catalog, self.rules, req.user_id, history, filters.model_dump())
        out = []
        for pid in self.catalog.popular:
            p = self.catalog.products[pid]
            if not allowed(p):
                continue
            out.append(Scored(pid, -float(len(out)), [{"type": "popular", "category": p.category}]))
            if len(out) == req.k:
                break
        return out

    def _unranked(self, req: RecommendationRequest, got, filters: RankFilters) -> list:
        """The retriever's candidates in its order (the recommender's own score), under the
        ranker's rules and filters, topped up with popular items: personalized, not ranked."""
        from serve.recommend import Scored, allowed_filter

        allowed = allowed_filter(self.catalog, self.rules, req.user_id, got.history, filters.model_dump())
        out = []
        for idx, score in zip(got.candidates.item_ids.tolist(), got.candidates.scores.tolist(), strict=False):
            pid = self.catalog.by_item_idx.get(int(idx))
            if pid is None or not allowed(self.catalog.products[pid]):
                continue
            out.append(Scored(pid, float(score), [{"type": "recommended"}]))
            if len(out) == req.k:
                return out
        taken = {s.product_id for s in out}
        for s in self._popular(req, got.history, filters):
            if len(out) == req.k:
                break
            if s.product_id not in taken:
                out.append(Scored(s.product_id, -1.0 - len(out) * 1e-4, s.evidence))
        return out

    def _reason_input(self, scored, history: np.ndarray) -> tuple[dict[str, Any] | None, str]:
        """The generator's input for one item's reason and the cache key segment of that reason:
        `ml.reasons` decides both from the item's evidence alone (the batch job's precomputed
        reasons, `<content>/reasons/*.parquet` column `key`, use the same functions). None =
        nothing for the generator to explain (no evidence, or "popular"): the template says it."""
        return reason_profile(scored.evidence), reason_key(scored.evidence)

    def _facts(self, product) -> tuple[dict, str]:
        """(facts, facts hash) of a catalog product, computed once per replica (the catalog does
        not change under a running replica; a new catalog is a new replica)."""
        from serve.catalog import facts_hash, facts_of

        got = self._facts_memo.get(product.product_id)
        if got is None:
            got = (facts_of(product, self.catalog.currency), facts_hash(product, self.catalog.currency))
            if len(self._facts_memo) < 1_000_000:
                self._facts_memo[product.product_id] = got
        return got

    def _enqueue(self, key, job, timeout_ms: int, urgent: bool = False) -> tuple[asyncio.Future | None, bool]:
        """Queue generation for a cache miss: (its future or None, whether the generator was lost:
        down, or its queue full). Urgent: a page's sections and note, ahead of reasons."""
        if not self._usable("generator"):
            return None, True
        future = self.queue.submit(key, job, timeout_ms / 1000, urgent=urgent)
        return future, future is None

    def _reason_job(self, key, facts: dict, profile: dict):
        async def run() -> str | None:
            result = await awaited(self.generator.reason.remote(facts, profile))
            text = result.get("text")
            if text:
                self.cache.put(key, text)
            else:  # the copy gate rejected it (`ml.reasons.accept_reason`): counted by why
                self.m_fallback.labels("generate_reason", result.get("why") or "ungrounded").inc()
            return text

        return run

    def _page_job(self, key, facts: dict, profile: dict | None = None):
        async def run() -> dict | None:
            # a segment's page: its profile goes to the prompt; segment "all" sends the trained prompt
            call = self.generator.page.remote(facts, profile) if profile else self.generator.page.remote(facts)
            result = await awaited(call)
            sections = result.get("sections")
            if sections:
                self.cache.put(key, sections)
            else:
                self.m_fallback.labels("generate_page", result.get("why", "ungrounded")).inc()
            return sections

        return run

    async def _ready(self, futures: list[asyncio.Future], until: float) -> None:
        """Wait until `until` (monotonic) at most for the futures, all at once; never cancels them
        (their results fill the cache whoever waits)."""
        pending = [f for f in futures if not f.done()]
        if pending and until > time.monotonic():
            await asyncio.wait(pending, timeout=until - time.monotonic())

    async def _reasons(
        self, items: list, history: np.ndarray, until: float, urgent: bool = False, user: str | None = None
    ) -> tuple[list[tuple[str, str]], str, bool]:
        """Reasons from the cache, else template now with generation queued (`urgent`: ahead of
        other reasons, for a page's note); waits until `until` (monotonic) at most for queued
        ones. Returns the reasons, their overall source and whether the generator was lost (down
        or shedding)."""
        from serve.content import CacheKey
        from serve.recommend import template_reason

        results: list[tuple[str, str] | None] = [None] * len(items)
        queued: list[tuple[int, asyncio.Future]] = []
        lost = False
        for i, s in enumerate(items):
            product = self.catalog.products[s.product_id]
            profile, segment = self._reason_input(s, history)
            facts, fhash = self._facts(product)
            key = CacheKey(s.product_id, "reason", segment, self.model_version, fhash)
            if profile is not None:  # built from this user's history: purged when they are erased
                self._remember(user, [key])
            writes = self._writes(facts)
            cached = self.cache.get(key) if writes else None
            if cached:
                results[i] = (cached, "cached")
            elif (
                profile is not None
                and writes
                and self._generates()
                and len(queued) < self.gen_cfg.max_reasons_per_request
                and not lost
            ):
                future, lost = self._enqueue(
                    key,
                    self._reason_job(key, facts, profile),
                    self.budgets.reasons_ms,
                    urgent,
                )
                if future is not None:
                    queued.append((i, future))
        if queued:
            await self._ready([f for _, f in queued], until)
            for i, future in queued:
                if future.done() and future.result():
                    results[i] = (future.result(), "generated")
                    self.m_tokens.inc(len(future.result()))
        final = [
            r or (template_reason(self.catalog.products[s.product_id], s.evidence), "template")
            for r, s in zip(results, items)
        ]
        for _, source in final:
            self.m_content.labels("reason", source).inc()
        return final, _overall([src for _, src in final]), lost

    def _generic(self, target: PageTarget) -> dict | None:
        """The cached page of segment "all" in the segment's order, for a segment whose own page
        is not cached yet (a precomputed page, or one made for an anonymous shopper); else None."""
        from dataclasses import replace

        from ml.segments import ALL, segment_highlights

        if target.key.segment == ALL:
            return None
        generic = self.cache.peek(replace(target.key, segment=ALL))
        if generic is None:
            return None
        return {**generic, "highlights": segment_highlights(generic["highlights"], target.facts, target.cares)}

    async def _sections(self, target: PageTarget, until: float) -> tuple[dict, str, bool, str]:
        """Page sections for the target's segment from the cache, else template (or the cached
        page of segment "all", in the segment's order) now with the segment's generation queued
        (waits until `until` at most). Returns (sections, source, generator lost, the segment the
        sections were written for)."""
        from ml.segments import ALL
        from serve.content import template_page

        facts, key = target.facts, target.key
        if not self._writes(facts):
            return template_page(facts, target.cares), "template", False, key.segment
        sections = self.cache.get(key)
        if sections is not None:
            return sections, "cached", False, key.segment
        lost = False
        if self._generates():
            future, lost = self._enqueue(
                key, self._page_job(key, facts, target.profile), self.budgets.page_ms, urgent=True
            )
            if future is not None:
                await self._ready([future], until)
                if future.done() and future.result():
                    return future.result(), "generated", False, key.segment
        if (generic := self._generic(target)) is not None:
            return generic, "cached", lost, ALL
        return template_page(facts, target.cares), "template", lost, key.segment

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
        """Top-k items for a user (or an anonymous session's recent items), with evidence and a reason each.

        Reasons are cached or template copy at once, with generation queued for misses; `wait_ms`
        (0 to serve.budgets.max_wait_ms) lets the response wait that long for them. `degraded`
        names any stage the answer had to do without; `cold_start` only means no usable history."""
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
        wait_ms = _wait_param(req.wait_ms, self.budgets.max_wait_ms)
        echo = req.user_id  # the client's own id goes back in the body, never into a log or cache
        req = req.model_copy(update={"user_id": self._user(req.user_id)})
        self._started()
        await self._sync()
        ranked, cold, info = await self._recommend(req, deadline)
        degraded = list(info["degraded"])
        if req.with_reasons:
            until = min(time.monotonic() + wait_ms / 1000, deadline)
            reasons, source, lost = await self._reasons(ranked, info["history"], until, user=req.user_id)
            degraded += ["generator"] if lost else []
        else:
            reasons, source = [None] * len(ranked), "none"
        timings = {**info["timings"], "total": 1000 * (time.perf_counter() - started)}
        self.m_latency.labels("recommendations_total").observe(timings["total"] / 1000)
        response = RecommendationResponse(
            request_id=uuid.uuid4().hex,
            user_id=echo,
            cold_start=cold,
            degraded=degraded,
            items=[self._item(s, r) for s, r in zip(ranked, reasons)],
            content_source=source,
            model_version=self.model_version,
            timings_ms={k: round(v, 2) for k, v in timings.items()},
        )
        self._record_served(
            response.request_id, response.items, echo if req.user_id else None, "recommendations", degraded
        )
        return response

    def _page_request(self, product_id: str, user_id: str | None, accept_language: str | None = None) -> PageTarget:
        """Validate a page route's parameters: the user's pseudonym (None: anonymous or erased),
        the product, its facts and facts hash, the shopper's segment and the page's cache key.

        Bad input raises ApiError before any work: 422 for over-long ids or a malformed
        Accept-Language, 404 for an unknown product.
        """
        from serve.content import CacheKey

        user_id = self._user(self._user_param(user_id))  # the pseudonym from here on
        self._check_ids([product_id], "product_id")
        product = self.catalog.products.get(product_id)
        if product is None:
            raise ApiError(404, f"unknown product {product_id!r}", "not_found_error", "product_id")
        if self.live is not None and product_id in self.live.deleted:
            raise ApiError(410, f"product {product_id!r} was deleted", "not_found_error", "product_id")
        facts, fhash = self._facts(product)
        segment = self._segment(user_id, accept_language)
        key = CacheKey(product_id, "page", segment.id, self.model_version, fhash)
        if not segment.is_all:  # made for this shopper's segment: purged when they are erased
            self._remember(user_id, [key])
        profile = self.segments.profile(segment, facts)
        return PageTarget(
            user_id, product, facts, fhash, key, segment, profile, self.segments.cares_about(segment, facts)
        )

    def _segment(self, user_id: str | None, accept_language: str | None):
        """The shopper's segment from the history this replica holds for them (the prepared
        shards): "all" for anonymous, new and erased shoppers. 422 for a malformed Accept-Language."""
        history = self.catalog.user_history.get(user_id) if user_id else None
        products = (
            [
                self.catalog.products[self.catalog.by_item_idx[int(i)]]
                for i in history
                if int(i) in self.catalog.by_item_idx
            ]
            if history is not None
            else []
        )
        try:
            return self.segments.segment_of(products, accept_language)
        except ValueError as e:
            raise ApiError(422, str(e), param="accept-language") from None

    async def _page(
        self, product_id: str, user_id: str | None, wait_ms: str | int | None = None, accept_language: str | None = None
    ):
        """The page: sections (for the shopper's segment), the personalized note and 'you may also
        like' with reasons. Cached or template copy at once (generation queued for misses); a
        client's `wait_ms` is one budget for all three, waited at the same time."""
        await self._sync()
        raw_user = user_id
        target = self._page_request(product_id, user_id, accept_language)
        user_id, product, fhash = target.user_id, target.product, target.fhash
        wait_s = _wait_param(wait_ms, self.budgets.max_wait_ms) / 1000
        self._started()
        started = time.perf_counter()
        deadline = time.monotonic() + self.budgets.request_deadline_ms / 1000
        until = min(time.monotonic() + wait_s, deadline)
        also_req = RecommendationRequest(user_id=user_id, recent_items=[product_id], k=6, with_reasons=True)
        sections_task = asyncio.create_task(self._sections(target, until))
        note_task = asyncio.create_task(self._note(product_id, user_id, until)) if user_id else None
        try:
            ranked, _, info = await self._recommend(also_req, deadline, exclude={product_id})
            reasons, _, reasons_lost = await self._reasons(ranked, info["history"], until, user=user_id)
            sections, source, page_lost, sections_segment = await sections_task
            note, note_source, note_lost = await note_task if note_task else (None, "none", False)
        finally:
            for task in (sections_task, note_task):
                if task is not None and not task.done():
                    task.cancel()
        self.m_content.labels("page", source).inc()
        degraded = list(info["degraded"]) + (["generator"] if reasons_lost or page_lost or note_lost else [])
        timings = {**info["timings"], "total": 1000 * (time.perf_counter() - started)}
        page = ProductPage(
            request_id=uuid.uuid4().hex,
            product_id=product_id,
            price=product.price,
            in_stock=product.in_stock,
            sections=PageSections(**sections),
            sections_source=source,
            segment=target.segment.id,
            sections_segment=sections_segment,
            personalized_note=note,
            note_source=note_source,
            also_like=[self._item(s, r) for s, r in zip(ranked, reasons)],
            degraded=degraded,
            facts_hash=fhash,
            model_version=self.model_version,
            timings_ms={k: round(v, 2) for k, v in timings.items()},
            reviews=self.review_summaries.get(product_id),
        )
        self._record_served(page.request_id, page.also_like, raw_user if user_id else None, "page", degraded)
        return page, product

    @api.get(
        "/v1/products/{product_id}/page",
        response_model=ProductPage,
        responses={404: {"model": ErrorBody}, 410: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    async def product_page(
        self,
        product_id: ProductIdPath,
        user_id: UserIdQuery = None,
        wait_ms: WaitQuery = None,
        accept_language: AcceptLanguageHeader = None,
    ) -> ProductPage:
        """Product-page sections (title, highlights, description), a personalized note and 'you may also like'.

        Answers at once with cached, else template copy (`*_source` says which) and queues generation
        for what was missing; `wait_ms` (0 to serve.budgets.max_wait_ms) lets it wait that long for
        the generations, all at once. `degraded` names any stage the answer had to do without.
        The sections are written for the shopper's `segment` (`all` when anonymous or new)."""
        page, _ = await self._page(product_id, user_id, wait_ms, accept_language)
        return page

    async def _note(self, product_id: str, user_id: str, until: float) -> tuple[str | None, str, bool]:
        """The page's personalized note (same evidence, cache key and grounding as the reasons):
        (note, source, generator lost)."""
        history = _history_of(self.catalog, user_id, product_id)
        (note,), _, lost = await self._reasons(
            [_self_scored(product_id, history, self.catalog)], history, until, urgent=True, user=user_id
        )
        return (note[0], note[1], lost) if note[0] else (None, "none", lost)

    async def _drain_late_stream(self, key, nxt: asyncio.Future, events, stream, stop_at: float) -> None:
        """A stream past the request's budget keeps generating until `stop_at` (the page budget from
        its start): cache its page for the next request, as a queued page job would. Past `stop_at`
        no one can use it: it is cancelled (the generator's vLLM request aborted)."""
        final = None
        try:
            while True:
                done, _ = await asyncio.wait([nxt], timeout=max(0.0, stop_at - time.monotonic()))
                if not done:
                    nxt.cancel()
                    with contextlib.suppress(Exception):
                        stream.cancel()
                    self.m_fallback.labels("stream_page_late", "timeout").inc()
                    return
                event = nxt.result()
                if "section" not in event:
                    final = event
                nxt = asyncio.ensure_future(events.__anext__())
        except StopAsyncIteration:
            pass
        except Exception as e:
            self.m_fallback.labels("stream_page_late", type(e).__name__).inc()
        if final and final.get("sections"):
            self.cache.put(key, final["sections"])

    async def _stream_sections(self, target: PageTarget, deadline: float, out: dict):
        """Grounded section pieces from the generator within min(page budget, deadline); the final
        sections, their source, the segment they were written for and the fallback reason (None,
        "budget", "ungrounded", an error name, "down" when the generator's breaker is open) are
        left in `out`. Past the request's deadline the generation is left to finish within the
        page budget and be cached. Without the segment's own page, the fallback is the cached page
        of segment "all" in the segment's order, else the segment's template."""
        from ml.segments import ALL
        from serve.content import template_page

        facts, key, profile = target.facts, target.key, target.profile
        writes = self._writes(facts)
        sections, source, why = self.cache.get(key) if writes else None, "cached", None if writes else "language"
        if not writes:
            pass  # template copy in the product's language, below
        elif sections is None and self._generates() and not self._usable("generator"):
            why = "down"  # skipped at once, not after its budget
        elif sections is None and self._generates():
            stop_at = time.monotonic() + self.budgets.page_ms / 1000
            budget_end = min(stop_at, deadline)
            started = time.perf_counter()
            streamer = self.generator.options(stream=True).stream_page
            stream = streamer.remote(facts, profile) if profile else streamer.remote(facts)
            events, nxt, final, settled = stream.__aiter__(), None, None, False
            try:
                while True:
                    nxt = asyncio.ensure_future(events.__anext__())
                    done, _ = await asyncio.wait([nxt], timeout=max(0.0, budget_end - time.monotonic()))
                    if not done:
                        why, settled = "budget", True
                        task = asyncio.create_task(self._drain_late_stream(key, nxt, events, stream, stop_at))
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                        break
                    try:
                        event = nxt.result()
                    except StopAsyncIteration:
                        settled = True
                        break
                    self.breakers["generator"].success()
                    if "section" in event:
                        piece = event["section"]
                        self.m_tokens.inc(len(piece["text"]))
                        if piece["field"] == "highlights":  # as the final sections show it (PageSections)
                            piece = {**piece, "text": tidy_highlight(piece["text"])}
                        yield piece
                    else:
                        final = event
            except Exception as e:  # the generator is down or failed: template copy, not an error
                why = self._generator_failed(e)
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
        written_for = key.segment
        if sections is None and writes and (generic := self._generic(target)) is not None:
            sections, source, written_for = generic, "cached", ALL
        if sections is None:
            sections, source = template_page(facts, target.cares), "template"
        out.update(sections=sections, source=source, fallback=why, segment=written_for)

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
    async def product_page_stream(
        self,
        product_id: ProductIdPath,
        user_id: UserIdQuery = None,
        wait_ms: WaitQuery = None,
        accept_language: AcceptLanguageHeader = None,
    ) -> StreamingResponse:
        """Server-sent events: grounded section text as each sentence completes, then the final sections
        (generated, cached or template, as on the page), the personalized note, and `done`.

        The sections stream as they are generated (within serve.budgets.page_ms); the note waits
        `wait_ms` at most (default 0: cached or template), at the same time as the sections."""
        await self._sync()
        target = self._page_request(product_id, user_id, accept_language)
        user_id, fhash = target.user_id, target.fhash
        wait_s = _wait_param(wait_ms, self.budgets.max_wait_ms) / 1000
        self._started()
        started = time.perf_counter()
        deadline = time.monotonic() + self.budgets.request_deadline_ms / 1000
        request_id = uuid.uuid4().hex

        async def events():
            until = min(time.monotonic() + wait_s, deadline)
            note_task = asyncio.create_task(self._note(product_id, user_id, until)) if user_id else None
            try:
                yield _sse(
                    "start",
                    {
                        "request_id": request_id,
                        "product_id": product_id,
                        "facts_hash": fhash,
                        "model_version": self.model_version,
                        "segment": target.segment.id,
                    },
                )
                summary = self.review_summaries.get(product_id)
                if summary is not None:  # precomputed (train sentiment): what reviewers say, at once
                    yield _sse("reviews", {"reviews": ReviewSummary(**summary).model_dump()})
                final: dict[str, Any] = {}
                async with contextlib.aclosing(self._stream_sections(target, deadline, final)) as pieces:
                    async for piece in pieces:  # aclosing: a client that goes away stops the generation
                        yield _sse("section", piece)
                self.m_content.labels("page", final["source"]).inc()
                sections = PageSections(**final["sections"]).model_dump()
                yield _sse(
                    "sections",
                    {
                        "sections": sections,
                        "sections_source": final["source"],
                        "sections_segment": final["segment"],
                        "fallback": final["fallback"],
                    },
                )
                if note_task is not None:
                    note, note_source, _ = await note_task
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

    @api.get(
        "/shop/products/{product_id}",
        response_class=HTMLResponse,
        responses={
            404: {"content": {"text/html": {}}, "description": "Unknown product: an HTML error page."},
            422: {
                "content": {
                    "text/html": {},
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
                },
                "description": "A bad parameter: an HTML error page, or a JSON error body for one over its length bound.",
            },
        },
    )
    async def shop_page(
        self,
        product_id: ProductIdPath,
        user_id: UserIdQuery = None,
        debug: Annotated[str | None, Query(max_length=8, description="1 shows where each text came from.")] = None,
        shopgraph_user: Annotated[str | None, Cookie(max_length=3 * MAX_ID_CHARS)] = None,  # percent-encoded
        accept_language: AcceptLanguageHeader = None,
    ) -> HTMLResponse:
        """The demo product page: generated sections, the personalized note, recommendations with reasons.

        `?user_id=` signs the shopper in (empty: signs out); it is kept in a cookie, not in the page
        or its links. `?debug=1` shows where each text came from, the model and the facts hash."""
        from serve.page import error_page, render_page

        try:
            show_debug = _flag(debug, "debug")
            user = self._user_param(user_id if user_id is not None else unquote(shopgraph_user or "") or None)
            page, product = await self._page(product_id, user, accept_language=accept_language)
        except ApiError as e:
            return HTMLResponse(error_page(e.status, e.message), status_code=e.status)
        response = HTMLResponse(render_page(page, product, self.catalog.currency, debug=show_debug))
        if user_id is not None:  # the shopper chose: remember it for the links, or forget it
            if user:
                # percent-encoded: a header is Latin-1, and an id may be any text ("顾客42")
                response.set_cookie(_USER_COOKIE, quote(user, safe=""), httponly=True, samesite="lax")
            else:
                response.delete_cookie(_USER_COOKIE)
        return response

    def _admin_user(self, user_id: str) -> tuple[dict[str, str], str]:
        """The path's user id of the admin routes -> (kid -> pseudonym, current pseudonym); 422 when blank or too long."""
        if not user_id.strip():
            raise ApiError(422, "user_id is empty; put the user's id in the path", param="user_id")
        limit = min(self.limits.max_text_chars, MAX_ID_CHARS)
        if len(user_id) > limit:
            raise ApiError(422, f"user_id is {len(user_id)} characters long; the limit is {limit}", param="user_id")
        keys = self._user_keys_of(user_id)
        return keys, next(iter(keys.values()))

    def _history_products(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """(product ids of the history, purchased product ids) this replica holds for the user."""
        history: list[str] = []
        purchased: set[str] = set()
        for k in keys:
            items = self.catalog.user_history.get(k)
            if items is not None:
                history += [self.catalog.by_item_idx[int(i)] for i in items if int(i) in self.catalog.by_item_idx]
            purchased |= self.catalog.user_purchases.get(k, set())
        return history, sorted(purchased)

    @api.delete(
        "/v1/users/{user_id}",
        responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
        dependencies=[Depends(require_scope("users:erase"))],
    )
    async def erase_user(self, user_id: UserIdPath) -> dict:
        """Erase a user (needs scope `users:erase`): record a tombstone (pseudonyms only), drop their
        history from this replica, purge the cached copy their history produced, and erase their
        rows from the online store. Later answers treat the id as a new, anonymous user; later
        `data prepare`, split and corpus runs leave their rows out."""
        keys, current = self._admin_user(user_id)
        new = await asyncio.to_thread(self.tombstones.add, keys)
        held = list(keys.values())
        history, purchases = self._history_products(held)
        purged = 0
        for k in held:
            self.catalog.user_history.pop(k, None)
            self.catalog.user_purchases.pop(k, None)
            for key in self._user_keys.pop(k, set()):
                purged += self.cache.pop(key)
            if self.cache.shared is not None:  # made through other replicas
                try:
                    purged += await asyncio.to_thread(self.cache.purge_owner, k)
                except Exception as e:
                    log.warning("erasure could not purge the shared content cache: %s", type(e).__name__)
                    raise ApiError(
                        503,
                        "the shared content cache is unavailable; the erasure is recorded but its cached copy is "
                        "not purged yet: retry",
                        "server_error",
                    ) from None
        store = await self.user_store.erase(held)
        return {
            "erased": True,
            "user_key": current,
            "kids": list(keys),
            "new_tombstones": new,
            "purged": {"history_items": len(history), "purchases": len(purchases), "cache_entries": purged},
            "store": store,
        }

    @api.get(
        "/v1/users/{user_id}/export",
        responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
        dependencies=[Depends(require_scope("users:erase"))],
    )
    async def export_user(self, user_id: UserIdPath) -> dict:
        """What shopgraph holds about a user (needs scope `users:erase`): their pseudonym, the product
        ids of their history and purchases (from the prepared shards this replica loaded), the cached
        copy made from their history, the tombstone if they were erased, and the online store's rows."""
        keys, current = self._admin_user(user_id)
        held = list(keys.values())
        history, purchases = self._history_products(held)
        cached = []
        for k in held:
            for key in sorted(self._user_keys.get(k, set()), key=lambda c: (c.product_id, c.segment)):
                text = self.cache.peek(key)
                if text is not None:
                    cached.append({"product_id": key.product_id, "kind": key.content_type, "text": text})
        tombstone = await asyncio.to_thread(self.tombstones.status, held)
        return {
            "user_id": user_id,  # the client's own id, echoed in the body only
            "user_key": current,
            "history_product_ids": history,
            "purchased_product_ids": purchases,
            "cached_copy": cached,
            "tombstone": tombstone,
            "store": await self.user_store.export(held),
        }

    # -- the write API (events and catalog changes into the online database)

    @api.post(
        "/v1/events",
        response_model=EventsResponse,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    async def post_events(self, req: EventsRequest, authorization: AuthHeader = None) -> EventsResponse:
        """Store a batch of events (scope `events:write`) in one transaction: all or none.

        An idempotency key already stored (a retry) is acknowledged as a duplicate, not stored
        again. An event for a product that neither the catalog nor the database knows is stored
        and flagged `unknown_product` (it may be about a product the catalog has not received
        yet): kept for later, never fed to live answers. A ts further in the future than
        online.max_clock_skew_ms is a 422 naming the event (`events.<i>.ts`)."""
        from core.store import now_ms
        from core.values import RowError, as_timestamp_ms

        live = self._online()
        self._authorize(authorization, "events:write")
        if len(req.events) > live.cfg.max_batch_events:
            raise ApiError(
                413,
                f"the batch has {len(req.events)} events; the limit is {live.cfg.max_batch_events} (online.max_batch_events): split it",
                param="events",
            )
        await self._sync()
        received = now_ms()
        latest = received + live.cfg.max_clock_skew_ms
        rows, seen, duplicates, flagged = [], set(), [], []
        unknown = {e.product_id for e in req.events if e.product_id not in self.catalog.products}
        if unknown:  # written on another replica since this one's last poll?
            unknown -= await self._db(live.store.existing_products, sorted(unknown))
        for i, e in enumerate(req.events):
            self._check_ids([e.user_id, e.product_id], f"events.{i}.user_id/product_id")
            if e.ts is None:
                ts = received
            else:
                try:
                    ts = as_timestamp_ms(e.ts, "auto" if isinstance(e.ts, int) else "iso")
                except RowError as err:
                    raise ApiError(422, f"events.{i}.ts: {err}", param=f"events.{i}.ts") from None
                if ts > latest:
                    raise ApiError(
                        422,
                        f"events.{i}.ts is {ts - received} ms in the future; the limit is {live.cfg.max_clock_skew_ms} "
                        "(online.max_clock_skew_ms): send the time the event happened",
                        param=f"events.{i}.ts",
                    )
            if e.idempotency_key in seen:
                duplicates.append(i)
                continue
            seen.add(e.idempotency_key)
            known = e.product_id not in unknown
            if not known:
                flagged.append(i)
            rows.append(
                {
                    "event": e.event,
                    "user_key": self._event_user(e.user_id),  # the pseudonym: no raw id reaches the database
                    "product_id": e.product_id,
                    "ts": ts,
                    "value": e.value if e.event == "rating" else None,
                    "request_id": e.request_id,
                    "idempotency_key": e.idempotency_key,
                    "received_at": received,
                    "flagged_reason": None if known else "unknown_product",
                    "_i": i,
                }
            )
        stored = await self._db(live.store.add_events, [{k: v for k, v in r.items() if k != "_i"} for r in rows])
        duplicates += [r["_i"] for r in rows if r["idempotency_key"] not in stored]
        flagged = [r["_i"] for r in rows if r["flagged_reason"] and r["idempotency_key"] in stored]
        self.m_events.labels("stored").inc(len(stored))
        self.m_events.labels("duplicate").inc(len(duplicates))
        self.m_events.labels("flagged").inc(len(flagged))
        return EventsResponse(
            received=len(req.events),
            stored=len(stored),
            duplicates=len(duplicates),
            flagged=len(flagged),
            duplicate_indices=sorted(duplicates),
            flagged_indices=flagged,
        )

    @api.get(
        "/v1/products/{product_id}",
        response_model=ProductOut,
        responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 410: {"model": ErrorBody}},
    )
    async def get_product(self, product_id: ProductIdPath, authorization: AuthHeader = None) -> ProductOut:
        """A product's stored facts: as last written through this API (`source: database`), else as
        the catalog shards have them (`source: catalog`). Deleted: 410."""
        live = self._online()
        if not live.cfg.public_reads:
            self._authorize(authorization, None)
        product_id = self._product_id(product_id)
        row = await self._db(live.store.get_product, product_id)
        if row is not None and row["deleted_at"] is not None:
            raise ApiError(410, f"product {product_id!r} was deleted", "not_found_error", "product_id")
        if row is None and product_id not in self.catalog.products:
            raise ApiError(404, f"unknown product {product_id!r}", "not_found_error", "product_id")
        return self._product_out(row, product_id)

    @api.put(
        "/v1/products/{product_id}",
        response_model=ProductOut,
        responses={s: {"model": ErrorBody} for s in (400, 401, 403, 413, 422, 503)},
    )
    async def put_product(
        self, product_id: ProductIdPath, body: ProductIn, authorization: AuthHeader = None
    ) -> ProductOut:
        """Create or replace a product (scope `catalog:write`); a deleted one comes back. Each field is
        validated as `data prepare` validates a source row: a bad one is a 422 naming it. Its page
        (template copy) is served at once; reaching it by text waits for the refresh's embedding."""
        from core.values import RowError, as_attributes, product_row

        live = self._online()
        self._authorize(authorization, "catalog:write")
        product_id = self._product_id(product_id)
        raw = body.model_dump()
        try:
            attributes = as_attributes(raw["attributes"])
        except RowError as e:
            raise ApiError(422, f"attributes: {e}", param="attributes") from None
        try:
            facts = product_row(lambda c: attributes if c == "attributes" else raw.get(c), product_id=product_id)
        except RowError as e:
            raise ApiError(422, f"{e.column}: {e}", param=e.column) from None
        facts["stock"] = body.stock
        if facts["in_stock"] is None and body.stock is not None:
            facts["in_stock"] = body.stock > 0
        row = await self._db(live.store.put_product, facts)
        live.apply(row, self.catalog, self._forget)
        return self._product_out(row, product_id)

    @api.patch(
        "/v1/products/{product_id}",
        response_model=ProductOut,
        responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 410, 413, 422, 503)},
    )
    async def patch_product(
        self, product_id: ProductIdPath, body: ProductPatch, authorization: AuthHeader = None
    ) -> ProductOut:
        """Change stock, price or in_stock (scope `catalog:write`), validated as ingest validates them;
        at least one. Out of stock (in_stock false, or stock 0) leaves every answer within
        online.poll_ms on every replica."""
        from core.values import RowError, as_bool, as_price

        live = self._online()
        self._authorize(authorization, "catalog:write")
        product_id = self._product_id(product_id)
        given = body.model_fields_set
        if not given:
            raise ApiError(422, "nothing to change: send any of stock, price, in_stock", param=None)
        changes = {}
        for name, convert in (("price", as_price), ("in_stock", lambda v: as_bool(v, "in_stock"))):
            if name in given:
                try:
                    changes[name] = convert(getattr(body, name))
                except RowError as e:
                    raise ApiError(422, f"{name}: {e}", param=name) from None
        if "stock" in given:
            changes["stock"] = body.stock
            if "in_stock" not in given and body.stock is not None:
                changes["in_stock"] = body.stock > 0
        row = await self._db(live.store.patch_product, product_id, changes, self._catalog_facts(product_id))
        if row is None:
            raise ApiError(404, f"unknown product {product_id!r}", "not_found_error", "product_id")
        if row["deleted_at"] is not None:
            raise ApiError(
                410, f"product {product_id!r} was deleted; PUT it to bring it back", "not_found_error", "product_id"
            )
        live.apply(row, self.catalog, self._forget)
        return self._product_out(row, product_id)

    @api.delete(
        "/v1/products/{product_id}",
        responses={s: {"model": ErrorBody} for s in (401, 403, 404, 503)},
    )
    async def delete_product(self, product_id: ProductIdPath, authorization: AuthHeader = None) -> dict:
        """Soft-delete a product (scope `catalog:write`): gone from every answer within
        online.poll_ms, its page 410; the row stays (with `deleted_at`) for the refresh. Deleting
        a deleted product answers the same (idempotent)."""
        live = self._online()
        self._authorize(authorization, "catalog:write")
        product_id = self._product_id(product_id)
        await self._db(live.store.delete_product, product_id, self._catalog_facts(product_id))
        row = await self._db(live.store.get_product, product_id)
        if row is None:
            raise ApiError(404, f"unknown product {product_id!r}", "not_found_error", "product_id")
        live.apply(row, self.catalog, self._forget)
        return {"product_id": product_id, "deleted": True, "deleted_at": row["deleted_at"]}

    # -- product Q&A, OpenAI-compatible (ml.qa decides what answers; the generator may word it)

    def _chat_input(self, req: ChatCompletionRequest) -> tuple[str, Any]:
        """(the question, the product) of a chat request; bad input is a 4xx naming the field."""
        if req.model not in (QA_MODEL, QA_TEMPLATE_MODEL):
            raise ApiError(404, f"the model {req.model[:64]!r} does not exist; use {QA_MODEL} or "
                           f"{QA_TEMPLATE_MODEL} (GET /v1/models)", "not_found_error", "model")  # fmt: skip
        last = req.messages[-1]
        if last.role != "user":
            raise ApiError(422, f"the last message is from {last.role!r}; end with the shopper's question "
                           "(role 'user')", param=f"messages.{len(req.messages) - 1}.role")  # fmt: skip
        question = last.text().strip()
        if not question:
            raise ApiError(
                422, "the question (the last user message) is empty", param=f"messages.{len(req.messages) - 1}.content"
            )
        if len(question) > self.limits.max_text_chars:
            raise ApiError(422, f"the question is {len(question)} characters long; the limit is "
                           f"{self.limits.max_text_chars}", param=f"messages.{len(req.messages) - 1}.content")  # fmt: skip
        product_id = (req.metadata or {}).get("product_id")
        param = "metadata.product_id"
        if product_id is None:
            for m in req.messages:
                found = _PRODUCT_IN_SYSTEM.search(m.text()) if m.role in ("system", "developer") else None
                if found:
                    product_id, param = found.group(1), "messages"
        if not product_id or not product_id.strip():
            raise ApiError(422, "which product? send metadata.product_id, or a system message "
                           "'product_id: <id>'", param="metadata.product_id")  # fmt: skip
        self._check_ids([product_id], param)
        product = self.catalog.products.get(product_id)
        if product is None:
            raise ApiError(404, f"unknown product {product_id!r}", "not_found_error", param)
        if self.live is not None and product_id in self.live.deleted:
            raise ApiError(410, f"product {product_id!r} was deleted", "not_found_error", param)
        return question, product

    async def _answer_pieces(self, req: ChatCompletionRequest, question: str, plan, deadline: float, out: dict):
        """The answer's text, piece by piece: generated sentences that passed grounding (within
        min(serve.budgets.reasons_ms, the deadline)), else the template answer, else the
        abstention. `out` gets the source (generated | template | abstain) and the fallback."""
        source, why = "abstain", None
        if plan.kind != "abstain":
            source = "template"
            if req.model == QA_TEMPLATE_MODEL:
                why = "requested"
            elif not self._generates():
                why = "disabled"
            elif not self._usable("generator"):
                why = "down"
            else:
                sent = 0
                stop_at = min(time.monotonic() + self.budgets.reasons_ms / 1000, deadline)
                started = time.perf_counter()
                stream = self.generator.options(stream=True).stream_answer.remote(question, plan, req.answer_tokens())
                events, nxt, settled = stream.__aiter__(), None, False
                try:
                    while True:
                        nxt = asyncio.ensure_future(events.__anext__())
                        done, _ = await asyncio.wait([nxt], timeout=max(0.0, stop_at - time.monotonic()))
                        if not done:
                            why = "budget"
                            break
                        try:
                            event = nxt.result()
                        except StopAsyncIteration:
                            settled = True
                            break
                        self.breakers["generator"].success()
                        if "text" in event:
                            sent += 1
                            source = "generated"
                            self.m_tokens.inc(len(event["text"]))
                            yield event["text"]
                        elif event.get("why"):
                            why = event["why"]
                except Exception as e:  # down, failed or overloaded: the template answers
                    why = self._generator_failed(e)
                finally:
                    if not settled:  # past the budget, failed, or the client went away: stop generating
                        if nxt is not None and not nxt.done():
                            nxt.cancel()
                        with contextlib.suppress(Exception):
                            stream.cancel()
                    self.m_latency.labels("generate_answer").observe(time.perf_counter() - started)
                if why:
                    self.m_fallback.labels("generate_answer", why).inc()
                if sent:
                    out.update(source=source, fallback=why)
                    return
        out.update(source=source, fallback=why)
        yield plan.text

    def _qa_meta(self, product_id: str, plan, out: dict) -> dict:
        return {"source": out["source"], "fallback": out["fallback"], "product_id": product_id,
                "language": plan.language, "citations": plan.citations, "matched_by": plan.matched_by,
                "model_version": self.model_version if out["source"] == "generated" else None}  # fmt: skip

    @api.post(
        "/v1/chat/completions",
        responses={s: {"model": ErrorBody} for s in (400, 401, 404, 410, 413, 422)}
        | {
            200: {
                "content": {"text/event-stream": {}},
                "description": "A chat.completion, or chunks when stream is true.",
            }
        },
    )
    async def chat_completions(self, req: ChatCompletionRequest, authorization: AuthHeader = None):
        """Answer a shopper's question about one product, OpenAI-style (the `openai` client works).

        The product: `metadata.product_id`, or a system message naming it (`product_id: P1`).
        The answer states only the product's facts and review summaries that the question asks
        about, checked by the pages' grounding checker, and cites them (`shopgraph.citations`);
        when neither answers it: "That information is not listed for this product." (Chinese
        for a Chinese question). `shopgraph.source`: `generated` (the generator's grounded
        sentences), `template` (the facts themselves: model shopgraph-qa-template, or the
        generator slow, down, off or ungrounded, `fallback` says which) or `abstain`."""
        from ml.qa import plan_answer

        self._started()
        await self._sync()
        if self.live is not None and not self.live.cfg.public_reads:
            self._authorize(authorization, None)
        question, product = self._chat_input(req)
        facts, _ = self._facts(product)
        deadline = time.monotonic() + self.budgets.request_deadline_ms / 1000
        summary = self.review_summaries.get(product.product_id)
        plan = await asyncio.to_thread(plan_answer, question, facts, summary, self.qa_matcher)
        completion_id, created, stops = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), req.stops()
        out: dict[str, Any] = {}
        if not req.stream:
            text, stopped = "", False
            async with contextlib.aclosing(self._answer_pieces(req, question, plan, deadline, out)) as pieces:
                async for piece in pieces:
                    piece, stopped = _stop_at(text, piece, stops)
                    text += piece
                    if stopped:
                        break
            out.setdefault("source", "template" if plan.kind != "abstain" else "abstain")
            out.setdefault("fallback", None)
            self.m_content.labels("answer", out["source"]).inc()
            return {
                "id": completion_id, "object": "chat.completion", "created": created, "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text.strip()}, "finish_reason": "stop"}],
                "shopgraph": self._qa_meta(product.product_id, plan, out),
            }  # fmt: skip

        async def chunks():
            text = ""
            try:
                yield _chunk(completion_id, created, req.model, {"role": "assistant", "content": ""})
                async with contextlib.aclosing(self._answer_pieces(req, question, plan, deadline, out)) as pieces:
                    async for piece in pieces:  # aclosing: a client that goes away stops the generation
                        piece, stopped = _stop_at(text, piece, stops)
                        piece = piece if text else piece.lstrip()
                        text += piece
                        if piece:
                            yield _chunk(completion_id, created, req.model, {"content": piece})
                        if stopped:
                            break
                out.setdefault("source", "template" if plan.kind != "abstain" else "abstain")
                out.setdefault("fallback", None)
                self.m_content.labels("answer", out["source"]).inc()
                meta = self._qa_meta(product.product_id, plan, out)
                yield _chunk(completion_id, created, req.model, {}, "stop", shopgraph=meta)
            except Exception as e:  # a bug (a slow or failed generator falls back above); the status was 200 already
                log.exception("answer stream failed")
                self.m_fallback.labels("answer_stream", type(e).__name__).inc()
                detail = ErrorDetail(
                    message=f"internal error ({type(e).__name__}); the stream stopped", type="server_error", code=500
                )
                yield f"data: {json.dumps(ErrorBody(error=detail).model_dump())}\n\n"
            yield "data: [DONE]\n\n"

        no_buffering = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(chunks(), media_type="text/event-stream", headers=no_buffering)

    @api.get("/v1/models")
    async def list_models(self) -> dict:
        """What answers `POST /v1/chat/completions`, OpenAI-style: `shopgraph-qa` (the generator's
        grounded answers where it serves, the template otherwise; `shopgraph.generator` names the
        generator model and version) and `shopgraph-qa-template` (the facts-only answerer)."""
        generator = {"model": self.generator_name, "version": self.model_version, "enabled": self._generates()}
        return {
            "object": "list",
            "data": [
                {"id": QA_MODEL, "object": "model", "created": self.created, "owned_by": "shopgraph",
                 "shopgraph": {"answers": "generated, else template" if self._generates() else "template", "generator": generator}},
                {"id": QA_TEMPLATE_MODEL, "object": "model", "created": self.created, "owned_by": "shopgraph",
                 "shopgraph": {"answers": "template"}},
            ],
        }  # fmt: skip

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress replica answers."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness from the stages' last health probes (taken every serve.health.probe_interval_ms in
        the background, so this answers at once): each stage `ok`, `busy` or `down`. 503 when the
        retriever or the ranker is down (recommendations would not be personalized); a generator
        that is down is reported but not required (cached or template copy is served)."""
        self._started()
        if self.monitor.rounds == 0:  # only before the first probe round: at most one probe timeout
            await self.monitor.first_round()
        stages = self.monitor.snapshot()
        for name, info in stages.items():
            self.m_stage.labels(name).set({"ok": 1.0, "busy": 0.5}.get(info["state"], 0.0))
        lost = [name for name in ("retriever", "ranker") if stages[name]["state"] == "down"]
        status: dict[str, Any] = {
            "ready": not lost,
            "recommendations": "ok" if not lost else f"degraded: {' and '.join(lost)} down",
            "generator": stages["generator"]["state"] if "generator" in stages else "disabled",
            "stages": stages,
            "queue": self.queue.stats(),
            "transport": self.transport,
            "catalog_products": len(self.catalog.products),
            "cache_entries": len(self.cache),
            "shared_cache": (
                "off" if self.cache.shared is None else "skipped" if self.cache.shared.skipping() else "ok"
            ),
            "precomputed": self.precomputed,
            "reloads": self.reloader.status() if self.reloader is not None else {},
        }
        return JSONResponse(status, status_code=200 if not lost else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> PlainTextResponse:
        """Prometheus metrics of this ingress replica: stage latency, content sources, fallbacks, the served
        log, and the online evaluation gauges (shopgraph_online_*, recomputed in the background, not here)."""
        from prometheus_client import generate_latest

        # imported here: a module global would travel with the class Serve pickles by value
        from serve.metrics import GC_PAUSES

        self._refresh_gauges()
        GC_PAUSES.flush()  # the pauses since the last flush, so a scrape sees them all
        return PlainTextResponse(generate_latest(self.registry).decode(), media_type="text/plain; version=0.0.4")

    def _refresh_gauges(self) -> None:
        """The gauges read from state (queue, served log, cache, stage health): at each /metrics
        scrape, and every probe interval for Ray's endpoint (`_export_gauges`)."""
        self.m_queue.labels("waiting").set(len(self.queue))
        self.m_queue.labels("running").set(self.queue.running)
        self.m_served_queue.set(len(self.served) if self.served is not None else 0)
        c = self.cache
        for what, value in (("entries", len(c)), ("hits", c.hits), ("misses", c.misses), ("shared_hits", c.shared_hits),
                            ("shared_errors", c.shared.errors if c.shared is not None else 0)):  # fmt: skip
            self.m_cache.labels(what).set(value)
        for name, h in self.monitor.health.items():
            self.m_stage.labels(name).set({"ok": 1.0, "busy": 0.5}.get(h.state, 0.0))
