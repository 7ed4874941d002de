"""Re-ranking a scored list: MMR for diversity, and exposure-aware re-ranking across creator groups.

**MMR** (Carbonell and Goldstein, 1998): relevance against similarity to what is already picked.

**Exposure-aware** (the fairness report's mitigation and the service's ``monitoring.fairness_rerank``):
greedy, slot by slot: for position 1, every user in turn, then position 2, and so on, each user's next slot goes
to the candidate maximizing ``relevance + strength * (target share - exposure share so far)`` of its group,
where relevance is the user's score scaled to [0, 1] and exposure share is counted over all users' slots filled
so far. ``strength = 0`` keeps the model's order; larger values move exposure towards the targets (the catalog
shares by default) while the model's order is kept inside each group. Filling positions in rounds spreads the
correction over users and positions instead of handing the last users all the under-exposed items.

Only the group heads can win a slot (the best remaining item of each group), so a step costs O(groups).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.recdata import CREATOR_ATTRIBUTE, UNKNOWN
from models.settings import Settings


def mmr_rerank(
    candidates: np.ndarray,
    relevance: np.ndarray,
    item_embeddings: np.ndarray,
    k: int,
    mmr_lambda: float,
) -> np.ndarray:
    """Greedy maximal marginal relevance: argmax lambda * rel - (1 - lambda) * max cosine to the items already picked.

    ``item_embeddings`` are the catalog's unit vectors (numpy: these are tiny per-user products, where torch's
    thread pool costs more than the arithmetic). Relevance is min-max scaled to [0, 1] within the list so it is
    on the cosine's scale; lambda = 1 keeps the relevance order.
    """
    n = len(candidates)
    k = min(k, n)
    if k == 0:
        return candidates[:0]
    order = np.argsort(-relevance, kind="stable")
    if mmr_lambda >= 1.0:
        return candidates[order[:k]]
    vecs = np.asarray(item_embeddings[candidates], dtype=np.float32)
    rel = relevance.astype(np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
    picked = [int(order[0])]
    # similarities to the picked items only (k matrix-vector products, not the full n x n matrix)
    max_sim = vecs @ vecs[order[0]]
    available = np.ones(n, dtype=bool)
    available[order[0]] = False
    for _ in range(k - 1):
        gain = mmr_lambda * rel - (1 - mmr_lambda) * max_sim
        gain[~available] = -np.inf
        nxt = int(np.argmax(gain))
        picked.append(nxt)
        available[nxt] = False
        max_sim = np.maximum(max_sim, vecs @ vecs[nxt])
    return candidates[np.asarray(picked)]


def catalog_shares(items: pd.DataFrame, attribute: str = CREATOR_ATTRIBUTE) -> dict[str, float]:
    """Each group's share of the catalog: the default exposure target."""
    groups = items.drop_duplicates("item_id")[attribute].fillna(UNKNOWN).astype(str)
    return groups.value_counts(normalize=True).to_dict()


