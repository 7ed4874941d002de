"""What the service holds in memory: the champion recommender, the generator and the content cache.

Plain Python over ``models/`` (no BentoML here), so it is tested in-process as well as through the server.
Ranking and copy are exposed as batch functions (``rank_batch``, ``content_batch``) that the service's
micro-batchers call with the jobs of concurrent requests.

The content cache is the pipeline's ``generation.content_cache`` rows for the served generator version, copied
at start into an in-memory DuckDB (the warehouse lock is held only for that read, and a busy warehouse delays
start-up by at most ``serving.warehouse_timeout_s``); copy written on demand is added there, so it is served
from memory the next time, and is written again by the pipeline's next generation run (the service never
writes the warehouse, which belongs to the pipeline's one writer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import torch

from models.data import warehouse
from models.generation import cache
from models.generation.artifacts import load_generator
from models.generation.generator import Generator
from models.generation.prompts import TASKS
from models.generation.service import (
    GenerationRequest,
    ItemText,
    generate_content,
    items_by_id,
    request_fields,
)
from models.interests import InterestProfile
from models.recommender import FullStackModel, Recommender, ScoredItem, load_full_stack
from models.registry import ModelRegistry
from models.retrieval.index import load_if_same_catalog
from models.settings import Settings
from models.torch_utils import limit_cpu_threads

log = logging.getLogger(__name__)

RECOMMENDER_NAME = "full_stack"  # the registry name of the served recommender
RETRIEVAL_NAME = "retrieval_index"  # the pipeline's index of the same catalog (with its faiss ANN when large)


def use_retrieval_index(
    registry: ModelRegistry, model: FullStackModel, device: str, threshold: int
) -> str | None:
    """Serve the newest ``retrieval_index`` artifact that indexes the model's catalog; its version or None.

    Either way the ANN index (above ``retrieval.ann_threshold_items`` of the serving settings, which decide
    exact or approximate search here) is ready before the first request.
    """
    if not hasattr(model, "index"):  # the stacked full stack scores its sources over the whole catalog
        return None
    model.index.ann_threshold_items = threshold
    version = None
    for artifact in reversed(registry.versions(RETRIEVAL_NAME)):
        saved = load_if_same_catalog(model.index, artifact.path, device)
        if saved is not None:
            model.index, version = saved, f"{RETRIEVAL_NAME}:{artifact.version}"
            log.info("serving %s (saved ann: %s)", version, saved.ann is not None)
            break
    else:
        log.warning("no %s artifact indexes the served catalog: using the model's own index", RETRIEVAL_NAME)
    model.index.ensure_ann()
    return version


@dataclass(frozen=True)
class RankJob:
    """One recommend call: a known user and/or recent item ids (oldest first)."""

    user_id: str | None
    history: tuple[str, ...]
    k: int
    style: str | None = None


@dataclass(frozen=True)
class ContentJob:
    """Copy for one (user, item) pair in a task and style, written for ``profile``."""

    profile: InterestProfile
    item_id: str
    task: str
    style: str


class ServingModels:
    """The loaded champion models and the batch functions the service calls."""

    def __init__(
        self,
        settings: Settings,
        recommender: Recommender,
        recommender_version: str,
        generator: Generator | None = None,
        cache_con: duckdb.DuckDBPyConnection | None = None,
        retrieval_version: str | None = None,
    ) -> None:
        self.settings = settings
        self.retrieval_version = retrieval_version
        self.device = settings.resolved_device
        self.recommender = recommender
        self.recommender_version = recommender_version
        self.generator = generator
        self.cache_con = cache_con
        self.items: dict[str, ItemText] = items_by_id(recommender.model.items)
        self.n_cached = cache.cache_size(cache_con) if cache_con is not None else 0
        # The recommender's numpy/torch state is read-only at serving time, but its calls are not documented as
        # thread-safe: one call at a time (batching makes up for it). Copy runs in the content batcher's one
        # thread, so the generator and the cache connection are used by one thread only.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings) -> ServingModels:
        """The registry's champion recommender, the generator and the cache, on ``settings.resolved_device``.

        Sets torch's intra-op threads to ``settings.torch_threads`` (``RECGEN_TORCH_THREADS``) first: a request's
        tensors are small, and on a shared CPU a thread pool wider than the cores it gets waits on them.
        """
        limit_cpu_threads(settings.torch_threads)
        registry = ModelRegistry.from_settings(settings)
        artifact = registry.load_champion(RECOMMENDER_NAME)
        model = load_full_stack(artifact.path, settings.resolved_device)
        retrieval_version = use_retrieval_index(
            registry, model, settings.resolved_device, settings.retrieval.ann_threshold_items
        )
        recommender = Recommender.from_settings(model, settings)
        log.info("loaded %s %s from %s", RECOMMENDER_NAME, artifact.version, artifact.path)
        generator = cache_con = None
        try:
            generator = load_generator(settings)
        except FileNotFoundError as exc:
            log.warning("copy is not available: %s", exc)
        else:
            cache_con = load_cache(settings, generator.version)
            log.info("loaded generator %s", generator.version)
        version = f"{RECOMMENDER_NAME}:{artifact.version}"
        return cls(settings, recommender, version, generator, cache_con, retrieval_version)

    # --- lookups ----------------------------------------------------------------------------------------------
    def known_user(self, user_id: str) -> bool:
        """Whether the user is in the served snapshot."""
        return self.recommender.known_user(user_id)

    def known_item(self, item_id: str) -> bool:
        """Whether the item is in the served catalog."""
        return self.recommender.known_item(item_id)

    def versions(self) -> dict[str, str]:
        """Model versions being served."""
        out = {"recommender": self.recommender_version}
        if self.retrieval_version is not None:
            out["retrieval_index"] = self.retrieval_version
        if self.generator is not None:
            out["generator"] = self.generator.version
        return out

    @property
    def fairness_rerank_strength(self) -> float | None:
        """Strength of the exposure re-ranking applied to served lists (None: off)."""
        fairness = self.recommender.fairness
        return None if fairness is None else fairness.strength

    def counts(self) -> dict[str, int]:
        """Sizes of what is loaded."""
        model = self.recommender.model
        return {
            "users": len(model.user_index),
            "items": len(model.item_index),
            "cached_copies": self.n_cached,
        }

    # --- ranking ----------------------------------------------------------------------------------------------
    def profile(self, user_id: str | None, history: Sequence[str] = ()) -> InterestProfile:
        """The interest profile of a user (stored history plus ``history``) or of an anonymous history."""
        with self._lock, torch.inference_mode():
            return self.recommender.profile(user_id, list(history))

    def rank_batch(self, jobs: list[RankJob]) -> list[tuple[list[ScoredItem], InterestProfile]]:
        """Ranked items and the profile for each job; known users without new items are scored together."""
        out: list[tuple[list[ScoredItem], InterestProfile] | None] = [None] * len(jobs)
        with self._lock, torch.inference_mode():
            plain = [i for i, job in enumerate(jobs) if job.user_id is not None and not job.history]
            if plain:
                model = self.recommender.model
                ranked = model.rank_candidates([jobs[i].user_id for i in plain])
                for i, candidates in zip(plain, ranked, strict=True):
                    job = jobs[i]
                    profile = self.recommender.profile(job.user_id)
                    out[i] = (self._scored(model, candidates, job, profile), profile)
            for i, job in enumerate(jobs):
                if out[i] is None:  # new items in the history: the request needs its own history store
                    items = self.recommender.recommend(
                        user_id=job.user_id, history_item_ids=list(job.history), k=job.k, style=job.style
                    )
                    out[i] = (items, self.recommender.profile(job.user_id, list(job.history)))
        return [o for o in out if o is not None]

    def _scored(
        self, model: FullStackModel, candidates: Any, job: RankJob, profile: InterestProfile
    ) -> list[ScoredItem]:
        """The same top-k and reasons as ``Recommender.recommend`` gives, from already-scored candidates."""
        items, scores, sources = self.recommender.top_k(candidates, job.k)
        style = job.style or profile.preferred_style
        out = []
        for item, score, source in zip(items, scores, sources, strict=True):
            row = self.recommender.item_row(int(item))
            out.append(
                ScoredItem(
                    item_id=str(row["item_id"]),
                    score=float(score),
                    title=str(row["title"]),
                    category=str(row["category"]),
                    reason=self.recommender.explain(profile, row, style=style, source=source),
                )
            )
        return out

    # --- copy -------------------------------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the generator writes."""
        return TASKS

    def content_batch(self, jobs: list[ContentJob]) -> list[dict[str, Any] | None]:
        """Copy for each job from the cache, or written now within ``generation.max_new_tokens``.

        None for a job when there is no generator, or its copy is not cached and on-demand generation is off.
        """
        if self.generator is None:
            return [None] * len(jobs)
        requests = [
            GenerationRequest(job.profile.user_id, self.items[job.item_id], job.profile, job.task, job.style)
            for job in jobs
        ]
        if self.settings.serving.generate_on_demand:
            with torch.inference_mode():
                made = generate_content(requests, self.generator, self.cache_con, self.settings.generation)
            if self.cache_con is not None:
                self.n_cached = cache.cache_size(self.cache_con)
            return [self._with_verdict(c.to_dict()) for c in made]
        return [None if c is None else self._with_verdict(c) for c in self._cached_only(requests)]

    def _with_verdict(self, content: dict[str, Any]) -> dict[str, Any]:
        """Add the faithfulness verdict: which claims of the text the item's own facts do not support."""
        from models.generation.guardrails import unsupported_claims

        claims = unsupported_claims(str(content["text"]), self.items[str(content["item_id"])].sources)
        return {**content, "faithful": not claims, "unsupported_claims": claims}

    def _cached_only(self, requests: list[GenerationRequest]) -> list[dict[str, Any] | None]:
        assert self.generator is not None
        keys = []
        for request in requests:
            fields, segment = request_fields(request)
            keys.append(
                cache.CacheKey(
                    request.item.content_hash, segment, fields.task, fields.style, self.generator.version
                )
            )
        found = cache.lookup(self.cache_con, keys) if self.cache_con is not None else {}
        out: list[dict[str, Any] | None] = []
        for request, key in zip(requests, keys, strict=True):
            entry = found.get(key)
            out.append(
                None
                if entry is None
                else {
                    "user_id": request.user_id,
                    "item_id": request.item.item_id,
                    "task": key.task,
                    "style": key.style,
                    "text": entry.text,
                    "passed_guardrails": entry.passed_guardrails,
                    "fallback_reason": entry.fallback_reason,
                    "model_version": key.model_version,
                    "latency_ms": 0.0,
                    "n_tokens": entry.n_tokens,
                    "cached": True,
                }
            )
        return out


def load_cache(settings: Settings, model_version: str) -> duckdb.DuckDBPyConnection:
    """An in-memory copy of the warehouse cache rows of ``model_version`` (empty when unreachable or absent)."""
    mem = duckdb.connect(":memory:")
    cache.ensure_cache_table(mem)
    database = settings.database
    if not database.exists():  # connecting would create an empty warehouse file
        return mem
    try:
        with warehouse.connect(database, timeout_s=settings.serving.warehouse_timeout_s) as con:
            if not warehouse.table_exists(con, cache.CACHE_TABLE):
                return mem
            rows = con.execute(
                f"select * from {cache.CACHE_TABLE} where model_version = ?", [model_version]
            ).df()
    except warehouse.WarehouseLockTimeout:
        log.warning(
            "warehouse busy for %s s: serving without the content cache", settings.serving.warehouse_timeout_s
        )
        return mem
    cache.write_frame(mem, rows)
    log.info("content cache: %d rows of %s", len(rows), model_version)
    return mem
