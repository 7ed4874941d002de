"""The recgen BentoML service: recommend, generate, feedback and health over the registry champion.

Serve it from the repository root (settings and models come from ``RECGEN_*`` / ``RECGEN_HOME``)::

    bentoml serve bentos.service:RecgenService --host 127.0.0.1 --port 3001

Models load once per worker in ``__init__`` (CUDA when available, else CPU). Each endpoint takes its pydantic
request model as a positional-only argument, so the JSON body is the model itself (``{"user_id": ..., "k":
5}``) and the docs show the model's example. Endpoints are ``async``: validation runs on the event loop, model
work in threads, and ranking and copy go through micro-batchers (``bentos/batching.py``), so concurrent
requests share one ranker forward pass and one ``generate`` call. Client errors are 4xx with a message that
names the field (pydantic's 400 for bad JSON, wrong types and unknown fields; 404 for unknown users and
items; 413 for oversized requests; 405 for a wrong method), always as ``{"error": ...}``; the answer never
carries a stack trace. With ``serving.api_keys`` set, /feedback and /generate (every path with
``serving.protect_reads``) need ``Authorization: Bearer <key>`` (``bentos/middleware.py``).

Feedback is on disk (fsync) before it is acknowledged, and stored once per ``event_id``: the client's id, or
one derived from the ``Idempotency-Key`` header and the event's position, so a retried batch writes nothing
again and its answer counts the events as duplicates (``models/feedback.py``).
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import anyio
import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable

from bentos.batching import MicroBatcher
from bentos.middleware import RequestLimits
from bentos.schemas import (
    Content,
    FeedbackRequest,
    FeedbackResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ProfileSummary,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)
from bentos.serving import ContentJob, RankJob, ServingModels
from models.feedback import (
    IDEMPOTENCY_KEY_MAX,
    FeedbackEvent,
    FeedbackInbox,
    RecentActivity,
    valid_idempotency_key,
    with_event_ids,
)
from models.interests import InterestProfile
from models.settings import Settings, get_settings

logger = logging.getLogger("bentoml.recgen")

# Read once at import: the decorator's timeout and the body limit are fixed when the service class is built.
# The worker reads the same environment again in __init__.
_SETTINGS = get_settings()


class PayloadTooLarge(BentoMLException):
    """A request asks for more than the configured limits allow (413)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def _profile_summary(profile: InterestProfile) -> ProfileSummary:
    return ProfileSummary(
        segment=profile.segment,
        interests=profile.interest_terms(5),
        preferred_style=profile.preferred_style,
        n_events=profile.n_events,
        cold_start=profile.cold_start,
    )


def slate_explanation(profile: InterestProfile) -> str:
    """One line on what a slate is based on, from the interest profile."""
    terms = profile.interest_terms(3)
    if profile.cold_start or not terms:
        if terms:
            return (
                f"New here: picked from your stated interests ({', '.join(terms)}) and what is popular now."
            )
        return "New here: popular and fresh items until we learn what you like."
    listed = terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
    return f"Based on your interest in {listed} ({profile.n_events} recent engagements)."


def _traffic(settings: Settings) -> dict[str, Any]:
    """BentoML traffic config: the request timeout, and ``serving.max_concurrency`` when set.

    Requests in flight past ``max_concurrency`` are refused at once (BentoML 1.4 answers 429 ``{"error": "Too
    many requests"}``) instead of queueing behind a saturated worker; ``/readyz``, ``/livez`` and ``/health``
    (BentoML's default livez name) are not counted.
    """
    traffic: dict[str, Any] = {"timeout": settings.serving.request_timeout_s}
    if settings.serving.max_concurrency is not None:
        traffic["max_concurrency"] = settings.serving.max_concurrency
    return traffic


