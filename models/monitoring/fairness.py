"""Fairness figures of a recommendation list: quality by user group, exposure by creator group, popularity bias.

Evidently 0.7.23 has no fairness metrics and its ``GroupBy`` returns the overall value for every group, so every
per-group figure here is computed by slicing the data (pure pandas; the tests compare with plain pandas).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.monitoring.common import fmt, ndcg_per_user, top_k
from models.recdata import (  # USER_ATTRIBUTES: what the report groups users by
    CREATOR_ATTRIBUTE,
    UNKNOWN,
    USER_ATTRIBUTES,
)


@dataclass(frozen=True)
class Gap:
    """The spread of one metric across the groups of one attribute: best and worst group and the difference."""

    attribute: str
    metric: str
    high_group: str
    high_value: float
    low_group: str
    low_value: float

    @property
    def gap(self) -> float:
        return self.high_value - self.low_value

    def describe(self) -> str:
        """E.g. ``ndcg@10 gap by user_group 0.212 ('18-34' 0.512 vs '55+' 0.300)``."""
        return (
            f"{self.metric} gap by {self.attribute} {fmt(self.gap, 3)} "
            f"('{self.high_group}' {fmt(self.high_value, 3)} vs '{self.low_group}' {fmt(self.low_value, 3)})"
        )


@dataclass(frozen=True)
class ExposureGap:
    """The creator group whose share of top-k exposure is furthest from its share of the catalog."""

    attribute: str
    group: str
    exposure_share: float
    catalog_share: float
    k: int

    @property
    def gap(self) -> float:
        return abs(self.exposure_share - self.catalog_share)

    def describe(self) -> str:
        """E.g. ``creator_group 'independent' gets 0.050 of top-10 exposure vs 0.375 of the catalog (gap 0.325)``."""
        return (
            f"{self.attribute} '{self.group}' gets {fmt(self.exposure_share, 3)} of top-{self.k} exposure vs "
            f"{fmt(self.catalog_share, 3)} of the catalog (gap {fmt(self.gap, 3)})"
        )


def quality_by_group(
    recs: pd.DataFrame,
    relevant: pd.DataFrame,
    users: pd.DataFrame,
    attribute: str,
    k: int,
    interactions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per group of ``attribute``: evaluated users, mean NDCG@k with its 95 % CI half-width, and logged CTR."""
    groups = users[["user_id", attribute]].drop_duplicates("user_id")
    per_user = ndcg_per_user(recs, relevant, k).merge(groups, on="user_id", how="left")
    per_user[attribute] = per_user[attribute].fillna(UNKNOWN).astype(str)
    table = per_user.groupby(attribute).agg(
        n_users=("user_id", "size"), ndcg=("ndcg", "mean"), ndcg_std=("ndcg", "std")
    )
    # Half-width of the normal 95 % interval of the group mean (NaN for a group of one user).
    table["ndcg_ci95"] = 1.96 * table.pop("ndcg_std") / np.sqrt(table["n_users"])
    table = table.rename(columns={"ndcg": f"ndcg@{k}", "ndcg_ci95": f"ndcg@{k}_ci95"})
    if interactions is not None and len(interactions):
        logged = interactions[["user_id", "clicked"]].merge(groups, on="user_id", how="left")
        logged[attribute] = logged[attribute].fillna(UNKNOWN).astype(str)
        ctr = logged.groupby(attribute).agg(impressions=("clicked", "size"), clicks=("clicked", "sum"))
        ctr["ctr"] = ctr["clicks"] / ctr["impressions"]
        table = table.join(ctr, how="outer")
    table = table.reset_index().rename(columns={attribute: "group"})
    table["n_users"] = table["n_users"].fillna(0).astype(int)
    return table.sort_values("group").reset_index(drop=True)


def largest_gap(table: pd.DataFrame, attribute: str, metric: str, min_users: int = 1) -> Gap | None:
    """Best minus worst group on ``metric`` among groups with at least ``min_users`` evaluated users."""
    eligible = table[(table["n_users"] >= min_users) & table[metric].notna()]
    if len(eligible) < 2:
        return None
    high = eligible.loc[eligible[metric].idxmax()]
    low = eligible.loc[eligible[metric].idxmin()]
    return Gap(
        attribute, metric, str(high["group"]), float(high[metric]), str(low["group"]), float(low[metric])
    )


def exposure_by_group(
    recs: pd.DataFrame,
    items: pd.DataFrame,
    k: int,
    relevant: pd.DataFrame | None = None,
    attribute: str = CREATOR_ATTRIBUTE,
) -> pd.DataFrame:
    """Per creator group: top-k slots, share of them, share of the catalog and of the relevant items."""
    groups = items[["item_id", attribute]].drop_duplicates("item_id").copy()
    groups[attribute] = groups[attribute].fillna(UNKNOWN).astype(str)
    shown = top_k(recs, k)[["item_id"]].merge(groups, on="item_id", how="left").fillna({attribute: UNKNOWN})
    table = pd.DataFrame(
        {
            "exposure_slots": shown.groupby(attribute).size(),
            "catalog_items": groups.groupby(attribute).size(),
        }
    ).fillna(0)
    if relevant is not None:
        rel = relevant[["user_id", "item_id"]].drop_duplicates().merge(groups, on="item_id", how="left")
        table["relevant_pairs"] = rel.fillna({attribute: UNKNOWN}).groupby(attribute).size()
    table = table.fillna(0).astype(int)
    table["exposure_share"] = table["exposure_slots"] / max(int(table["exposure_slots"].sum()), 1)
    table["catalog_share"] = table["catalog_items"] / max(int(table["catalog_items"].sum()), 1)
    table["gap_vs_catalog"] = table["exposure_share"] - table["catalog_share"]
    if relevant is not None:
        table["relevant_share"] = table["relevant_pairs"] / max(int(table["relevant_pairs"].sum()), 1)
        table["gap_vs_relevant"] = table["exposure_share"] - table["relevant_share"]
    return table.reset_index(names="group").sort_values("group").reset_index(drop=True)