def scaled_relevance(scores: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The user's scores scaled to [0, 1]; rank-based when scores are flat or disagree with the ranks."""
    order = np.argsort(ranks, kind="stable")
    ordered = scores[order]
    if np.ptp(scores) > 0 and np.all(np.diff(ordered) <= 0):
        return (scores - scores.min()) / np.ptp(scores)
    n = len(ranks)
    return 1.0 - (ranks - ranks.min()) / max(n - 1, 1)


def fill_slots(
    queues: list[list[list[int]]],
    relevance: np.ndarray,
    original_rank: np.ndarray,
    target: np.ndarray,
    strength: float,
    k: int,
) -> list[tuple[int, int, int]]:
    """The exposure greedy of the module docstring: (user number, row, 1-based slot) for each slot filled.

    ``queues[user][group]`` holds the rows of the user's candidates of that group, next in model order last.
    """
    counts = np.zeros(len(target))
    picked: list[tuple[int, int, int]] = []
    for position in range(1, k + 1):
        for user, user_queues in enumerate(queues):
            heads = [(g, q[-1]) for g, q in enumerate(user_queues) if q]
            if not heads:
                continue
            total = counts.sum()
            shares = counts / total if total else target
            best_g, best_i = max(
                heads,
                # ties go to the model's own order (lower original rank)
                key=lambda h: (
                    relevance[h[1]] + strength * (target[h[0]] - shares[h[0]]),
                    -original_rank[h[1]],
                ),
            )
            user_queues[best_g].pop()
            counts[best_g] += 1
            picked.append((user, best_i, position))
    return picked


def rerank_list(
    groups: Sequence[str],
    scores: Sequence[float],
    k: int,
    strength: float,
    target_shares: Mapping[str, float],
) -> np.ndarray:
    """The re-ranked top k of one model-ordered list, as positions into it: :func:`~models.monitoring.mitigation.exposure_rerank` of one user.

    What the service does with ``monitoring.fairness_rerank``: each list is re-ranked on its own, so exposure is
    counted over that list's slots (its first slot is the model's, later ones lean towards the groups the list
    has under-exposed so far) and an answer does not depend on which other requests were served with it.
    The same greedy as :func:`exposure_rerank` (:func:`fill_slots`) without its data frames (a list takes well
    under a millisecond). ``groups`` has no missing values (the caller maps them to ``unknown``).
    """
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    names = sorted(set(target_shares) | set(groups))
    index = {g: i for i, g in enumerate(names)}
    target = np.array([target_shares.get(g, 0.0) for g in names])
    per_group: list[list[int]] = [[] for _ in names]
    for i, g in enumerate(groups):
        per_group[index[g]].append(i)
    ranks = np.arange(1, len(groups) + 1, dtype=float)
    relevance = scaled_relevance(np.asarray(scores, dtype=float), ranks)
    picked = fill_slots([[list(reversed(q)) for q in per_group]], relevance, ranks, target, strength, k)
    return np.asarray([i for _, i, _ in picked], dtype=np.int64)


@dataclass(frozen=True)
class FairnessRerank:
    """Exposure-aware re-ranking of served lists across creator groups (:func:`rerank_list`).

    With ``monitoring.fairness_rerank`` the top ``depth * k`` of the model's list (after MMR) is re-ranked into
    the served top k with the fairness report's function and ``strength``, towards the groups' catalog shares;
    each list on its own.
    """

    strength: float
    depth: int
    groups: np.ndarray  # creator group of each catalog row of the model
    target_shares: dict[str, float]

    @classmethod
    def for_catalog(
        cls, items: pd.DataFrame, item_ids: Sequence[str], strength: float, depth: int = 2
    ) -> FairnessRerank:
        """Targets are the catalog shares of ``items`` (rows in ``item_ids`` order; the fairness report's default)."""
        if CREATOR_ATTRIBUTE in items:
            groups = items[CREATOR_ATTRIBUTE].fillna(UNKNOWN).astype(str).to_numpy(dtype=object)
        else:
            groups = np.full(len(items), UNKNOWN, dtype=object)
        shares = catalog_shares(pd.DataFrame({"item_id": item_ids, CREATOR_ATTRIBUTE: groups}))
        return cls(float(strength), int(depth), groups, shares)

    @classmethod
    def from_settings(
        cls, items: pd.DataFrame, item_ids: Sequence[str], settings: Settings
    ) -> FairnessRerank | None:
        """``monitoring.rerank_strength`` over ``serving.fairness_rerank_depth``; None when the setting is off."""
        if not settings.monitoring.fairness_rerank:
            return None
        return cls.for_catalog(
            items, item_ids, settings.monitoring.rerank_strength, settings.serving.fairness_rerank_depth
        )

    def top_k(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Positions in the model-ordered ``items`` of the re-ranked top k."""
        return rerank_list(self.groups[items], scores, k, self.strength, self.target_shares)
