"""Readable interest profiles (category/tag weights, TF-IDF keywords, style) from a time-ordered history.

The shape is shared by generation (prompt conditioning), explanations and serving.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.recdata import RecData, split_list
from models.settings import ProfileSettings
from models.text import tokenize


@dataclass(frozen=True)
class InterestProfile:
    """What a user is into, in words, with weights that sum to 1 within each list.

    Produced by :func:`build_interest_profile` from a time-ordered history (or from declared attributes for cold-start
    users); read by ``models.generation`` (prompt conditioning, personalization metric) and by the service
    (explanations).
    """

    user_id: str
    top_categories: list[tuple[str, float]] = field(default_factory=list)
    top_tags: list[tuple[str, float]] = field(default_factory=list)
    keywords: list[tuple[str, float]] = field(default_factory=list)
    preferred_style: str = "concise"
    n_events: int = 0
    cold_start: bool = False

    @property
    def segment(self) -> str:
        """A coarse key (style + top two categories) that generation caches on."""
        cats = "+".join(sorted(c for c, _ in self.top_categories[:2])) or "none"
        return f"{self.preferred_style}:{cats}"

    def interest_terms(self, n: int = 5) -> list[str]:
        """The user's strongest interests as plain words (categories first, then tags and keywords)."""
        terms: list[str] = []
        for name, _ in [*self.top_categories, *self.top_tags, *self.keywords]:
            if name not in terms:
                terms.append(name)
        return terms[:n]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterestProfile:
        return cls(
            user_id=str(data["user_id"]),
            top_categories=[(str(a), float(b)) for a, b in data.get("top_categories", [])],
            top_tags=[(str(a), float(b)) for a, b in data.get("top_tags", [])],
            keywords=[(str(a), float(b)) for a, b in data.get("keywords", [])],
            preferred_style=str(data.get("preferred_style") or "concise"),
            n_events=int(data.get("n_events", 0)),
            cold_start=bool(data.get("cold_start", False)),
        )


# A keyword must say what a reader is into: a term spread over the catalog's categories as evenly as the items
# themselves ("matters", "ever" of a headline pattern, "percent", "film" of every movie) is not an interest.
KEYWORD_MIN_TOPICALITY = ProfileSettings.model_fields["keyword_min_topicality"].default
KEYWORD_TOPICALITY_MIN_DF = 5


def _item_terms(items: pd.DataFrame) -> list[set[str]]:
    """Each item's distinct title+body terms."""
    return [set(tokenize(t)) | set(tokenize(b)) for t, b in zip(items["title"], items["body"], strict=True)]


def topicality(
    items: pd.DataFrame, min_df: int = KEYWORD_TOPICALITY_MIN_DF, terms: list[set[str]] | None = None
) -> dict[str, float]:
    """How much a title+body term concentrates in one category: max over categories of P(category | term) / P(category).

    1.0 means the term's items are spread over the categories like the catalog's (a word of the catalog's
    phrasing, not of a topic); a term of one of C equally large categories scores about C. Only terms in at
    least ``min_df`` items are scored (fewer are too few to tell, and are specific anyway); a catalog without
    a ``category`` column, or with a single category, scores nothing. ``terms``: the items' term sets when
    the caller has them (:func:`compute_idf`), so the catalog is tokenized once.
    """
    if "category" not in items.columns:
        return {}
    categories = items["category"].astype(object).where(items["category"].notna(), None)
    prior = categories.value_counts(normalize=True)
    if len(prior) < 2:
        return {}
    by_term: dict[str, Counter[str]] = {}
    for item_terms, category in zip(terms or _item_terms(items), categories, strict=True):
        if category is None:
            continue
        for term in item_terms:
            by_term.setdefault(term, Counter())[category] += 1
    out: dict[str, float] = {}
    for term, counts in by_term.items():
        total = sum(counts.values())
        if total >= min_df:
            out[term] = max(count / total / prior[c] for c, count in counts.items())
    return out


def compute_idf(
    items: pd.DataFrame,
    min_topicality: float | None = KEYWORD_MIN_TOPICALITY,
    min_df: int = KEYWORD_TOPICALITY_MIN_DF,
) -> dict[str, float]:
    """Smoothed inverse document frequency of title+body terms over the catalog; 0 for terms that are not topical.

    A term whose :func:`topicality` is below ``min_topicality`` gets weight 0, so it never becomes a keyword
    (None keeps every term).
    """
    terms = _item_terms(items)
    df: Counter[str] = Counter()
    for item_terms in terms:
        df.update(item_terms)
    n = len(items)
    idf = {term: math.log((1 + n) / (1 + count)) + 1.0 for term, count in df.items()}
    if min_topicality is not None:
        for term, score in topicality(items, min_df, terms).items():
            if score < min_topicality:
                idf[term] = 0.0
    return idf


History = (
    pd.DataFrame | Mapping[str, Any]
)  # a frame, or its columns as arrays (what serving builds per request)


def history_length(history: History | None) -> int:
    """Rows of a history given as a frame or as a mapping of equal-length columns."""
    if history is None:
        return 0
    if isinstance(history, pd.DataFrame):
        return len(history)
    return len(history["category"]) if "category" in history else len(next(iter(history.values()), ()))


