"""Request and response models of the HTTP API (versioned under /v1), OpenAI-style errors.

Requests validate themselves (types, ranges, lengths) so that bad input becomes a clear 4xx
before any deployment is called. Their fields are strict where a client could send the wrong JSON
type: `k: true`, `k: "5"` or `with_reasons: "no"` are 422s, not silently converted; responses say where their text came from
(`content_source`), so a client can tell generated copy from cached or template copy.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

ContentSource = Literal["generated", "cached", "template", "mixed", "none"]
Stage = Literal["retriever", "ranker", "generator"]
DEGRADED_DOC = (
    "Stages this answer had to do without, skipped because they were down or given up past their budget: "
    "`retriever` (popular items instead of personalized ones), `ranker` (the retriever's candidates in its own "
    "order), `generator` (down, or its queue full: template copy where nothing was cached). Empty when nothing "
    "was lost; a reason that is template copy only because its generation is still queued is not degraded."
)
MAX_WAIT_MS = 60_000  # the schema's bound; serve.budgets.max_wait_ms is the deployment's (lower) cap
MAX_ID_CHARS = 512  # also enforced by serve.limits.max_text_chars, the stricter of the two wins
MAX_RECENT_ITEMS = 1000  # the schema's bound; serve.limits.max_recent_items is the deployment's (lower) cap


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        strict=True,
        description="Only items whose category path starts with this (e.g. 'Toys > Puzzles').",
    )
    brand: str | None = Field(None, max_length=MAX_ID_CHARS, strict=True, description="Only this brand.")
    min_price: float | None = Field(None, ge=0, strict=True, description="Lowest price (a JSON number, not negative).")
    max_price: float | None = Field(
        None, ge=0, strict=True, description="Highest price (a JSON number, not negative, not below min_price)."
    )
    in_stock_only: bool | None = Field(
        None, strict=True, description="Override serve.rules.in_stock_only for this request."
    )

    @model_validator(mode="after")
    def _price_range(self) -> Filters:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            # Raised as a ValidationError so that it names the field (filters.min_price), which a
            # ValueError from a model validator would not.
            error = PydanticCustomError(
                "price_range",
                "min_price {min_price} is above max_price {max_price}; lower min_price or raise max_price",
                {"min_price": self.min_price, "max_price": self.max_price},
            )
            raise ValidationError.from_exception_data(
                "Filters", [InitErrorDetails(type=error, loc=("min_price",), input=self.min_price)]
            )
        return self


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # What the 422 for a missing or non-object body says the body must be (serve.http).
    body_hint: ClassVar[str] = 'with "user_id" or "recent_items" (or both), e.g. {"user_id": "u42", "k": 10}'

    user_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        strict=True,
        description="Known or unknown user; unknown users get a cold-start answer.",
    )
    recent_items: list[Annotated[str, Field(max_length=MAX_ID_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_RECENT_ITEMS,
        strict=True,
        description="Product ids the shopper just looked at, oldest first (anonymous sessions).",
    )
    k: int = Field(10, ge=1, le=100, strict=True, description="Number of items to return (a JSON integer).")
    with_reasons: bool = Field(
        True, strict=True, description="Attach a one-sentence reason to each item (a JSON boolean)."
    )
    filters: Filters = Field(default_factory=Filters, description="Restrict the results.")
    wait_ms: int = Field(
        0,
        ge=0,
        le=MAX_WAIT_MS,
        strict=True,
        description="Milliseconds the response may wait for reasons being generated (0 to serve.budgets.max_wait_ms). "
        "0: answer at once with cached or template reasons while generation runs in the background.",
    )

    @model_validator(mode="after")
    def _who(self) -> RecommendationRequest:
        if self.user_id is None and not self.recent_items:
            raise PydanticCustomError(
                "missing_who", "the request body must be a JSON object {hint}", {"hint": self.body_hint}
            )
        return self


class Evidence(BaseModel):
    type: str = Field(
        description="because_you_interacted | same_brand | favourite_category | popular | similar_new_item | similar_item | recommended (the recommender's pick, unranked: the ranker was unavailable)"
    )
    detail: dict[str, Any] = Field(
        default_factory=dict, description="The catalog facts behind it (product ids, titles, category, brand)."
    )


class RecommendedItem(BaseModel):
    product_id: str
    title: str
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    score: float = Field(description="Ranker score (higher is better); only comparable within one response.")
    evidence: list[Evidence] = Field(default_factory=list)
    reason: str | None = Field(
        None, description="One sentence for the shopper, grounded in the evidence and the product facts."
    )
    reason_source: ContentSource = "none"


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str | None
    cold_start: bool = Field(
        description="True when the user had no usable history (never because a stage was lost: see `degraded`)."
    )
    degraded: list[Stage] = Field(default_factory=list, description=DEGRADED_DOC)
    items: list[RecommendedItem]
    content_source: ContentSource
    model_version: str
    timings_ms: dict[str, float]


class PageSections(BaseModel):
    title: str
    highlights: list[str] = Field(
        description="'Key: value' facts with the key capitalised ('Brand: Brewly', 'Color: green'), or short sentences."
    )
    description: str

    @field_validator("highlights")
    @classmethod
    def _one_style(cls, highlights: list[str]) -> list[str]:
        # Template copy writes 'Brand: X' and the catalog's keys as 'color: Y'; a model writes
        # either. One style whatever the source (a presentation change: grounding is unaffected).
        from serve.content import tidy_highlight

        return [tidy_highlight(h) for h in highlights]


class AspectSummary(BaseModel):
    aspect: str = Field(..., description="What the reviews talk about: battery, fit, size, material, delivery, ...")
    mentions: int = Field(..., description="Reviews that name the aspect.")
    positive: int = Field(..., description="Of those, the reviews whose clauses on it read positive.")
    sentence: str = Field(
        ..., description="'fit: 9 of 12 reviews positive' ('版型：12条评价中9条好评'): the counts, as a sentence."
    )
    quote: str | None = Field(
        None, description="A clause copied verbatim from one of the reviews, on the majority's side."
    )


class ReviewSummary(BaseModel):
    reviews: int = Field(..., description="Reviews with text the summary was made from.")
    aspects: list[AspectSummary] = Field(default_factory=list, description="Most-named aspects first.")
    note: str | None = Field(None, description="Why there is no summary (too few reviews, no aspect named).")
    language: str = Field("en", description="The summary's language, the reviews' (en, or zh for Chinese reviews).")


class ProductPage(BaseModel):
    request_id: str
    product_id: str
    price: float | None
    in_stock: bool | None
    sections: PageSections
    sections_source: ContentSource
    segment: str = Field(
        "all",
        description="The shopper's segment (ml.segments), e.g. `cat:Electronics|brand:Voltix|price:low|lang:en`; `all` for anonymous or new shoppers.",
    )
    sections_segment: str = Field(
        "all",
        description="The segment the sections were written for: `segment`, or `all` while the segment's own page is not cached yet.",
    )
    personalized_note: str | None
    note_source: ContentSource
    also_like: list[RecommendedItem]
    degraded: list[Stage] = Field(default_factory=list, description=DEGRADED_DOC)
    facts_hash: str
    model_version: str
    timings_ms: dict[str, float]
    reviews: ReviewSummary | None = Field(
        None, description="What reviewers say per aspect (`shopgraph train sentiment`); None when none was built."
    )


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorBody(BaseModel):
    """OpenAI-style error body: {"error": {"message", "type", "param", "code"}}."""

    error: ErrorDetail


# ----------------------------------------------------------------------------- the write API

EventType = Literal["impression", "view", "click", "cart", "purchase", "rating"]  # core.store.ONLINE_EVENT_TYPES
MAX_BATCH_EVENTS = 10_000  # the schema's bound; online.max_batch_events is the deployment's (lower) cap: 413 above
MAX_KEY_CHARS = 128


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: EventType = Field(..., description="impression | view | click | cart | purchase | rating.")
    user_id: str = Field(
        ..., min_length=1, max_length=MAX_ID_CHARS, strict=True, description="The shop's user id (opaque)."
    )
    product_id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS, strict=True, description="The product.")
    ts: int | Annotated[str, Field(max_length=64)] | None = Field(
        None,
        description="When it happened: milliseconds since the epoch (a JSON integer) or ISO 8601 text; "
        "default: when it was received. More than online.max_clock_skew_ms in the future: 422.",
    )
    value: float | None = Field(None, strict=True, description="The rating (required for `rating`, ignored otherwise).")
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        strict=True,
        description="The request_id of the recommendation or page response that showed the product (impressions, clicks).",
    )
    idempotency_key: str = Field(
        ...,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        strict=True,
        description="Unique per event, chosen by the client: a retried event with a stored key is acknowledged as a duplicate, not stored twice.",
    )

    @field_validator("ts", mode="before")
    @classmethod
    def _ts_type(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
            raise PydanticCustomError(
                "ts_type",
                "ts must be a JSON integer (ms since the epoch) or ISO 8601 text, not {kind}",
                {"kind": type(value).__name__},
            )
        return value

    @model_validator(mode="after")
    def _rating_value(self) -> EventIn:
        if self.event == "rating" and self.value is None:
            raise PydanticCustomError("rating_value", "a rating event needs a numeric value", {})
        return self


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body_hint: ClassVar[str] = (
        'with "events": a list of events, e.g. {"events": [{"event": "view", "user_id": "u42", '
        '"product_id": "p1", "idempotency_key": "u42-p1-1"}]}'
    )

    events: list[EventIn] = Field(
        ...,
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description="1 to online.max_batch_events events, stored in one transaction: all or none.",
    )


class EventsResponse(BaseModel):
    received: int = Field(description="Events in the batch.")
    stored: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events whose idempotency key was already stored (or repeated in the batch).")
    flagged: int = Field(description="Stored events flagged `unknown_product` (kept, not used for live answers).")
    duplicate_indices: list[int] = Field(default_factory=list, description="Positions of the duplicates in `events`.")
    flagged_indices: list[int] = Field(default_factory=list, description="Positions of the flagged events.")


class ProductIn(BaseModel):
    """A product's facts for PUT: each field is validated as `data prepare` validates a source row
    (core.values.product_row), so the same input is kept or refused the same way."""

    model_config = ConfigDict(extra="forbid")
    body_hint: ClassVar[str] = 'with at least "title", e.g. {"title": "Brewly T80 Mug", "price": 12.5}'

    title: Any = Field(None, description="Required text.")
    category: Any = Field(None, description="A path 'a > b > c' or a list of levels.")
    brand: Any = Field(None, description="Text.")
    price: Any = Field(None, description="A non-negative number (or text such as '$12.50', as ingest reads it).")
    attributes: Any = Field(None, description="An object of text values (or lists of text).")
    description: Any = Field(None, description="Human-written text.")
    in_stock: Any = Field(None, description="true/false (as ingest reads it). Default: stock > 0 when stock is given.")
    stock: int | None = Field(None, ge=0, strict=True, description="Units in stock (a JSON integer, not negative).")


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body_hint: ClassVar[str] = 'with any of "stock", "price", "in_stock", e.g. {"stock": 0}'

    stock: int | None = Field(
        None, ge=0, strict=True, description="Units in stock; 0 also sets in_stock false unless in_stock is given."
    )
    price: Any = Field(None, description="A non-negative number (validated as ingest validates prices).")
    in_stock: Any = Field(None, description="true/false.")


class ProductOut(BaseModel):
    product_id: str
    title: str
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    in_stock: bool | None = None
    stock: int | None = None
    updated_at: int | None = Field(
        None, description="Last write, ms since the epoch (None: never written through the API)."
    )
    deleted_at: int | None = Field(None, description="Soft-deletion time, ms since the epoch.")
    source: Literal["database", "catalog"] = Field(
        description="`database`: written through this API; `catalog`: as the last `data prepare` read it."
    )


# ----------------------------------------------------------------------------- OpenAI-compatible Q&A

MAX_ANSWER_TOKENS = 1024  # an answer is a sentence or two; a client asking more is told the limit
MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 8_000
QA_MODEL = "shopgraph-qa"  # generated answers where the generator serves, template answers otherwise
QA_TEMPLATE_MODEL = "shopgraph-qa-template"  # the facts-only answerer, never the generator
QA_MODELS = (QA_MODEL, QA_TEMPLATE_MODEL)


class TextPart(BaseModel):
    """One part of a message's content array: only text parts (no images, audio or files)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(..., description='Only "text" parts are read.')
    text: str = Field(..., max_length=MAX_MESSAGE_CHARS, strict=True, description="The text.")


