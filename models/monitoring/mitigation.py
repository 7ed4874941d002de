"""What exposure-aware re-ranking costs in NDCG: the fairness report's mitigation table.

:func:`exposure_rerank` re-ranks every user's list of a report at once with the greedy of
:mod:`models.ranking.rerank` (the service re-ranks each list on its own with the same greedy);
:func:`compare_mitigation` measures NDCG@k and the exposure gap before and after, per strength.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.monitoring.common import fmt, mean_ndcg, with_scores
from models.monitoring.fairness import exposure_by_group, exposure_gap
from models.ranking.rerank import catalog_shares, fill_slots, scaled_relevance
from models.recdata import CREATOR_ATTRIBUTE, UNKNOWN


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
        relevance[idx] = scaled_relevance(block["score"].to_numpy(float), block["rank"].to_numpy(float))
        per_group: list[list[int]] = [[] for _ in group_names]
        for i, g in zip(idx, block["group"], strict=True):
            per_group[group_index[g]].append(int(i))
        queues.append([list(reversed(q)) for q in per_group])  # pop() from the end = next in model order

    original_rank = rows["rank"].to_numpy(float)
    picked = fill_slots(queues, relevance, original_rank, target, strength, k)
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
