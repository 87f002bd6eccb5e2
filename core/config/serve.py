"""Typed config of the serving section (`serve:` in the YAML). Unknown keys are rejected.

Resources and autoscaling of every deployment come from here, in one place, and are logged
once, merged, when the application is built (STYLE habit 3).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config.k8s import GROUP_SHARE, group_resource

# HAProxy 2.8's `retry-on` vocabulary (https://docs.haproxy.org/2.8/configuration.html#4-retry-on).
HAPROXY_RETRY_ON = (
    "none",
    "conn-failure",
    "empty-response",
    "junk-response",
    "response-timeout",
    "0rtt-rejected",
    "all-retryable-errors",
)
HAPROXY_RETRY_STATUSES = ("401", "403", "404", "408", "425", "500", "501", "502", "503", "504")


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address the Serve HTTP proxy binds; 0.0.0.0 inside a cluster.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the Serve HTTP proxy.")
    proxy: Literal["haproxy", "ray"] = Field(
        "haproxy",
        description=(
            "What answers HTTP: 'haproxy' runs Ray Serve's throughput-optimized mode (HAProxy in front of the ingress "
            "replicas, which serve HTTP themselves; user code on the replica's event loop; gRPC between deployments), "
            "about half the CPU per request of 'ray', Ray Serve's Python proxy actor. Read by Ray when it starts: "
            "shopgraph sets it for the Ray instances it starts and for the KubeRay pods it renders."
        ),
    )
    proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        "HeadOnly",
        description=(
            "Where Serve runs its HTTP proxies: 'HeadOnly' on one machine (the nodes of `shopgraph cluster up "
            "--workers` share one host, and so one port); 'EveryNode' on a cluster of machines (the RayService)."
        ),
    )
    retry_on: str = Field(
        "conn-failure empty-response",
        description=(
            "HAProxy's `retry-on` (proxy 'haproxy'): which failed requests it replays on another ingress replica. "
            "Serve's default, 'conn-failure', replays only a request that never reached a replica; "
            "'empty-response' also replays one whose replica died before answering (a node lost, a replica "
            "restarted), which keeps a worker-node kill under 0.1% failed requests (bench/failures.py). "
            "Safe here because the API's writes are idempotent: events carry idempotency keys, products are "
            "PUT/PATCH/DELETE by id, erasure is idempotent. Space-separated HAProxy keywords or HTTP status codes."
        ),
    )

    drain_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description=(
            "Seconds a stopping replica keeps taking new requests on its own port (proxy 'haproxy': "
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S), so that whatever routes to it has stopped "
            "first. On one machine that is Serve's own HAProxy, which reloads in under a second: Ray's "
            "30 s default only made every scale-down, redeploy and `serve shutdown` wait 30 s. Clusters "
            "whose load balancers reach replicas directly keep 30 (configs/gpu-cluster.yaml)."
        ),
    )

    @field_validator("retry_on")
    @classmethod
    def _retry_on_keywords(cls, value: str) -> str:
        tokens = value.split()
        unknown = [t for t in tokens if t not in HAPROXY_RETRY_ON and t not in HAPROXY_RETRY_STATUSES]
        if not tokens or unknown:
            raise ValueError(
                f"unknown HAProxy retry-on keyword(s) {unknown or [value]}: use some of "
                f"{', '.join(HAPROXY_RETRY_ON)} or the status codes {', '.join(HAPROXY_RETRY_STATUSES)}"
            )
        if "none" in tokens and len(tokens) > 1:
            raise ValueError("retry-on 'none' cannot be combined with other keywords")
        return " ".join(tokens)

    def ray_env(self) -> dict[str, str]:
        """Environment variables Ray Serve reads when its processes start, for this choice of proxy."""
        # Proxies start slowly on a busy 2-CPU box; Ray's 5 s ready check then kills and restarts them.
        env = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"}
        if self.proxy == "haproxy":
            env |= {
                "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_ENABLE_HA_PROXY": "1",
                "RAY_SERVE_HAPROXY_RETRY_ON": self.retry_on,
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{self.drain_s:g}",
            }
        return env


class DeploymentSettings(BaseModel):
    """Replicas, resources and autoscaling of one Serve deployment."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(
        0.1, ge=0, description="CPUs each replica reserves; fractional on a 2-CPU node so the whole graph schedules."
    )
    num_gpus: float = Field(0, ge=0, description="GPUs each replica reserves (the generator on GPU nodes).")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound.")
    target_ongoing_requests: float = Field(8, gt=0, description="Ongoing requests per replica the autoscaler aims for.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests a replica accepts at once before the router queues them."
    )
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description=(
            "Requests that may wait for a busy replica (at each caller: the proxy, HAProxy's ingress replica, or "
            "the calling deployment's handle) before new ones are refused at once instead of queued: the ingress "
            "answers HTTP 503 with Retry-After, a retriever or ranker that refuses is skipped (the answer is "
            "degraded, not an error). -1 = unbounded (Serve's default): overload then shows as latency, not refusals."
        ),
    )
    retry_after_s: float = Field(
        1.0,
        ge=0,
        description="Retry-After (seconds) of the HTTP 503 a refused request gets (only the ingress answers HTTP).",
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, description="Seconds the load must stay above target before Serve adds replicas (Serve's default)."
    )
    downscale_delay_s: float = Field(
        600.0,
        ge=0,
        description="Seconds the load must stay below target before Serve removes replicas (Serve's default: 10 min).",
    )
    node_group: Literal["cpu", "gpu", "any"] = Field(
        "any",
        description=(
            "Node group the replicas run on: 'cpu' or 'gpu' (the KubeRay worker groups and the worker nodes of "
            "`shopgraph cluster up --workers/--gpu-workers`; a replica asks for a share of the group's custom "
            "resource `group_<name>`), 'any' for whichever node has room (a single-node Ray instance has no group)."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> DeploymentSettings:
        if self.max_queued_requests == 0:
            raise ValueError("max_queued_requests must be -1 (unbounded) or at least 1 (0 would refuse every request)")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas}); raise max_replicas"
            )
        return self

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)`."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.node_group != "any":
            actor["resources"] = {group_resource(self.node_group): GROUP_SHARE}
        return {
            "ray_actor_options": actor,
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            },
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
        }


class DeploymentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ingress: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(
            num_cpus=0.1, max_replicas=1, max_ongoing_requests=256, max_queued_requests=128
        ),
        description="HTTP ingress (FastAPI).",
    )
    retriever: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(num_cpus=0.2, max_replicas=1, max_queued_requests=16),
        description="FAISS retrieval and cold start.",
    )
    ranker: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(num_cpus=0.2, max_replicas=1, max_queued_requests=16),
        description="Ranker and business rules.",
    )
    generator: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(
            num_cpus=1.0, max_replicas=1, target_ongoing_requests=16, max_ongoing_requests=64
        ),
        description="vLLM generator (reasons and product-page copy).",
    )


class BudgetsConfig(BaseModel):
    """Latency budgets; the ingress turns them into a deadline passed down the graph."""

    model_config = ConfigDict(extra="forbid")

    request_deadline_ms: int = Field(
        60_000, ge=50, description="Whole-request deadline; stages get what is left of it."
    )
    retrieval_ms: int = Field(300, ge=1, description="Budget of the retriever call.")
    ranking_ms: int = Field(300, ge=1, description="Budget of the ranker call.")
    reasons_ms: int = Field(
        4_000,
        ge=1,
        description="Longest one reason generation may run (in the background queue, or while a client waits); past it the generation is cancelled (the vLLM request aborted). Responses never wait for it unless the client asks (`wait_ms`).",
    )
    page_ms: int = Field(
        30_000,
        ge=1,
        description="Longest one product-page generation may run, queued or streamed, before it is cancelled (a CPU writes ~12 tokens/s, a page is up to ~380 tokens); the page stream's budget.",
    )
    max_wait_ms: int = Field(
        2_000,
        ge=0,
        description="Most a client may ask a response to wait for generation (`wait_ms` of a request); 0 forbids waiting. Without `wait_ms` nothing waits: cached copy, else template, while generation runs in the background.",
    )


class QueueConfig(BaseModel):
    """The background generation queue of each ingress replica (serve.resilience.GenerationQueue)."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(
        64,
        ge=0,
        description="Jobs that may wait; when full, new work is shed at once (template copy, counted), never queued behind a backlog.",
    )
    max_age_ms: int = Field(
        4_000,
        ge=1,
        description="A job still waiting after this is dropped without running: the requests that wanted it were answered long ago. With `serve.budgets.reasons_ms` it bounds how long a burst's backlog takes to drain.",
    )
    workers: int = Field(
        8,
        ge=1,
        description="Jobs run at once per ingress replica; vLLM batches them. Well under the generator's max_ongoing_requests, so health probes are never queued behind generations.",
    )


class HealthConfig(BaseModel):
    """Health probes and circuit breakers of the stages (retriever, ranker, generator)."""

    model_config = ConfigDict(extra="forbid")

    probe_interval_ms: int = Field(1_000, ge=50, description="Each ingress replica probes every stage this often.")
    probe_timeout_ms: int = Field(
        500, ge=10, description="A probe not answered within this counts as a timeout (busy once, down when repeated)."
    )
    busy_ms: int = Field(250, ge=1, description="A probe answered slower than this reports the stage busy.")
    down_after_timeouts: int = Field(
        2, ge=1, description="Consecutive probe timeouts that mark a stage down (a failed probe marks it down at once)."
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failed or timed-out calls that open a stage's circuit breaker."
    )
    breaker_cooldown_ms: int = Field(
        2_000,
        ge=0,
        description="An open breaker skips its stage for this long, then lets one trial call through; a probe that answers closes it sooner.",
    )


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Request bodies above this get 413.")
    max_text_chars: int = Field(512, ge=16, description="Longest accepted id or free-text field; longer gets 422.")
    max_recent_items: int = Field(
        200, ge=1, le=1000, description="Most `recent_items` a request may carry (the API schema's bound is 1000)."
    )


class RateLimitConfig(BaseModel):
    """Token buckets in each ingress replica (so a deployment's limit is these rates times its
    ingress replicas). A request's identity is its API key (sha256 of the bearer token) when it
    sends an `Authorization` header, else its client address; over the limit -> 429 with
    `Retry-After`. Health, readiness and metrics routes are never limited."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Limit request rates; off by default (the demo and the load benchmarks send hundreds of requests per second from one address).",
    )
    per_address_rps: float = Field(50.0, gt=0, description="Sustained requests per second per client address.")
    per_address_burst: int = Field(100, ge=1, description="Requests a client address may send at once (bucket size).")
    per_key_rps: float = Field(200.0, gt=0, description="Sustained requests per second per API key.")
    per_key_burst: int = Field(400, ge=1, description="Requests an API key may send at once (bucket size).")
    forwarded_for_header: str | None = Field(
        None,
        description="Header a trusted proxy in front sets to the client address (e.g. x-forwarded-for; its last entry is used); None: the connection's address.",
    )
    max_clients: int = Field(
        100_000, ge=100, description="Buckets kept per replica; the least recently seen client's is dropped first."
    )


class SecurityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_limit: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="Per-client-address and per-API-key request rate limits."
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose browser scripts may call the API (CORS); empty: CORS off, no Access-Control-Allow-Origin header is ever sent.",
    )


class RankingRulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exclude_purchased: bool = Field(True, description="Never recommend what the user already bought.")
    exclude_seen: bool = Field(
        False,
        description="Also drop every item the user interacted with (views included); off by default: returning to a viewed item is common and the ranker learns when.",
    )
    in_stock_only: bool = Field(True, description="Only in-stock items (a request filter can relax it).")
    max_per_category: float = Field(
        0.4, gt=0, le=1, description="Diversity: at most this share of the k results from one category."
    )
    new_item_min_similarity: float = Field(
        0.6,
        ge=-1,
        le=1,
        description="Text similarity a new (untrained) item needs to enter the results through the text index.",
    )


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the vLLM generator; False serves cached or template copy only.")
    reason_max_tokens: int = Field(48, ge=8, description="Token budget of one personalized reason.")
    page_max_tokens: int = Field(
        384,
        ge=32,
        description="Token budget of the product-page sections; the longest answer the PDP schema allows is ~380 tokens, and a page cut off by the limit is invalid JSON.",
    )
    repetition_penalty: float = Field(
        1.1, ge=1.0, le=2.0, description="vLLM repetition penalty; small models repeat phrases without one."
    )
    max_reasons_per_request: int = Field(
        4, ge=0, description="Reasons per response queued for generation on a cache miss; the rest use templates."
    )
    precomputed_content: bool = Field(
        True,
        description="Load the batch job's precomputed content (product pages, reasons) into the cache at start-up.",
    )
    languages: list[Literal["en", "zh"]] = Field(
        default_factory=lambda: ["en"],
        description="Languages the configured generator writes usable copy in; a product in another language (core.facts.facts_language: its text's share of Chinese) is never sent to it and gets template copy in its own language, labelled template. The embedded SmolLM2-135M writes no usable Chinese (bench/advertisegen.py): en only; add zh for a generator that does.",
    )
    cache_entries: int = Field(50_000, ge=0, description="Content cache size (LRU).")
    queue: QueueConfig = Field(
        default_factory=QueueConfig, description="The background queue generation for cache misses runs through."
    )


class SegmentsConfig(BaseModel):
    """Shopper segments (`ml.segments`): product pages are written and cached per segment."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Segment known shoppers; False serves every shopper the one page of segment 'all'."
    )
    dimensions: list[Literal["category", "brand", "price", "language"]] = Field(
        default_factory=lambda: ["category", "brand", "price", "language"],
        description="What a segment is made of; fewer dimensions mean fewer segments and more cache hits.",
    )
    top_categories: int = Field(
        6, ge=1, le=100, description="Top-level categories (most products first) named in a segment; the rest 'other'."
    )
    top_brands: int = Field(
        8, ge=1, le=100, description="Brands (most products first) named in a segment; the rest 'other'."
    )
    min_share: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Share of a shopper's history a category or brand needs to be their affinity; below it 'any'.",
    )
    languages: list[str] = Field(
        default_factory=lambda: ["en", "zh"],
        min_length=1,
        description="Languages a segment may name (Accept-Language, else the script of the history's titles); the first is the default.",
    )

    @field_validator("languages")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not re.fullmatch(r"[a-z]{2,3}", t)]
        if bad:
            raise ValueError(f"languages has {bad}; use two- or three-letter lower-case language codes such as 'en'")
        return v


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = Field(
        None,
        description="Redis the ingress replicas share generated copy through (redis://host:6379/0, without a password; see password_env); a page generated through one replica is then a hit through every other. None: each replica's in-process LRU only. On KubeRay, the same Redis as GCS fault tolerance.",
    )
    password_env: str | None = Field(
        None,
        description="Environment variable holding the Redis password; None = no password. On KubeRay the rendered pods get it from cluster.k8s.gcs_ft.password_secret (the same Redis).",
    )
    ttl_s: int = Field(
        86_400, ge=1, description="How long a shared entry lives (stale facts are never asked for again)."
    )
    timeout_ms: int = Field(
        50, ge=1, le=5_000, description="Connect and read timeout of one Redis call; a request never waits longer."
    )
    retry_after_s: float = Field(
        5.0,
        ge=0.1,
        le=3_600,
        description="After a Redis failure, skip the shared cache this long (answers still come).",
    )
    key_prefix: str = Field(
        "shopgraph",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every key shopgraph writes in Redis (several shops may share one Redis).",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        u = urlsplit(v)
        if u.scheme not in ("redis", "rediss", "unix") or not (u.hostname or u.path):
            raise ValueError(
                f"serve.cache.redis_url must be redis://host:port/db, rediss://… or unix://path, got {v!r}"
            )
        if u.password:
            raise ValueError("serve.cache.redis_url must not hold a password; name its variable in password_env")
        return v


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    http: HttpConfig = Field(default_factory=HttpConfig, description="Serve HTTP proxy address.")
    handle_transport: Literal["grpc", "actor"] = Field(
        "grpc",
        description=(
            "How the ingress calls the retriever, ranker and generator: `grpc` (Serve's inter-deployment gRPC, what "
            "throughput-optimized Serve uses; at 100 req/s on 2 CPUs p99 269 ms against 1,082 ms for actor calls, "
            "bench/serve_load.py) or `actor` (Ray actor calls through the object store). Set on the handles "
            "themselves, so it holds however the app was started (CLI, a script, KubeRay)."
        ),
    )
    app_name: str = Field("shopgraph", description="Serve application name.")
    route_prefix: str = Field("/", description="Route prefix of the application.")
    deployments: DeploymentsConfig = Field(
        default_factory=DeploymentsConfig, description="Replicas, resources and autoscaling per deployment."
    )
    budgets: BudgetsConfig = Field(
        default_factory=BudgetsConfig, description="Latency budgets and the request deadline."
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Input limits of the HTTP API.")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="Rate limits and CORS of the HTTP API."
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Health probes and circuit breakers of the stages."
    )
    rules: RankingRulesConfig = Field(
        default_factory=RankingRulesConfig, description="Business rules applied after ranking."
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="What the generator writes and how much."
    )
    segments: SegmentsConfig = Field(
        default_factory=SegmentsConfig, description="Shopper segments that product pages are written and cached for."
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig, description="The content cache shared by the ingress replicas (Redis)."
    )
    reload_poll_ms: int = Field(
        1000,
        ge=50,
        le=600_000,
        description="How often each replica checks the committed index, embeddings and content directories (one stat of each manifest) and, when a refresh committed new ones, loads and swaps them in without a restart.",
    )