def exposure_gap(exposure: pd.DataFrame, k: int, attribute: str = CREATOR_ATTRIBUTE) -> ExposureGap:
    """The group with the largest |exposure share - catalog share| in an :func:`exposure_by_group` table."""
    row = exposure.loc[exposure["gap_vs_catalog"].abs().idxmax()]
    return ExposureGap(
        attribute, str(row["group"]), float(row["exposure_share"]), float(row["catalog_share"]), k
    )


def gini(values: Iterable[float]) -> float:
    """Gini coefficient of non-negative values: 0 when all equal, (n-1)/n when one value holds everything."""
    x = np.sort(np.asarray(list(values), dtype=float))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * x) / (n * x.sum()))


def item_exposure(recs: pd.DataFrame, items: pd.DataFrame, k: int) -> pd.Series:
    """Top-k slots per catalog item, zeros included (items outside the catalog are counted too)."""
    counts = top_k(recs, k)["item_id"].value_counts()
    catalog = pd.Index(items["item_id"].drop_duplicates())
    return counts.reindex(catalog.union(counts.index), fill_value=0)


def exposure_gini(recs: pd.DataFrame, items: pd.DataFrame, k: int) -> float:
    """Popularity bias: Gini of top-k exposure across the whole catalog (never-shown items count as 0)."""
    return gini(item_exposure(recs, items, k).to_numpy())


@dataclass
class FairnessResult:
    """Everything the fairness report shows and the check gates on."""

    k: int
    quality: dict[str, pd.DataFrame]
    ndcg_gaps: dict[str, Gap | None]
    ctr_gaps: dict[str, Gap | None]
    exposure: pd.DataFrame
    exposure_gap: ExposureGap
    gini: float
    items_exposed: int
    catalog_size: int
    ndcg_gap_threshold: float
    exposure_gap_threshold: float
    min_group_users: int
    mitigation: list = field(default_factory=list)  # list[rerank.MitigationComparison], filled by the report

    @property
    def worst_ndcg_gap(self) -> Gap | None:
        gaps = [g for g in self.ndcg_gaps.values() if g is not None]
        return max(gaps, key=lambda g: g.gap) if gaps else None

    @property
    def ndcg_ok(self) -> bool:
        worst = self.worst_ndcg_gap
        return worst is None or worst.gap <= self.ndcg_gap_threshold

    @property
    def exposure_ok(self) -> bool:
        return self.exposure_gap.gap <= self.exposure_gap_threshold

    @property
    def passed(self) -> bool:
        return self.ndcg_ok and self.exposure_ok

    def message(self) -> str:
        """Pass/fail with the gaps, the groups and the numbers."""
        worst = self.worst_ndcg_gap
        ndcg_part = (
            f"{worst.describe()} {'<=' if self.ndcg_ok else '>'} {fmt(self.ndcg_gap_threshold, 3)}"
            if worst
            else f"no two user groups with >= {self.min_group_users} evaluated users"
        )
        exposure_part = (
            f"{self.exposure_gap.describe()} {'<=' if self.exposure_ok else '>'} "
            f"{fmt(self.exposure_gap_threshold, 3)}"
        )
        verdict = "fairness OK" if self.passed else "fairness FAIL"
        return f"{verdict}: {ndcg_part}; {exposure_part}; exposure Gini {fmt(self.gini, 3)}"


def evaluate_fairness(
    recs: pd.DataFrame,
    relevant: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    k: int,
    ndcg_gap_threshold: float,
    exposure_gap_threshold: float,
    min_group_users: int = 1,
    interactions: pd.DataFrame | None = None,
    attributes: Sequence[str] = USER_ATTRIBUTES,
) -> FairnessResult:
    """Quality by user group, exposure by creator group and the Gini of exposure, gated by the thresholds."""
    quality = {
        a: quality_by_group(recs, relevant, users, a, k, interactions) for a in attributes if a in users
    }
    ndcg_gaps = {a: largest_gap(t, a, f"ndcg@{k}", min_group_users) for a, t in quality.items()}
    ctr_gaps = {
        a: largest_gap(t, a, "ctr", min_group_users) if "ctr" in t else None for a, t in quality.items()
    }
    exposure = exposure_by_group(recs, items, k, relevant)
    exposure_counts = item_exposure(recs, items, k)
    return FairnessResult(
        k=k,
        quality=quality,
        ndcg_gaps=ndcg_gaps,
        ctr_gaps=ctr_gaps,
        exposure=exposure,
        exposure_gap=exposure_gap(exposure, k),
        gini=gini(exposure_counts.to_numpy()),
        items_exposed=int((exposure_counts > 0).sum()),
        catalog_size=int(items["item_id"].nunique()),
        ndcg_gap_threshold=ndcg_gap_threshold,
        exposure_gap_threshold=exposure_gap_threshold,
        min_group_users=min_group_users,
    )
