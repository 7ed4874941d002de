"""Candidates from several sources, unioned and de-duplicated per user, with each source's score and rank.

A *source* is any fitted model on the baselines' surface that scores the whole catalog (``score_all(user_ids)``
-> a (users, items) tensor): the two-tower retriever, EASE or item-kNN, popularity and fresh (recency-weighted
popular) items. :func:`generate_candidates` takes each source's top ``n`` per user after the user's
exclusions (seen and unpublished items), unions them, and keeps for every candidate the score and rank it has
in *every* source (not only in the ones that proposed it), so the ranker sees the whole evidence:

- ``score``: the source's score standardized within the user's row over the items it may recommend (z-score:
  the scale of EASE, item-kNN and a softmax logit differ by orders of magnitude);
- ``rank``: 1-based rank within that row;
- ``proposed``: whether the candidate is in the source's top ``n``.

Every array is padded to the longest union (``mask`` is False on padding), so the ranker's batches are plain
tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from models.recdata import RecData
from models.retrieval.index import mask_seen


class CandidateSource(Protocol):
    """What a source offers: scores over the whole catalog as of the view it last fitted or observed."""

    def observe(self, view: RecData) -> object: ...

    def score_all(self, user_ids: list[str]) -> torch.Tensor: ...

    def for_store(self, store: Any, user_ids: Sequence[str]) -> CandidateSource:
        """The same source reading ``user_ids``' histories from ``store`` (a request's, at serving)."""
        ...


@dataclass
class CandidateSet:
    """Each user's de-duplicated candidates with per-source features; arrays are (users, width[, sources])."""

    user_ids: list[str]
    sources: list[str]
    items: np.ndarray  # catalog positions, -1 on padding
    mask: np.ndarray  # True on real candidates
    scores: np.ndarray  # standardized score of every candidate in every source
    ranks: np.ndarray  # 1-based rank in every source
    proposed: np.ndarray  # in that source's top n

    @property
    def width(self) -> int:
        return self.items.shape[1]

    def lists(self) -> list[np.ndarray]:
        """Per user, the candidate positions (no padding)."""
        return [row[m] for row, m in zip(self.items, self.mask, strict=True)]

    def take(self, rows: np.ndarray) -> CandidateSet:
        """The users at ``rows``."""
        return CandidateSet(
            [self.user_ids[r] for r in rows], self.sources, self.items[rows], self.mask[rows],
            self.scores[rows], self.ranks[rows], self.proposed[rows],
        )  # fmt: skip

    def recall(self, relevant: Mapping[str, set[int]]) -> float:
        """Share of the users' relevant items that are among their candidates (the ranker's ceiling)."""
        hit = total = 0
        for user, items in zip(self.user_ids, self.lists(), strict=True):
            rel = relevant.get(user, set())
            hit += len(rel & set(items.tolist()))
            total += len(rel)
        return hit / total if total else float("nan")


def _standardize(scores: torch.Tensor) -> torch.Tensor:
    """Z-score each row over its finite entries; excluded (-inf) entries stay -inf."""
    finite = torch.isfinite(scores)
    count = finite.sum(1, keepdim=True).clamp(min=1)
    zeroed = torch.where(finite, scores, torch.zeros_like(scores))
    mean = zeroed.sum(1, keepdim=True) / count
    var = (torch.where(finite, scores - mean, torch.zeros_like(scores)) ** 2).sum(1, keepdim=True) / count
    out = (scores - mean) / var.sqrt().clamp(min=1e-6)
    return torch.where(finite, out, torch.full_like(out, float("-inf")))


