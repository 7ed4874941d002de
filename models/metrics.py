"""Offline recommendation metrics as small pure functions over ranked lists, sets and arrays.

Conventions (shared by every model through ``models.evaluation``):

- Ranking metrics take a *ranked* list of item ids (best first) and the set of relevant items. They are
  full-ranking metrics: the list comes from ranking every catalog item the user had not engaged with before the
  evaluation window, never from a sample of negatives.
- A user whose relevant set is empty has no defined recall/NDCG/MRR/hit: the per-user functions return ``None``
  and :func:`mean_defined` leaves those users out of the mean (rather than counting them as 0 or 1).
- Ties: a ranked list is already an order, so ranking metrics have no ties to break; :func:`rank_by_score` turns
  scores into that order with a deterministic tie-break (higher score first, then lower item position), and
  :func:`auc` gives tied scores half credit (mid-ranks), which is the Mann-Whitney definition.
- Duplicates in a ranked list count once (the first occurrence), so a model cannot score a hit twice.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def _dedup(ranked: Sequence[Hashable], k: int) -> list[Hashable]:
    seen: set[Hashable] = set()
    out: list[Hashable] = []
    for item in ranked:
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def rank_by_score(item_ids: Sequence[Hashable], scores: Sequence[float] | np.ndarray) -> list[Hashable]:
    """Items ordered by descending score; equal scores keep their input order (a stable, documented tie-break)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [item_ids[i] for i in order]


def recall_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float | None:
    """Share of the relevant items found in the top k (``None`` when nothing is relevant)."""
    rel = set(relevant)
    if not rel:
        return None
    return sum(1 for item in _dedup(ranked, k) if item in rel) / len(rel)


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float | None:
    """Binary-relevance NDCG@k with log2 discounts; the ideal list puts min(k, |relevant|) hits first."""
    rel = set(relevant)
    if not rel:
        return None
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(_dedup(ranked, k)) if item in rel)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(rel))))
    return dcg / ideal


def mrr_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float | None:
    """Reciprocal rank of the first relevant item within the top k (0 when none is there)."""
    rel = set(relevant)
    if not rel:
        return None
    for rank, item in enumerate(_dedup(ranked, k)):
        if item in rel:
            return 1.0 / (rank + 1)
    return 0.0


def hit_rate_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float | None:
    """1 when at least one relevant item is in the top k, else 0."""
    rel = set(relevant)
    if not rel:
        return None
    return 1.0 if any(item in rel for item in _dedup(ranked, k)) else 0.0


def precision_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float | None:
    """Share of the top k that is relevant (divides by k even when fewer items were recommended)."""
    rel = set(relevant)
    if not rel:
        return None
    return sum(1 for item in _dedup(ranked, k) if item in rel) / k


def mean_defined(values: Iterable[float | None]) -> float:
    """Mean over the defined values (users with an empty relevant set are excluded); NaN when none is defined."""
    defined = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(defined)) if defined else float("nan")


def auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic with mid-ranks for ties; NaN when only one class is present."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()  # tied scores share their mean rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def catalog_coverage(rec_lists: Iterable[Sequence[Hashable]], n_items: int, k: int | None = None) -> float:
    """Share of the catalog that appears in at least one user's (top-k) list."""
    if n_items <= 0:
        return float("nan")
    shown: set[Hashable] = set()
    for recs in rec_lists:
        shown.update(recs[:k] if k else recs)
    return len(shown) / n_items


def item_self_information(item_counts: Mapping[Hashable, float], n_items: int) -> dict[Hashable, float]:
    """-log2 p(item) with Laplace-smoothed p = (count + 1) / (total + n_items), so unseen items stay finite."""
    total = float(sum(item_counts.values()))
    return {item: -math.log2((count + 1.0) / (total + n_items)) for item, count in item_counts.items()}


def novelty(
    rec_lists: Iterable[Sequence[Hashable]], item_counts: Mapping[Hashable, float], n_items: int
) -> float:
    """Mean self-information (-log2 popularity) of the recommended items; items absent from the counts count 0."""
    total = float(sum(item_counts.values()))
    unseen = -math.log2(1.0 / (total + n_items))
    info = item_self_information(item_counts, n_items)
    values = [info.get(item, unseen) for recs in rec_lists for item in recs]
    return float(np.mean(values)) if values else float("nan")


def intra_list_diversity(
    rec_lists: Iterable[Sequence[Hashable]], embeddings: Mapping[Hashable, np.ndarray]
) -> float:
    """Mean over lists of (1 - mean pairwise cosine similarity of item embeddings); lists of < 2 items skipped."""
    per_list: list[float] = []
    for recs in rec_lists:
        vecs = [embeddings[i] for i in recs if i in embeddings]
        if len(vecs) < 2:
            continue
        mat = np.asarray(vecs, dtype=np.float64)
        mat = mat / np.clip(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12, None)
        sim = mat @ mat.T
        n = len(vecs)
        mean_pairwise = (sim.sum() - np.trace(sim)) / (n * (n - 1))
        per_list.append(1.0 - mean_pairwise)
    return float(np.mean(per_list)) if per_list else float("nan")


def ranking_metrics(
    ranked: Sequence[Hashable], relevant: Iterable[Hashable], k_values: Iterable[int]
) -> dict[str, float | None]:
    """recall/ndcg/mrr/hit at every k for one user, keyed like ``ndcg@10``."""
    rel = set(relevant)
    out: dict[str, float | None] = {}
    for k in k_values:
        out[f"recall@{k}"] = recall_at_k(ranked, rel, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, rel, k)
        out[f"mrr@{k}"] = mrr_at_k(ranked, rel, k)
        out[f"hit@{k}"] = hit_rate_at_k(ranked, rel, k)
        out[f"precision@{k}"] = precision_at_k(ranked, rel, k)
    return out


def grouped_means(per_user: pd.DataFrame, group_col: str, metric_cols: Sequence[str]) -> pd.DataFrame:
    """Per-group means of per-user metrics (NaN = undefined users excluded) with the group's user count."""
    grouped = per_user.groupby(group_col, dropna=False)
    out = grouped[list(metric_cols)].mean()
    out.insert(0, "n_users", grouped.size())
    return out.reset_index().rename(columns={group_col: "group"})


def exposure_by_group(
    rec_lists: Mapping[Hashable, Sequence[Hashable]],
    relevant: Mapping[Hashable, Iterable[Hashable]],
    item_group: Mapping[Hashable, str],
    k: int,
) -> pd.DataFrame:
    """Per item group: share of recommended top-k slots (exposure), share of the catalog, and precision of its slots."""
    slots: dict[str, int] = {}
    hits: dict[str, int] = {}
    for user, recs in rec_lists.items():
        rel = set(relevant.get(user, ()))
        for item in _dedup(recs, k):
            group = item_group.get(item, "unknown")
            slots[group] = slots.get(group, 0) + 1
            hits[group] = hits.get(group, 0) + (item in rel)
    catalog = pd.Series(item_group).value_counts()
    total_slots = sum(slots.values())
    groups = sorted(set(catalog.index) | set(slots))
    return pd.DataFrame(
        {
            "group": groups,
            "exposure_share": [
                slots.get(g, 0) / total_slots if total_slots else float("nan") for g in groups
            ],
            "catalog_share": [catalog.get(g, 0) / max(len(item_group), 1) for g in groups],
            f"precision@{k}": [hits.get(g, 0) / slots[g] if slots.get(g) else float("nan") for g in groups],
        }
    )
