"""Request and response models of the recgen service (pydantic: BentoML validates bodies against them).

Every request model forbids unknown fields, so a misspelt field is a 400 that names it instead of being
ignored. Limits that come from settings (``k`` up to ``serving.max_k``, history and feedback lengths) are
checked by the service, which knows the settings it was started with; the constraints here are the ones that
hold for every deployment. The ``example`` of each request model is what the generated docs at ``/`` show (BentoML's OpenAPI
schema takes the singular ``example``; a model-level ``examples`` list breaks ``bentoml build``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.data.schema import STYLES
from models.feedback import EVENT_ID_MAX, EVENT_ID_RULE, valid_event_id

Style = Literal["concise", "casual", "formal", "enthusiastic"]
EventType = Literal["impression", "click", "dwell", "rating"]
if set(get_args(Style)) != set(STYLES):  # one list of styles: models/data/schema.py
    raise ImportError(
        f"bentos.schemas.Style {get_args(Style)} differs from models.data.schema.STYLES {STYLES}"
    )
CLOCK_SKEW = timedelta(minutes=5)  # how far in the future a client's clock may be before an event is refused


class RecommendRequest(BaseModel):
    """Recommendations for a known user (``user_id``) or for a new one described by ``history``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"user_id": "u0001", "k": 5, "with_content": True}},
    )

    user_id: str | None = Field(
        None, min_length=1, max_length=128, description="a known user; leave out for an anonymous visitor"
    )
    history: list[str] = Field(
        default_factory=list,
        description="item ids the visitor engaged with, oldest first (at most serving.max_history_items); "
        "for a known user they are added to the stored history",
    )
    k: int = Field(10, ge=1, description="how many items to return (at most serving.max_k)")
    style: Style | None = Field(None, description="tone of the copy; default: the user's preferred style")
    with_content: bool = Field(False, description="add personalized copy to the top items")

    @model_validator(mode="after")
    def _someone(self) -> RecommendRequest:
        if self.user_id is None and not self.history:
            raise ValueError("user_id or history: give a known user_id, or the history of a new user")
        return self


class Content(BaseModel):
    """Personalized copy for one (user, item) pair, with how it was made."""

    text: str
    task: str
    style: str
    passed_guardrails: bool = Field(description="false when the model's output was replaced by the fallback")
    fallback_reason: str | None = None
    faithful: bool = Field(
        True,
        description="every number, name and content claim of the text is supported by the item's own facts",
    )
    unsupported_claims: list[str] = Field(
        default_factory=list, description="the claims the item's facts do not support (empty when faithful)"
    )
    model_version: str
    cached: bool = Field(description="true when served from the content cache, false when written now")
    n_tokens: int
    latency_ms: float


class RecommendedItem(BaseModel):
    """One recommended item, ranked."""

    item_id: str
    position: int = Field(description="0-based slot; send it back with feedback")
    score: float
    title: str
    category: str
    explanation: str = Field(description="why this item, in words, from the user's interest profile")
    content: Content | None = None


class ProfileSummary(BaseModel):
    """The interest profile the recommendations were made from."""

    segment: str
    interests: list[str]
    preferred_style: str
    n_events: int
    cold_start: bool


class RecommendResponse(BaseModel):
    """A ranked slate; ``request_id`` identifies it in feedback."""

    request_id: str
    user_id: str | None
    items: list[RecommendedItem]
    profile: ProfileSummary
    explanation: str = Field(description="one line on what the slate is based on")
    model_version: str
    fairness_rerank_strength: float | None = Field(
        None,
        description="strength of the exposure-aware re-ranking across creator groups applied to this slate "
        "(monitoring.fairness_rerank, monitoring.rerank_strength); null when off",
    )
    latency_ms: float


class GenerateRequest(BaseModel):
    """Copy for one (user, item) pair."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"user_id": "u0001", "item_id": "i001", "task": "blurb"}},
    )

    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    task: str = Field("blurb", min_length=1, max_length=32, description="one of generation.tasks")
    style: Style | None = Field(None, description="tone; default: the user's preferred style")


class GenerateResponse(BaseModel):
    """The copy and the profile it was written for."""

    user_id: str
    item_id: str
    content: Content
    profile: ProfileSummary


class FeedbackEventIn(BaseModel):
    """One interaction; ``request_id`` and ``position`` come from the recommend answer that showed the item."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(
        None,
        max_length=EVENT_ID_MAX,
        description=f"the client's id of this event ({EVENT_ID_RULE}), the same on every retry: an id "
        "already stored is not stored again. Default: derived from the Idempotency-Key header and the "
        "event's position in the batch, else a fresh one (then a retry is stored twice)",
    )
    event_type: EventType
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    ts: datetime | None = Field(None, description="when it happened (ISO 8601); default: when received")
    request_id: str | None = Field(None, min_length=1, max_length=128)
    position: int | None = Field(None, ge=0, le=10_000)
    dwell_seconds: float | None = Field(None, ge=0, le=86_400)
    rating: float | None = Field(None, ge=1, le=5)

    @field_validator("event_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not valid_event_id(value):
            raise ValueError(f"event_id: must be {EVENT_ID_RULE}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackEventIn:
        if self.event_type == "dwell" and self.dwell_seconds is None:
            raise ValueError("dwell_seconds: required for a dwell event")
        if self.event_type == "rating" and self.rating is None:
            raise ValueError("rating: required for a rating event")
        if self.ts is not None:
            aware = self.ts if self.ts.tzinfo is not None else self.ts.replace(tzinfo=UTC)
            if aware > datetime.now(UTC) + CLOCK_SKEW:
                raise ValueError(f"ts: {self.ts.isoformat()} is in the future")
        return self


class FeedbackRequest(BaseModel):
    """A batch of interactions (at most serving.max_feedback_events)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "events": [
                    {
                        "event_id": "app-7f3a-0001",
                        "event_type": "click",
                        "user_id": "u0001",
                        "item_id": "i001",
                        "request_id": "3f1c0c8e2b7d4d1f9a0e6b5c4d3e2f1a",
                        "position": 0,
                    },
                    {"event_type": "rating", "user_id": "u0001", "item_id": "i002", "rating": 5},
                ]
            }
        },
    )

    events: list[FeedbackEventIn] = Field(min_length=1)


class FeedbackResponse(BaseModel):
    """What was stored: returned only once the rows are on disk."""

    accepted: int = Field(description="events received")
    new: int = Field(description="events stored now")
    duplicates: int = Field(
        description="events whose event_id was already stored (a retry) or repeated in the batch: not stored again"
    )
    rows_written: int = Field(
        description="raw rows written (new events plus impressions added for standalone ones)"
    )
    inbox_file: str | None = Field(description="the inbox file written to; null when nothing was new")


class HealthResponse(BaseModel):
    """Model versions, device and counters of this worker."""

    status: Literal["ok"]
    device: str
    model_versions: dict[str, str]
    fairness_rerank_strength: float | None = Field(
        None,
        description="exposure re-ranking strength of served slates (monitoring.fairness_rerank); null: off",
    )
    counts: dict[str, int]
    started_at: datetime
    uptime_s: float