def event_weights(
    history: History, now: pd.Timestamp | None = None, half_life_days: float = 7.0
) -> np.ndarray:
    """Weight per history event: recency half-life decay x (1 + log dwell / 4) x (rating / 3 when rated)."""
    raw = history["event_ts"]
    if isinstance(raw, np.ndarray) and raw.dtype.kind == "M":
        # datetime64 columns (serving's per-request arrays): numpy's timedelta / 1 day is the same float as
        # pandas' and costs microseconds instead of a fifth of a millisecond
        now64 = pd.Timestamp(now).to_datetime64() if now is not None else raw.max()
        age_days = np.clip((now64 - raw) / np.timedelta64(1, "D"), 0, None)
    else:
        ts = pd.to_datetime(raw)
        now = pd.Timestamp(now) if now is not None else ts.max()
        age_days = np.clip(((now - ts) / pd.Timedelta(days=1)).to_numpy(dtype=float), 0, None)
    recency = 0.5 ** (age_days / half_life_days)
    n = len(age_days)
    dwell_s = np.asarray(history["dwell_seconds"], dtype=float) if "dwell_seconds" in history else np.zeros(n)
    dwell = 1.0 + np.log1p(np.clip(np.where(np.isnan(dwell_s), 0.0, dwell_s), 0, None)) / 4.0
    rating = np.asarray(history["rating"], dtype=float) if "rating" in history else np.full(n, np.nan)
    rating_factor = np.where(np.isnan(rating), 1.0, rating / 3.0)
    return recency * dwell * rating_factor


def _top_normalized(weights: Mapping[str, float], top_k: int) -> list[tuple[str, float]]:
    top = sorted(((k, w) for k, w in weights.items() if w > 0), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    total = sum(w for _, w in top)
    return [(name, round(float(w / total), 4)) for name, w in top] if total > 0 else []


def build_interest_profile(
    user_id: str,
    history_items_df: History | None,
    user_row: Mapping[str, Any] | pd.Series | None,
    top_k: int = 5,
    *,
    idf: Mapping[str, float] | None = None,
    now: pd.Timestamp | None = None,
    half_life_days: float = 7.0,
    n_keywords: int | None = None,
) -> InterestProfile:
    """Category/tag weights and keywords from a history joined with item features; declared interests when empty.

    ``history_items_df`` has one row per engagement: item_id, event_ts, dwell_seconds, rating, title, body,
    category, tags (a frame, or a mapping of those columns as arrays). Weights decay with recency and grow with dwell and rating; keywords are weighted term
    frequencies times the catalog IDF (``compute_idf``), so words every item uses do not dominate.
    """
    row = dict(user_row) if user_row is not None else {}
    style = row.get("preferred_style")
    style = str(style) if style is not None and not pd.isna(style) else "concise"
    if history_length(history_items_df) == 0:
        declared = split_list(row.get("declared_interests"))
        share = round(1.0 / len(declared), 4) if declared else 0.0
        return InterestProfile(
            user_id=user_id,
            top_categories=[(c, share) for c in declared[:top_k]],
            preferred_style=style,
            n_events=0,
            cold_start=True,
        )
    weights = event_weights(history_items_df, now, half_life_days)
    categories: dict[str, float] = {}
    tags: dict[str, float] = {}
    terms: dict[str, float] = {}
    for w, cat, tag_str, title, body in zip(
        weights,
        history_items_df["category"],
        history_items_df["tags"],
        history_items_df["title"],
        history_items_df["body"],
        strict=True,
    ):
        if cat is not None and not pd.isna(cat):
            categories[str(cat)] = categories.get(str(cat), 0.0) + w
        for tag in split_list(tag_str):
            tags[tag] = tags.get(tag, 0.0) + w
        tokens = tokenize(title) * 2 + tokenize(
            body
        )  # a title word says more about the item than a body word
        for term, count in Counter(tokens).items():
            terms[term] = terms.get(term, 0.0) + w * count / max(len(tokens), 1)
    if idf is not None:
        default_idf = max(idf.values(), default=1.0)
        terms = {t: v * idf.get(t, default_idf) for t, v in terms.items()}
    return InterestProfile(
        user_id=user_id,
        top_categories=_top_normalized(categories, top_k),
        top_tags=_top_normalized(tags, top_k),
        keywords=_top_normalized(terms, n_keywords or top_k),
        preferred_style=style,
        n_events=history_length(history_items_df),
        cold_start=False,
    )


def build_interest_profiles(
    data: RecData,
    user_ids: Iterable[str] | None = None,
    top_k: int = 5,
    n_keywords: int = 8,
    min_topicality: float | None = KEYWORD_MIN_TOPICALITY,
) -> dict[str, InterestProfile]:
    """Profiles for many users from ``data``'s histories (the whole view) and user rows."""
    idf = compute_idf(data.items, min_topicality)
    item_cols = data.items[["item_id", "title", "body", "category", "tags"]]
    joined = data.histories.merge(item_cols, on="item_id", how="left")
    by_user = dict(tuple(joined.groupby("user_id", sort=False)))
    rows = data.user_rows()
    users = list(user_ids) if user_ids is not None else list(rows)
    empty = joined.iloc[0:0]
    return {
        u: build_interest_profile(
            u, by_user.get(u, empty), rows.get(u), top_k, idf=idf, now=data.now, n_keywords=n_keywords
        )
        for u in users
    }