MAX_TEXT_PARTS = 16  # text parts in one message (OpenAI's content-part form)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"] = Field(
        ..., description="Who wrote it; the last message must be the shopper's (`user`) question."
    )
    content: (
        Annotated[str, Field(max_length=MAX_MESSAGE_CHARS, strict=True)]
        | Annotated[list[TextPart], Field(min_length=1, max_length=MAX_TEXT_PARTS)]
    ) = Field(..., description="The text, or an array of text parts (OpenAI's content-part form).")
    name: str | None = Field(None, max_length=64, strict=True, description="Ignored (OpenAI's participant name).")

    @field_validator("content", mode="before")
    @classmethod
    def _content_shape(cls, v):
        # one clear message instead of the union's two ("not a string; not a list")
        if isinstance(v, str):
            return v
        if not isinstance(v, list):
            raise ValueError(
                f'must be a string or an array of text parts [{{"type": "text", "text": "..."}}], not {type(v).__name__}'
            )
        for i, part in enumerate(v):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"part {i} is {kind!r}; only text parts are read (no images, audio or files)")
        return v

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions request, with the parameters a product answer uses.

    The product is `metadata.product_id`, or named in a system message (`product_id: <id>`)."""

    model_config = ConfigDict(extra="forbid")
    body_hint: ClassVar[str] = (
        'with "model" and "messages", e.g. {"model": "shopgraph-qa", "messages": [{"role": "user", '
        '"content": "What colour is it?"}], "metadata": {"product_id": "P00001"}}'
    )

    model: str = Field(
        ..., min_length=1, max_length=128, strict=True, description=f"One of {', '.join(QA_MODELS)} (GET /v1/models)."
    )
    messages: list[ChatMessage] = Field(
        ..., min_length=1, max_length=MAX_MESSAGES, description="The conversation; the last is the question."
    )
    stream: bool = Field(
        False, strict=True, description="Server-sent `chat.completion.chunk` events ending with `data: [DONE]`."
    )
    max_tokens: int | None = Field(
        None, ge=1, le=MAX_ANSWER_TOKENS, strict=True, description="Most tokens the generator may write."
    )
    max_completion_tokens: int | None = Field(
        None, ge=1, le=MAX_ANSWER_TOKENS, strict=True, description="Same as max_tokens (OpenAI's newer name)."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Accepted; answers are decoded greedily (grounded answers are reproducible)."
    )
    top_p: float | None = Field(None, gt=0, le=1, description="Accepted; decoding is greedy.")
    n: int | None = Field(None, ge=1, le=1, strict=True, description="One answer per request.")
    stop: (
        Annotated[str, Field(min_length=1, max_length=64)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=4)]
        | None
    ) = Field(None, description="Up to 4 strings; the answer ends before the first one it contains.")
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=MAX_ID_CHARS)]] | None = Field(
        None, description="`product_id`: the product asked about."
    )
    user: str | None = Field(None, max_length=MAX_ID_CHARS, strict=True, description="Ignored (OpenAI's end-user id).")
    stream_options: dict[str, bool] | None = Field(None, description="Accepted (`include_usage` is not reported).")
    seed: int | None = Field(None, description="Accepted; decoding is greedy.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, v):  # before the schema's bound (maxItems 4), for the clearer message
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"stop has {len(v)} strings; send at most 4")
        return v

    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
