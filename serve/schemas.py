"""Request and response models of the HTTP API (versioned under /v1), OpenAI-style errors.

Requests validate themselves (types, ranges, lengths) so that bad input becomes a clear 4xx
before any deployment is called; responses say where their text came from
(`content_source`), so a client can tell generated copy from cached or template copy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ContentSource = Literal["generated", "cached", "template", "mixed", "none"]
MAX_ID_CHARS = 512  # also enforced by serve.limits.max_text_chars, the stricter of the two wins


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(None, max_length=MAX_ID_CHARS, description="Only items whose category path starts with this (e.g. 'Toys > Puzzles').")
    brand: str | None = Field(None, max_length=MAX_ID_CHARS, description="Only this brand.")
    min_price: float | None = Field(None, ge=0, description="Lowest price.")
    max_price: float | None = Field(None, ge=0, description="Highest price.")
    in_stock_only: bool | None = Field(None, description="Override serve.rules.in_stock_only for this request.")


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, description="Known or unknown user; unknown users get a cold-start answer.")
    recent_items: list[str] = Field(default_factory=list, description="Product ids the shopper just looked at, oldest first (anonymous sessions).")
    k: int = Field(10, ge=1, le=100, description="Number of items to return.")
    with_reasons: bool = Field(True, description="Attach a one-sentence reason to each item.")
    filters: Filters = Field(default_factory=Filters, description="Restrict the results.")

    @model_validator(mode="after")
    def _who(self) -> RecommendationRequest:
        if self.user_id is None and not self.recent_items:
            raise ValueError("give user_id or recent_items (or both)")
        return self


class Evidence(BaseModel):
    type: str = Field(description="because_you_interacted | same_brand | favourite_category | popular | similar_new_item | cold_start_popular")
    detail: dict[str, Any] = Field(default_factory=dict, description="The catalog facts behind it (product ids, titles, category, brand).")


class RecommendedItem(BaseModel):
    product_id: str
    title: str
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    score: float = Field(description="Ranker score (higher is better); only comparable within one response.")
    evidence: list[Evidence] = Field(default_factory=list)
    reason: str | None = Field(None, description="One sentence for the shopper, grounded in the evidence and the product facts.")
    reason_source: ContentSource = "none"


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str | None
    cold_start: bool = Field(description="True when the user had no usable history.")
    items: list[RecommendedItem]
    content_source: ContentSource
    model_version: str
    timings_ms: dict[str, float]


class PageSections(BaseModel):
    title: str
    highlights: list[str]
    description: str


class ProductPage(BaseModel):
    request_id: str
    product_id: str
    price: float | None
    in_stock: bool | None
    sections: PageSections
    sections_source: ContentSource
    personalized_note: str | None
    note_source: ContentSource
    also_like: list[RecommendedItem]
    facts_hash: str
    model_version: str
    timings_ms: dict[str, float]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorBody(BaseModel):
    """OpenAI-style error body: {"error": {"message", "type", "param", "code"}}."""

    error: ErrorDetail