def generate_candidates(
    sources: Mapping[str, CandidateSource],
    n_per_source: Mapping[str, int],
    user_ids: Sequence[str],
    exclusions: list[np.ndarray],
    batch_size: int = 512,
) -> CandidateSet:
    """Top ``n_per_source[name]`` of every source per user (after ``exclusions``), unioned, with features."""
    names = list(sources)
    user_ids = list(user_ids)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for s in range(0, len(user_ids), batch_size):
        users = user_ids[s : s + batch_size]
        excl = exclusions[s : s + batch_size]
        z, ranks, top = [], [], []
        for name in names:
            raw = mask_seen(sources[name].score_all(users).float().cpu().clone(), excl)
            z.append(_standardize(raw))
            # rank 1 = best; ties broken by catalog order (stable sort), excluded items last
            order = torch.sort(-raw, dim=1, stable=True).indices
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(1, raw.shape[1] + 1).expand_as(order).contiguous())
            ranks.append(rank)
            top.append((rank <= n_per_source.get(name, 0)) & torch.isfinite(raw))
        proposed = torch.stack(top, dim=-1)  # (users, items, sources)
        chosen = proposed.any(-1)
        width = max(int(chosen.sum(1).max()) if len(users) else 0, 1)
        # candidates in catalog order, left-aligned: sort the chosen flags descending, stable
        pos = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :width]
        mask = torch.gather(chosen, 1, pos)
        zs = torch.stack(z, dim=-1)
        rs = torch.stack(ranks, dim=-1)
        idx3 = pos.unsqueeze(-1).expand(-1, -1, len(names))
        parts.append(
            (
                torch.where(mask, pos, -1).numpy(),
                mask.numpy(),
                torch.gather(zs, 1, idx3).numpy(),
                torch.gather(rs, 1, idx3).numpy(),
                torch.gather(proposed, 1, idx3).numpy(),
            )
        )
    width = max((p[0].shape[1] for p in parts), default=1)

    def pad(a: np.ndarray, value: float) -> np.ndarray:
        extra = width - a.shape[1]
        if extra == 0:
            return a
        shape = (a.shape[0], extra, *a.shape[2:])
        return np.concatenate([a, np.full(shape, value, dtype=a.dtype)], axis=1)

    def stack(i: int, value: float, dtype: type) -> np.ndarray:
        if not parts:
            shape = (0, width, len(names)) if i >= 2 else (0, width)
            return np.zeros(shape, dtype=dtype)
        return np.concatenate([pad(p[i], value) for p in parts]).astype(dtype)

    scores = stack(2, 0.0, np.float32)
    mask = stack(1, False, bool)
    scores[~np.isfinite(scores)] = 0.0
    return CandidateSet(
        user_ids=user_ids,
        sources=names,
        items=stack(0, -1, np.int64),
        mask=mask,
        scores=scores,
        ranks=stack(3, 0, np.int64),
        proposed=stack(4, False, bool),
    )


def window_relevant(data: RecData, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, set[int]]:
    """Items each user engaged with in ``[start, end)`` that a model could recommend at ``start``.

    The same rule as :meth:`RecData.relevant` for any window (stacking uses windows before the valid split):
    items the user engaged with or rated before ``start`` and items published at or after ``start`` are left out.
    """
    view = data.as_of(start)
    seen = view.seen_idx()
    unpublished = set(view.unpublished().tolist())
    h = data.histories
    window = h[(h["event_ts"] >= start) & (h["event_ts"] < end)]
    idx = data.item_idx(window["item_id"])
    out: dict[str, set[int]] = {}
    for user, rows in window.groupby("user_id", sort=True).indices.items():
        before = set(seen.get(user, np.zeros(0, dtype=np.int64)).tolist())
        keep = {int(i) for i in idx[rows] if i >= 0 and int(i) not in before and int(i) not in unpublished}
        if keep:
            out[str(user)] = keep
    return out


class FreshPopularity:
    """Recency-weighted popularity as of the view's end: each engagement decays with half-life ``half_life_days``."""

    name = "fresh"

    def __init__(self, half_life_days: float = 7.0) -> None:
        self.half_life_days = half_life_days

    def fit(self, view: RecData) -> FreshPopularity:
        """Count the view's engagements, each weighted by 0.5 ** (age / half-life) at ``view.now``."""
        return self.observe(view)

    def observe(self, view: RecData) -> FreshPopularity:
        """The decayed counts as of a (later) view: nothing is learned, so observing is fitting."""
        counts = np.zeros(view.n_items, dtype=np.float64)
        h = view.histories
        if len(h):
            age = ((view.now - h["event_ts"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
            np.add.at(
                counts, view.item_idx(h["item_id"]), 0.5 ** (np.clip(age, 0, None) / self.half_life_days)
            )
        self.scores = torch.as_tensor(counts, dtype=torch.float32)
        return self

    def for_store(self, store: object, user_ids: Sequence[str]) -> FreshPopularity:
        """The same list for every user, whatever their history."""
        return self

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        """The same recency-weighted counts for every user."""
        return self.scores.unsqueeze(0).expand(len(user_ids), -1)