@bentoml.service(
    name="recgen",
    resources={"gpu": 1},
    traffic=_traffic(_SETTINGS),
    workers=1,  # the freshest history lives in memory: one worker per replica keeps it consistent
    logging={"access": {"enabled": _SETTINGS.serving.access_log}},
)
class RecgenService:
    """Recommendations, personalized copy and feedback over the champion models."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self.settings: Settings = get_settings()
        self.models = ServingModels.load(self.settings)
        self.inbox = FeedbackInbox(
            self.settings.inbox_dir, dedup_days=self.settings.serving.feedback_dedup_days
        )
        self.inbox.refresh()  # the index of stored event ids, from the inbox files
        self.recent = RecentActivity(self.settings.serving.recent_items)
        serving = self.settings.serving
        self.rank_batcher: MicroBatcher[RankJob, Any] = MicroBatcher(
            self.models.rank_batch, serving.max_batch_size, serving.max_latency_ms, serving.inline_rank_jobs
        )
        self.content_batcher: MicroBatcher[ContentJob, Any] = MicroBatcher(
            self.models.content_batch, serving.max_batch_size, serving.max_latency_ms
        )
        self.n_recommendations = 0
        self.n_feedback_events = 0
        self.n_feedback_duplicates = 0
        if serving.freeze_gc:
            # The loaded world is hundreds of thousands of long-lived objects: a full collection walks them all
            # (170-190 ms on the 100k-item world), a stall that lands on whichever request triggered it.
            # Frozen, they are never collected again (they live as long as the worker anyway).
            gc.collect()
            gc.freeze()
        logger.info(
            "recgen service ready on %s: %s", self.models.device, ", ".join(self.models.versions().values())
        )

    # --- validation helpers ------------------------------------------------------------------------

    def _check_user(self, user_id: str, field: str = "user_id") -> None:
        if not self.models.known_user(user_id):
            raise NotFound(f"{field}: unknown user {user_id!r}")

    def _check_item(self, item_id: str, field: str = "item_id") -> None:
        if not self.models.known_item(item_id):
            raise NotFound(f"{field}: unknown item {item_id!r}")

    def _check_task(self, task: str) -> None:
        if task not in self.models.tasks:
            raise InvalidArgument(f"task: {task!r} is not one of {list(self.models.tasks)}")

    async def _content(self, jobs: list[ContentJob]) -> list[Content | None]:
        results = await self.content_batcher.submit(jobs)
        return [None if r is None else Content.model_validate(r) for r in results]

    # --- endpoints -----------------------------------------------------------------------------------

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for a known user or an anonymous history, with explanations and optional copy."""
        started = time.perf_counter()
        serving = self.settings.serving
        if request.k > serving.max_k:
            raise InvalidArgument(f"k: {request.k} is more than the limit of {serving.max_k} (serving.max_k)")
        if len(request.history) > serving.max_history_items:
            raise PayloadTooLarge(
                f"history: {len(request.history)} items, more than the limit of {serving.max_history_items} "
                "(serving.max_history_items)"
            )
        if request.user_id is not None:
            self._check_user(request.user_id)
        for i, item_id in enumerate(request.history):
            self._check_item(item_id, f"history[{i}]")
        recent = self.recent.items(request.user_id) if request.user_id is not None else []
        history = [*recent, *request.history]
        job = RankJob(request.user_id, tuple(history), request.k, request.style)
        ((ranked, profile),) = await self.rank_batcher.submit([job])
        items = [
            RecommendedItem(
                item_id=r.item_id,
                position=pos,
                score=float(r.score),
                title=r.title,
                category=r.category,
                explanation=r.reason,
            )
            for pos, r in enumerate(ranked)
        ]
        if request.with_content and items and serving.content_items > 0:
            top = items[: serving.content_items]
            style = request.style or profile.preferred_style
            task = self.settings.generation.tasks[0]
            jobs = [ContentJob(profile, it.item_id, task, style) for it in top]
            for item, content in zip(top, await self._content(jobs), strict=True):
                item.content = content
        self.n_recommendations += 1
        return RecommendResponse(
            request_id=uuid.uuid4().hex,
            user_id=request.user_id,
            items=items,
            profile=_profile_summary(profile),
            explanation=slate_explanation(profile),
            model_version=self.models.versions()["recommender"],
            fairness_rerank_strength=self.models.fairness_rerank_strength,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    @bentoml.api
    async def generate(self, request: GenerateRequest, /) -> GenerateResponse:
        """Personalized copy for one (user, item) pair, from the cache or written now."""
        self._check_user(request.user_id)
        self._check_item(request.item_id)
        self._check_task(request.task)
        if self.models.generator is None:
            raise ServiceUnavailable(
                "generate: no generator model is loaded (materialize the generation assets)"
            )
        recent = self.recent.items(request.user_id)
        profile = await anyio.to_thread.run_sync(self.models.profile, request.user_id, recent)
        style = request.style or profile.preferred_style
        (content,) = await self._content([ContentJob(profile, request.item_id, request.task, style)])
        if content is None:
            raise NotFound(
                f"item_id: no cached copy for ({request.user_id!r}, {request.item_id!r}) and on-demand "
                "generation is off (serving.generate_on_demand)"
            )
        return GenerateResponse(
            user_id=request.user_id,
            item_id=request.item_id,
            content=content,
            profile=_profile_summary(profile),
        )

    @bentoml.api
    async def feedback(self, request: FeedbackRequest, /, ctx: bentoml.Context) -> FeedbackResponse:
        """Store interactions durably in the inbox, each event_id once (answered only once on disk)."""
        key = ctx.request.headers.get("idempotency-key")
        if key is not None and not valid_idempotency_key(key):
            raise InvalidArgument(
                f"Idempotency-Key: must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters"
            )
        limit = self.settings.serving.max_feedback_events
        if len(request.events) > limit:
            raise PayloadTooLarge(
                f"events: {len(request.events)} events, more than the limit of {limit} "
                "(serving.max_feedback_events)"
            )
        for i, event in enumerate(request.events):
            self._check_user(event.user_id, f"events[{i}].user_id")
            self._check_item(event.item_id, f"events[{i}].item_id")
        events = [
            FeedbackEvent(
                event_id=e.event_id,
                event_type=e.event_type,
                user_id=e.user_id,
                item_id=e.item_id,
                ts=e.ts,
                request_id=e.request_id,
                position=e.position,
                dwell_seconds=e.dwell_seconds,
                rating=e.rating,
            )
            for e in request.events
        ]
        stored = await anyio.to_thread.run_sync(self.inbox.store, with_event_ids(events, key))
        # Only after the rows are on disk: what recommend sees never runs ahead of what the pipeline will see.
        self.recent.record(stored.stored)
        self.n_feedback_events += stored.new
        self.n_feedback_duplicates += stored.duplicates
        return FeedbackResponse(
            accepted=len(events),
            new=stored.new,
            duplicates=stored.duplicates,
            rows_written=stored.rows_written,
            inbox_file=None if stored.path is None else stored.path.name,
        )

    @bentoml.api
    async def health(self) -> HealthResponse:
        """Model versions, device and counters of this worker (BentoML's /readyz and /livez answer too)."""
        counts = {
            **self.models.counts(),
            "recommendations_served": self.n_recommendations,
            "feedback_events_written": self.n_feedback_events,
            "feedback_duplicates": self.n_feedback_duplicates,
            "feedback_ids_indexed": len(self.inbox),
            "users_with_fresh_feedback": len(self.recent),
            "rank_batches": self.rank_batcher.stats.calls,
            "rank_jobs": self.rank_batcher.stats.jobs,
            "largest_rank_batch": self.rank_batcher.stats.largest,
            "content_batches": self.content_batcher.stats.calls,
            "content_jobs": self.content_batcher.stats.jobs,
            "largest_content_batch": self.content_batcher.stats.largest,
        }
        return HealthResponse(
            status="ok",
            device=self.models.device,
            model_versions=self.models.versions(),
            fairness_rerank_strength=self.models.fairness_rerank_strength,
            counts=counts,
            started_at=self.started_at,
            uptime_s=round((datetime.now(UTC) - self.started_at).total_seconds(), 3),
        )


RecgenService.add_asgi_middleware(
    RequestLimits,
    max_body_bytes=_SETTINGS.serving.max_body_bytes,
    api_keys=[key.get_secret_value() for key in _SETTINGS.serving.api_keys],
    protect_reads=_SETTINGS.serving.protect_reads,
    drain_limit_bytes=_SETTINGS.serving.drain_limit_bytes,
)
