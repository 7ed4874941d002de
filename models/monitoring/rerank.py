"""Exposure-aware re-ranking across creator groups, and what it costs in NDCG.

Greedy, slot by slot: for position 1, every user in turn, then position 2, and so on, each user's next slot goes
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

from models.monitoring.common import fmt, mean_ndcg, with_scores
from models.monitoring.fairness import CREATOR_ATTRIBUTE, UNKNOWN, exposure_by_group, exposure_gap


def catalog_shares(items: pd.DataFrame, attribute: str = CREATOR_ATTRIBUTE) -> dict[str, float]:
    """Each group's share of the catalog: the default exposure target."""
    groups = items.drop_duplicates("item_id")[attribute].fillna(UNKNOWN).astype(str)
    return groups.value_counts(normalize=True).to_dict()


def _relevance(scores: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The user's scores scaled to [0, 1]; rank-based when scores are flat or disagree with the ranks."""
    order = np.argsort(ranks, kind="stable")
    ordered = scores[order]
    if np.ptp(scores) > 0 and np.all(np.diff(ordered) <= 0):
        return (scores - scores.min()) / np.ptp(scores)
    n = len(ranks)
    return 1.0 - (ranks - ranks.min()) / max(n - 1, 1)


def _fill_slots(
    queues: list[list[list[int]]],
    relevance: np.ndarray,
    original_rank: np.ndarray,
    target: np.ndarray,
    strength: float,
    k: int,
) -> list[tuple[int, int, int]]:
    """The greedy of the module docstring: (user number, row, 1-based slot) for each slot filled.

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


def exposure_rerank(
    recs: pd.DataFrame,
    items: pd.DataFrame,
    k: int,
    strength: float,
    target_shares: Mapping[str, float] | None = None,
    attribute: str = CREATOR_ATTRIBUTE,
) -> pd.DataFrame:
    """Each user's top-k re-ranked from their candidate list towards ``target_shares`` of exposure.

    Returns user_id, item_id, rank (new, 1-based), score (the model's) and original_rank.
    """
    targets = dict(target_shares) if target_shares is not None else catalog_shares(items, attribute)
    group_of = items.drop_duplicates("item_id").set_index("item_id")[attribute].fillna(UNKNOWN).astype(str)
    data = with_scores(recs)[0][["user_id", "item_id", "rank", "score"]].sort_values(
        ["user_id", "rank"], kind="stable"
    )
    data = data.assign(group=data["item_id"].map(group_of).fillna(UNKNOWN).to_numpy())
    group_names = sorted(set(targets) | set(data["group"]))
    group_index = {g: i for i, g in enumerate(group_names)}
    target = np.array([targets.get(g, 0.0) for g in group_names])

    # Per user: per group, the candidates in the model's order (row indices into `data`) and their relevance.
    queues: list[list[list[int]]] = []
    relevance = np.zeros(len(data))
    rows = data.reset_index(drop=True)
    for _, block in rows.groupby("user_id", sort=True):
        idx = block.index.to_numpy()
        relevance[idx] = _relevance(block["score"].to_numpy(float), block["rank"].to_numpy(float))
        per_group: list[list[int]] = [[] for _ in group_names]
        for i, g in zip(idx, block["group"], strict=True):
            per_group[group_index[g]].append(int(i))
        queues.append([list(reversed(q)) for q in per_group])  # pop() from the end = next in model order

    original_rank = rows["rank"].to_numpy(float)
    picked = _fill_slots(queues, relevance, original_rank, target, strength, k)
    out = rows.loc[[i for _, i, _ in picked], ["user_id", "item_id", "score", "rank"]].rename(
        columns={"rank": "original_rank"}
    )
    out.insert(2, "rank", [p for _, _, p in picked])
    return out.sort_values(["user_id", "rank"]).reset_index(drop=True)


@dataclass(frozen=True)
class MitigationComparison:
    """Before/after figures of one re-ranking strength."""

    strength: float
    k: int
    ndcg_before: float
    ndcg_after: float
    gap_before: float
    gap_after: float
    exposure_before: dict[str, float]
    exposure_after: dict[str, float]

    @property
    def ndcg_lost(self) -> float:
        return self.ndcg_before - self.ndcg_after

    @property
    def ndcg_lost_pct(self) -> float:
        return 100.0 * self.ndcg_lost / self.ndcg_before if self.ndcg_before else 0.0

    @property
    def gap_closed(self) -> float:
        return self.gap_before - self.gap_after

    @property
    def gap_closed_pct(self) -> float:
        return 100.0 * self.gap_closed / self.gap_before if self.gap_before else 0.0

    def describe(self) -> str:
        """E.g. ``strength 1.0: NDCG@10 0.412 -> 0.398 (-3.4 %), exposure gap 0.325 -> 0.051 (84.3 % closed)``."""
        return (
            f"strength {self.strength:g}: ndcg@{self.k} {fmt(self.ndcg_before, 3)} -> {fmt(self.ndcg_after, 3)} "
            f"(lost {fmt(self.ndcg_lost, 3)}, {self.ndcg_lost_pct:.1f} %), exposure gap {fmt(self.gap_before, 3)} "
            f"-> {fmt(self.gap_after, 3)} ({self.gap_closed_pct:.1f} % closed)"
        )

    def as_row(self) -> dict[str, float]:
        return {
            "strength": self.strength,
            f"ndcg@{self.k}_before": self.ndcg_before,
            f"ndcg@{self.k}_after": self.ndcg_after,
            "ndcg_lost": self.ndcg_lost,
            "ndcg_lost_pct": self.ndcg_lost_pct,
            "exposure_gap_before": self.gap_before,
            "exposure_gap_after": self.gap_after,
            "gap_closed": self.gap_closed,
            "gap_closed_pct": self.gap_closed_pct,
            **{f"exposure_after[{g}]": v for g, v in sorted(self.exposure_after.items())},
        }


def compare_mitigation(
    recs: pd.DataFrame,
    relevant: pd.DataFrame,
    items: pd.DataFrame,
    k: int,
    strengths: Sequence[float],
    attribute: str = CREATOR_ATTRIBUTE,
) -> list[MitigationComparison]:
    """Re-rank at each strength and compare NDCG@k and the exposure gap with the model's own lists."""
    before_exposure = exposure_by_group(recs, items, k, attribute=attribute)
    ndcg_before = mean_ndcg(recs, relevant, k)
    gap_before = exposure_gap(before_exposure, k, attribute).gap
    out = []
    for strength in strengths:
        reranked = exposure_rerank(recs, items, k, strength, attribute=attribute)
        after_exposure = exposure_by_group(reranked, items, k, attribute=attribute)
        out.append(
            MitigationComparison(
                strength=float(strength),
                k=k,
                ndcg_before=ndcg_before,
                ndcg_after=mean_ndcg(reranked, relevant, k),
                gap_before=gap_before,
                gap_after=exposure_gap(after_exposure, k, attribute).gap,
                exposure_before=dict(
                    zip(before_exposure["group"], before_exposure["exposure_share"], strict=True)
                ),
                exposure_after=dict(
                    zip(after_exposure["group"], after_exposure["exposure_share"], strict=True)
                ),
            )
        )
    return out


def rerank_list(
    groups: Sequence[str],
    scores: Sequence[float],
    k: int,
    strength: float,
    target_shares: Mapping[str, float],
) -> np.ndarray:
    """The re-ranked top k of one model-ordered list, as positions into it: :func:`exposure_rerank` of one user.

    What the service does with ``monitoring.fairness_rerank``: each list is re-ranked on its own, so exposure is
    counted over that list's slots (its first slot is the model's, later ones lean towards the groups the list
    has under-exposed so far) and an answer does not depend on which other requests were served with it.
    The same greedy as :func:`exposure_rerank` (``_fill_slots``) without its data frames (a list takes well
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
    relevance = _relevance(np.asarray(scores, dtype=float), ranks)
    picked = _fill_slots([[list(reversed(q)) for q in per_group]], relevance, ranks, target, strength, k)
    return np.asarray([i for _, i, _ in picked], dtype=np.int64)
