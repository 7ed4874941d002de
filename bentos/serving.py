"""What the service holds in memory: the champion recommender, the generator and the content cache.

Plain Python over ``models/`` (no BentoML here), so it is tested in-process as well as through the server.
Ranking and copy are exposed as batch functions (``rank_batch``, ``content_batch``) that the service's
micro-batchers call with the jobs of concurrent requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.interests import InterestProfile
from models.recommender import FullStackModel, Recommender, ScoredItem
from models.registry import ModelRegistry
from models.settings import Settings

log = logging.getLogger(__name__)

RECOMMENDER_NAME = "full_stack"  # the registry name of the served recommender


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

    def __init__(self, settings: Settings, recommender: Recommender, recommender_version: str) -> None:
        self.settings = settings
        self.device = settings.resolved_device
        self.recommender = recommender
        self.recommender_version = recommender_version
        # The recommender's numpy/torch state is read-only at serving time, but its calls are not documented as
        # thread-safe: one call at a time (batching makes up for it).
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings) -> ServingModels:
        """The registry's champion recommender on ``settings.resolved_device``."""
        artifact = ModelRegistry.from_settings(settings).load_champion(RECOMMENDER_NAME)
        model = FullStackModel.load(artifact.path, settings.resolved_device)
        recommender = Recommender(model, settings.serving.max_history_items)
        log.info("loaded %s %s from %s", RECOMMENDER_NAME, artifact.version, artifact.path)
        return cls(settings, recommender, f"{RECOMMENDER_NAME}:{artifact.version}")

    # --- lookups ----------------------------------------------------------------------------------------------
    def known_user(self, user_id: str) -> bool:
        """Whether the user is in the served snapshot."""
        return self.recommender.known_user(user_id)

    def known_item(self, item_id: str) -> bool:
        """Whether the item is in the served catalog."""
        return self.recommender.known_item(item_id)

    def versions(self) -> dict[str, str]:
        """Model versions being served."""
        return {"recommender": self.recommender_version}

    def counts(self) -> dict[str, int]:
        """Sizes of what is loaded."""
        model = self.recommender.model
        return {"users": len(model.user_index), "items": len(model.item_index)}

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
        items, scores, sources = model.finalize(candidates, job.k)
        style = job.style or profile.preferred_style
        out = []
        for item, score, source in zip(items, scores, sources, strict=True):
            row = model.items.iloc[int(item)]
            out.append(
                ScoredItem(
                    item_id=str(row["item_id"]),
                    score=float(score),
                    title=str(row["title"]),
                    category=str(row["category"]),
                    reason=self.recommender.explain(profile, row.to_dict(), style=style, source=source),
                )
            )
        return out

    # --- copy -------------------------------------------------------------------------------------------------
    def content_batch(self, jobs: list[ContentJob]) -> list[dict[str, Any] | None]:
        """Copy for each job from the cache or written now (None when missing and on-demand is off)."""
        raise NotImplementedError("generation is not wired yet")
