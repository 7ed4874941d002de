"""The recommender as evaluated and as served.

- :class:`TwoTowerRecommender`: retrieval only (two-tower dot product over the whole catalog).
- :class:`FullStackModel`: two-tower + popular + fresh candidates -> deep ranker (+ weighted two-tower logit)
  -> MMR. Both follow the baselines' surface (``fit(view)``, ``score``, ``recommend``).
- :class:`Recommender`: the facade the BentoML service and the generation stage use. ``Recommender.load``
  reads the champion ``full_stack`` artifact of the registry (profile model, ranker, item table, text
  embeddings, popularity, the history snapshot and the rated items never recommended back) — no DuckDB access,
  so serving never waits on the pipeline's warehouse lock. Requests may add recent item ids to a user's stored
  history, or send only a history.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from models import metrics
from models.history import HistoryStore, HistoryWindows, to_hours
from models.interests import InterestProfile, build_interest_profile, compute_idf
from models.ranking.blended_ranker import BlendedStackedRanker, ListRanker, load_stacked_ranker
from models.ranking.gbdt_ranker import train_gbdt_ranker
from models.ranking.pair_features import (
    TWO_TOWER_FEATURE,
    PairContext,
    PairInputs,
    build_pair_inputs,
    pair_inputs_from_arrays,
)
from models.ranking.pair_ranker import Ranker
from models.ranking.rerank import FairnessRerank, mmr_rerank
from models.ranking.stack_features import (
    StackExamples,
    build_stack_examples,
    concat_examples,
    group_share,
    point_in_time_item_features,
)
from models.ranking.stacked_ranker import train_stacked_ranker
from models.recdata import MART_COLUMNS, RecData, exclusion_lists, split_list
from models.retrieval.baselines import (
    BaseRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RecentEASERecommender,
    recency_popularity,
)
from models.retrieval.candidates import CandidateSource, FreshPopularity, generate_candidates, window_relevant
from models.retrieval.index import SOURCE_FRESH, SOURCE_POPULAR, RetrievalIndex
from models.retrieval.transitions import TransitionRecommender
from models.retrieval.two_tower import ColdStart, TwoTowerRetriever, user_vectors_at
from models.settings import ProfileSettings, RetrievalSettings, Settings

log = logging.getLogger(__name__)


def _with_default(values: np.ndarray, default: float) -> np.ndarray:
    """``values`` with NaN as ``default`` and one more ``default`` at the end (the row -1 of unknown keys)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), default, values)
    return np.append(values, np.asarray(default, dtype=values.dtype))


SERVING_MAX_USERS = 64  # rank_candidates calls up to this many users are serving's micro-batches
SERVING_SCORE_BATCH = 512  # pairs per ranker pass there
QUERY_DELAY_HOURS = 1.0 / 3600  # histories are read strictly before the query time: query 1 s after "now"
ANONYMOUS = "__anonymous__"


class TwoTowerRecommender(BaseRecommender):
    """Retrieval only: the profile model's user vector against every item vector."""

    name = "two_tower"

    def __init__(self, encoder: TwoTowerRetriever, cold_interest_weight: float = 0.7) -> None:
        super().__init__()
        self.encoder = encoder
        self.cold_interest_weight = cold_interest_weight

    def _fit(self, view: RecData) -> None:
        pass  # the weights are the encoder's (trained by train_profile_model); the rest is per-view state

    def _observe(self, view: RecData) -> None:
        self.space = self.encoder.catalog_space(view.items, view.item_text)
        self.store = HistoryStore.from_frame(view.histories, view.item_index)
        categories = view.items["category"].fillna("").to_numpy(dtype=object)
        self.cold = ColdStart.from_users(view.users, categories, self.popularity, self.cold_interest_weight)
        self.query_hours = to_hours([view.now])[0] + QUERY_DELAY_HOURS

    def user_vectors(self, user_ids: list[str]) -> torch.Tensor:
        """Profile-model vectors of ``user_ids`` as of the view's end (cold start for users without history)."""
        hours = np.full(len(user_ids), self.query_hours)
        return user_vectors_at(self.encoder, self.store, user_ids, hours, self.space.vecs, self.cold)[0]

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        return self.space.logits(self.user_vectors(user_ids)).float().cpu()

    def for_store(self, store: HistoryStore, user_ids: Sequence[str]) -> TwoTowerRecommender:
        """The same encoder reading histories from ``store`` (a request's)."""
        clone = copy.copy(self)
        clone.store = store
        return clone


@dataclass
class RankedCandidates:
    """One user's candidates with both logits and their retrieval sources."""

    items: np.ndarray
    ranker_logit: np.ndarray
    retrieval_logit: np.ndarray
    sources: list[str]

    def combined(self, retrieval_weight: float) -> np.ndarray:
        return self.ranker_logit + retrieval_weight * self.retrieval_logit


class FullStackModel:
    """Retrieval (two-tower + popular + fresh) -> deep ranker (+ weighted retrieval logit) -> MMR."""

    name = "full_stack"

    def __init__(
        self, encoder: TwoTowerRetriever, ranker: Ranker, retrieval: RetrievalSettings, mmr_lambda: float,
        retrieval_weight: float = 1.0, cold_interest_weight: float = 0.7,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.ranker = ranker
        self.retrieval = retrieval
        self.mmr_lambda = mmr_lambda
        self.retrieval_weight = retrieval_weight
        self.cold_interest_weight = cold_interest_weight

    # --- state as of a cutoff -----------------------------------------------------------------------------
    def fit(self, view: RecData) -> FullStackModel:
        """Index the view: catalog vectors, histories, popularity and the point-in-time counts at ``view.now``."""
        inter = view.interactions
        user_counts = inter.groupby("user_id").agg(impressions=("clicked", "size"), clicks=("clicked", "sum"))
        item_counts = inter.groupby("item_id").agg(impressions=("clicked", "size"), clicks=("clicked", "sum"))
        items = view.items.copy()
        items["snapshot_impressions"] = items["item_id"].map(item_counts["impressions"]).fillna(0).to_numpy()
        items["snapshot_clicks"] = items["item_id"].map(item_counts["clicks"]).fillna(0).to_numpy()
        items["snapshot_popularity"] = view.item_popularity()
        items["snapshot_recent_popularity"] = recency_popularity(
            view, self.retrieval.popularity_half_life_days
        )
        users = view.users.copy()
        users["snapshot_impressions"] = users["user_id"].map(user_counts["impressions"]).fillna(0).to_numpy()
        users["snapshot_clicks"] = users["user_id"].map(user_counts["clicks"]).fillna(0).to_numpy()
        rated = inter.loc[inter["rating"].notna(), ["user_id", "item_id"]].drop_duplicates()
        self._set_state(items, view.item_text, users, view.histories, view.now, rated)
        return self

    def _set_state(
        self,
        items: pd.DataFrame,
        item_text: np.ndarray,
        users: pd.DataFrame,
        histories: pd.DataFrame,
        now: pd.Timestamp,
        rated: pd.DataFrame | None = None,
    ) -> None:
        self.items = items.reset_index(drop=True)
        self.item_ids = self.items["item_id"].to_numpy()
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.item_text = np.asarray(item_text, dtype=np.float32)
        self.users = users.reset_index(drop=True)
        self.user_index = set(self.users["user_id"])
        self.histories = histories.reset_index(drop=True)
        # rated items, clicked or not (MovieLens ratings below the click threshold): never recommended back
        self.rated = (
            rated.reset_index(drop=True)
            if rated is not None
            else pd.DataFrame({"user_id": [], "item_id": []})
        )
        rated_idx = np.asarray([self.item_index.get(i, -1) for i in self.rated["item_id"]], dtype=np.int64)
        self._rated = {
            user: np.unique(rated_idx[rows][rated_idx[rows] >= 0])
            for user, rows in self.rated.groupby("user_id", sort=False).indices.items()
        }
        self.now = pd.Timestamp(now)
        self.query_hours = to_hours([self.now])[0] + QUERY_DELAY_HOURS
        self.store = HistoryStore.from_frame(self.histories, self.item_index)
        self.space = self.encoder.catalog_space(self.items, self.item_text)
        published_hours = to_hours(self.items["published_at"])
        self.index = RetrievalIndex(
            space=self.space,
            popularity=self.items["snapshot_recent_popularity"].to_numpy(float),
            published_hours=np.nan_to_num(published_hours, nan=-np.inf),
            ann_threshold_items=self.retrieval.ann_threshold_items,
            ann_target_recall=self.retrieval.ann_target_recall,
        )
        self.ranker.set_catalog(self.items, self.space.vecs)
        categories = self.items["category"].fillna("").to_numpy(dtype=object)
        self.popularity = self.items["snapshot_popularity"].to_numpy(float)
        self.cold = ColdStart.from_users(self.users, categories, self.popularity, self.cold_interest_weight)
        self.ctx = PairContext(
            self.encoder, self.store, self.space, categories, published_hours, self.cold, self.users
        )
        self.unpublished = np.flatnonzero((self.items["published_at"] >= self.now).fillna(False).to_numpy())
        norms = np.linalg.norm(self.item_text, axis=1, keepdims=True)
        self.text_vecs = self.item_text / np.clip(norms, 1e-12, None)  # unit vectors for MMR
        self._user_counts = self.users.set_index("user_id")[["snapshot_impressions", "snapshot_clicks"]]
        # per-row arrays for the serving path (rank_candidates): a request looks its user up by position
        # instead of joining pandas frames; unknown users (row -1) read the zero slot / zero counts at the end
        self._user_row = {str(u): i for i, u in enumerate(self.users["user_id"])}
        self._user_arrays = {
            "impressions": _with_default(self.users["snapshot_impressions"].to_numpy(np.float64), 0.0),
            "clicks": _with_default(self.users["snapshot_clicks"].to_numpy(np.float64), 0.0),
            "user_group": _with_default(self.ranker.slot("user_group", self.users["user_group"]), 0),
            "region": _with_default(self.ranker.slot("region", self.users["region"]), 0),
        }
        self._item_counts = (
            self.items["snapshot_impressions"].to_numpy(np.float64),
            self.items["snapshot_clicks"].to_numpy(np.float64),
        )

    def exclusions(
        self, user_ids: Sequence[str], store: HistoryStore | None = None, exclude_seen: bool = True
    ) -> list[np.ndarray]:
        """Unpublished items always; the user's engaged and rated items when ``exclude_seen``."""
        store = store or self.store
        empty = np.zeros(0, dtype=np.int64)
        history = (
            {u: np.union1d(store.user_items(u), self._rated.get(u, empty)) for u in user_ids}
            if exclude_seen
            else {}
        )
        return exclusion_lists(history, self.unpublished, user_ids)

    # --- scoring --------------------------------------------------------------------------------------------
    def _pairs(self, user_ids: Sequence[str], items_per_user: list[np.ndarray]) -> pd.DataFrame:
        lengths = [len(c) for c in items_per_user]
        users = np.repeat(np.asarray(user_ids, dtype=object), lengths)
        cand = np.concatenate(items_per_user) if items_per_user else np.zeros(0, dtype=np.int64)
        counts = self._user_counts.reindex(users)
        return pd.DataFrame(
            {
                "user_id": users,
                "item_idx": cand,
                "hours": self.query_hours,
                "position": 0,
                "user_prior_impressions": counts["snapshot_impressions"].fillna(0).to_numpy(),
                "user_prior_clicks": counts["snapshot_clicks"].fillna(0).to_numpy(),
                "item_prior_impressions": self.items["snapshot_impressions"].to_numpy()[cand],
                "item_prior_clicks": self.items["snapshot_clicks"].to_numpy()[cand],
            }
        )

    def _pair_inputs(
        self,
        user_ids: Sequence[str],
        items_per_user: list[np.ndarray],
        ctx: PairContext,
        state: tuple[torch.Tensor, HistoryWindows],
    ) -> PairInputs:
        """Ranker inputs of each user's candidates at the query time, from per-row arrays (what ``_pairs`` +
        :func:`build_pair_inputs` compute with frames; ``test_recommender_fast_path`` checks they agree)."""
        lengths = [len(c) for c in items_per_user]
        codes = np.repeat(np.arange(len(user_ids)), lengths)
        cand = np.concatenate(items_per_user) if items_per_user else np.zeros(0, dtype=np.int64)
        rows = np.asarray([self._user_row.get(str(u), -1) for u in user_ids], dtype=np.int64)[codes]
        arrays = self._user_arrays
        return pair_inputs_from_arrays(
            ctx, cand, np.full(len(cand), self.query_hours), (codes, *state),
            user_counts=(arrays["impressions"][rows], arrays["clicks"][rows]),
            item_counts=(self._item_counts[0][cand], self._item_counts[1][cand]),
            user_group=arrays["user_group"][rows], region=arrays["region"][rows],
        )  # fmt: skip

    def rank_candidates(
        self,
        user_ids: Sequence[str],
        store: HistoryStore | None = None,
        exclusions: list[np.ndarray] | None = None,
    ) -> list[RankedCandidates]:
        """Candidates of each user with ranker and retrieval logits (``store`` overrides the snapshot histories)."""
        store = store or self.store
        user_ids = list(user_ids)
        exclusions = exclusions if exclusions is not None else self.exclusions(user_ids, store)
        hours = np.full(len(user_ids), self.query_hours)
        user_vecs, windows = user_vectors_at(self.encoder, store, user_ids, hours, self.space.vecs, self.cold)
        cands = self.index.candidates(
            user_vecs,
            exclusions,
            self.retrieval.n_candidates,
            self.retrieval.n_popular,
            self.retrieval.n_fresh,
        )
        ctx = self.ctx if store is self.store else replace(self.ctx, store=store)
        inputs = self._pair_inputs(user_ids, cands.items, ctx, (user_vecs, windows))
        # serving's micro-batches: pairs grouped by history length in chunks of SERVING_SCORE_BATCH, so short
        # histories are not padded to the longest one of the batch (16 users of the 100k world: 21-24 ms against
        # 42 ms in one pass); larger calls (evaluation) keep the ranker's default batching
        small = len(user_ids) <= SERVING_MAX_USERS
        logits = self.ranker.score(inputs, SERVING_SCORE_BATCH) if small else self.ranker.score(inputs)
        out, start = [], 0
        for row in range(len(user_ids)):
            n = len(cands.items[row])
            out.append(
                RankedCandidates(
                    items=cands.items[row],
                    ranker_logit=logits[start : start + n],
                    retrieval_logit=inputs.dense[start : start + n, TWO_TOWER_FEATURE],
                    sources=cands.sources[row],
                )
            )
            start += n
        return out

    def finalize(
        self, ranked: RankedCandidates, k: int, retrieval_weight: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-k (items, scores, sources) after combining logits and MMR on the text embeddings."""
        weight = self.retrieval_weight if retrieval_weight is None else retrieval_weight
        scores = ranked.combined(weight)
        picked = mmr_rerank(ranked.items, scores, self.text_vecs, k, self.mmr_lambda)
        pos = {int(item): i for i, item in enumerate(ranked.items)}
        rows = [pos[int(i)] for i in picked]
        return picked, scores[rows], [ranked.sources[r] for r in rows]

    def recommend(
        self,
        user_ids: list[str],
        k: int,
        exclude_seen: bool = True,
        retrieval_weight: float | None = None,
        batch_size: int = 256,
    ) -> dict[str, list[str]]:
        """Top-k item ids per user (cold-start users get declared-interest and popular candidates)."""
        out: dict[str, list[str]] = {}
        for s in range(0, len(user_ids), batch_size):
            users = list(user_ids[s : s + batch_size])
            ranked = self.rank_candidates(users, exclusions=self.exclusions(users, exclude_seen=exclude_seen))
            for user, cand in zip(users, ranked, strict=True):
                out[user] = self.item_ids[self.finalize(cand, k, retrieval_weight)[0]].tolist()
        return out

    def score(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
        """Combined ranker + weighted retrieval logit of each (user, item) pair (no MMR: that is list-level)."""
        cand = np.asarray([self.item_index.get(i, -1) for i in item_ids], dtype=np.int64)
        known = cand >= 0
        out = np.full(len(item_ids), np.nan)
        if known.any():
            users = list(np.asarray(user_ids, dtype=object)[known])
            inputs = build_pair_inputs(
                self._pairs(users, [np.asarray([c]) for c in cand[known]]), self.ctx, self.ranker
            )
            out[known] = (
                self.ranker.score(inputs) + self.retrieval_weight * inputs.dense[:, TWO_TOWER_FEATURE]
            )
        return out

    # --- persistence --------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write everything serving needs: both models, the item and user tables, embeddings and histories."""
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save(path / "profile")
        self.ranker.save(path / "ranker")
        self.items.to_parquet(path / "items.parquet")
        np.save(path / "item_text.npy", self.item_text)
        self.users.to_parquet(path / "users.parquet")
        keep = ["user_id", "item_id", "event_ts", "split", "seq", "dwell_seconds", "rating"]
        self.histories[[c for c in keep if c in self.histories]].to_parquet(path / "histories.parquet")
        self.rated.astype({"user_id": str, "item_id": str}).to_parquet(path / "rated.parquet")
        (path / "stack.json").write_text(
            json.dumps(
                {
                    "now": self.now.isoformat(),
                    "retrieval": self.retrieval.model_dump(),
                    "mmr_lambda": self.mmr_lambda,
                    "retrieval_weight": self.retrieval_weight,
                    "cold_interest_weight": self.cold_interest_weight,
                }
            )
        )

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> FullStackModel:
        """Load what :meth:`save` wrote."""
        config = json.loads((path / "stack.json").read_text())
        model = cls(
            TwoTowerRetriever.load(path / "profile", device),
            Ranker.load(path / "ranker", device),
            RetrievalSettings(**config["retrieval"]),
            config["mmr_lambda"],
            config["retrieval_weight"],
            config["cold_interest_weight"],
        )
        histories = pd.read_parquet(path / "histories.parquet")
        histories["event_ts"] = pd.to_datetime(histories["event_ts"])
        items = pd.read_parquet(path / "items.parquet")
        items["published_at"] = pd.to_datetime(items["published_at"])
        model._set_state(
            items,
            np.load(path / "item_text.npy"),
            pd.read_parquet(path / "users.parquet"),
            histories,
            pd.Timestamp(config["now"]),
            # artifacts saved before rated items were kept have none
            pd.read_parquet(path / "rated.parquet") if (path / "rated.parquet").exists() else None,
        )
        return model


@dataclass(frozen=True)
class ScoredItem:
    """One recommendation as the service returns it."""

    item_id: str
    score: float
    title: str
    category: str
    reason: str


_PROFILE_ITEM_COLUMNS = ("item_id", "title", "body", "category", "tags")  # what profiles and reasons read

_REASON_TEMPLATES = {
    "concise": {"interest": "Matches your interest in {what}.", "popular": "Popular now.", "fresh": "Just published.", "default": "Picked for you."},
    "casual": {"interest": "You're into {what}, so this one's for you!", "popular": "Everyone's reading this right now.", "fresh": "Hot off the press.", "default": "We think you'll like this."},
    "formal": {"interest": "Recommended because of your interest in {what}.", "popular": "Currently among the most read items.", "fresh": "Recently published.", "default": "Selected on the basis of your reading history."},
    "enthusiastic": {"interest": "Love {what}? You'll love this!", "popular": "This is trending right now!", "fresh": "Brand new - read it first!", "default": "A great pick for you!"},
}  # fmt: skip


class Recommender:
    """Serving facade over a fitted :class:`FullStackModel` (see the module docstring).

    ``fairness`` (from ``monitoring.fairness_rerank``) re-ranks every served top k across creator groups.
    """

    def __init__(
        self, model: FullStackModel, max_history_items: int = 500, fairness: FairnessRerank | None = None
    ) -> None:
        self.model = model
        self.max_history_items = max_history_items
        self.fairness = fairness
        profile_settings = model.encoder.cfg if model.encoder is not None else ProfileSettings()
        self.idf = compute_idf(model.items, profile_settings.keyword_min_topicality)
        self._items = model.items.set_index("item_id", drop=False)
        self._user_cols = {c: model.users[c].to_numpy(dtype=object) for c in model.users.columns}
        self._history_rows = model.histories.groupby("user_id").indices
        # per-row arrays, so a request's profile and answer read rows by position instead of joining the
        # catalog (a pandas merge with every item per request); the last slot of each item column is the
        # missing value a left join gives for an item outside the catalog
        hist = model.histories
        self._hist = {
            "item": np.asarray([model.item_index.get(i, -1) for i in hist["item_id"]], dtype=np.int64),
            "item_id": hist["item_id"].to_numpy(dtype=object),
            "event_ts": pd.to_datetime(hist["event_ts"]).to_numpy(),
            "dwell_seconds": hist["dwell_seconds"].to_numpy(np.float64)
            if "dwell_seconds" in hist
            else np.zeros(len(hist)),
            "rating": hist["rating"].to_numpy(np.float64) if "rating" in hist else np.full(len(hist), np.nan),
        }
        self._item_cols = {
            c: np.append(model.items[c].to_numpy(dtype=object), np.nan) for c in _PROFILE_ITEM_COLUMNS
        }

    @classmethod
    def load(cls, settings: Settings) -> Recommender:
        """The champion ``full_stack`` artifact of the registry, on ``settings.resolved_device``."""
        from models.registry import ModelRegistry

        artifact = ModelRegistry.from_settings(settings).load_champion("full_stack")
        return cls.from_settings(load_full_stack(artifact.path, settings.resolved_device), settings)

    @classmethod
    def from_settings(cls, model: FullStackModel, settings: Settings) -> Recommender:
        """The facade over ``model`` with the serving limits and fairness re-ranking of ``settings``."""
        return cls(
            model,
            settings.serving.max_history_items,
            FairnessRerank.from_settings(model.items, model.item_ids, settings),
        )

    def top_k(self, ranked: RankedCandidates, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The served top k (items, scores, sources): the model's, re-ranked for exposure when ``fairness`` is set."""
        if self.fairness is None:
            return self.model.finalize(ranked, k)
        items, scores, sources = self.model.finalize(ranked, k * self.fairness.depth)
        pick = self.fairness.top_k(items, scores, k)
        return items[pick], scores[pick], [sources[i] for i in pick]

    def known_user(self, user_id: str) -> bool:
        """Whether the user is in the snapshot's user table."""
        return user_id in self.model.user_index

    def known_item(self, item_id: str) -> bool:
        """Whether the item is in the snapshot's catalog."""
        return item_id in self.model.item_index

    def item(self, item_id: str) -> dict[str, object]:
        """The catalog row of an item."""
        return self._items.loc[item_id].to_dict()

    def item_row(self, position: int) -> dict[str, object]:
        """What an answer and its reason read of the catalog row at ``position`` (id, title, body, category, tags)."""
        return {c: self._item_cols[c][position] for c in _PROFILE_ITEM_COLUMNS}

    def _request_store(
        self, user_id: str | None, history_item_ids: Sequence[str] | None
    ) -> tuple[str, HistoryStore]:
        """The user's stored history plus the request's recent items (stamped at the snapshot time), as one store."""
        extra = [self.model.item_index[i] for i in (history_item_ids or []) if i in self.model.item_index]
        extra = extra[-self.max_history_items :]
        key = user_id if user_id is not None else ANONYMOUS
        if not extra:
            return key, self.model.store
        stored = self.model.store.user_items(key) if user_id is not None else np.zeros(0, dtype=np.int64)
        start, end = self.model.store.offsets.get(key, (0, 0))
        s = self.model.store
        return key, HistoryStore(
            items=np.concatenate([stored, np.asarray(extra, dtype=np.int64)]),
            hours=np.concatenate([s.hours[start:end], np.full(len(extra), to_hours([self.model.now])[0])]),
            dwell=np.concatenate([s.dwell[start:end], np.zeros(len(extra), dtype=np.float32)]),
            rating=np.concatenate([s.rating[start:end], np.full(len(extra), np.nan, dtype=np.float32)]),
            offsets={key: (0, len(stored) + len(extra))},
        )

    def recommend(
        self,
        user_id: str | None = None,
        history_item_ids: Sequence[str] | None = None,
        k: int = 10,
        style: str | None = None,
        exclude: Sequence[str] | None = None,
    ) -> list[ScoredItem]:
        """Top-k items for a known user, a user plus recent items, or an anonymous history (cold start if none)."""
        key, store = self._request_store(user_id, history_item_ids)
        excluded = self.model.exclusions([key], store)[0]
        if exclude:
            extra = [self.model.item_index[i] for i in exclude if i in self.model.item_index]
            excluded = np.union1d(excluded, np.asarray(extra, dtype=np.int64)).astype(np.int64)
        ranked = self.model.rank_candidates([key], store, [excluded])[0]
        items, scores, sources = self.top_k(ranked, k)
        profile = self.profile(user_id, history_item_ids)
        style = style or profile.preferred_style
        out = []
        for item, score, source in zip(items, scores, sources, strict=True):
            row = self.item_row(int(item))
            out.append(
                ScoredItem(
                    item_id=str(row["item_id"]),
                    score=float(score),
                    title=str(row["title"]),
                    category=str(row["category"]),
                    reason=self.explain(profile, row, style=style, source=source),
                )
            )
        return out

    def profile(
        self, user_id: str | None = None, history_item_ids: Sequence[str] | None = None
    ) -> InterestProfile:
        """The readable interest profile from the stored history plus any recent items."""
        return build_interest_profile(
            user_id or ANONYMOUS, self.profile_history(user_id, history_item_ids), self.user_row(user_id),
            top_k=5, idf=self.idf, now=self.model.now,
            n_keywords=(self.model.encoder.cfg if self.model.encoder is not None else ProfileSettings()).top_keywords,
        )  # fmt: skip

    def user_row(self, user_id: str | None) -> dict[str, object] | None:
        """The user's row of the snapshot's user table (None for an unknown or anonymous user)."""
        row = self.model._user_row.get(user_id) if user_id is not None else None
        if row is None:
            return None
        return {c: values[row] for c, values in self._user_cols.items()}

    def profile_history(
        self, user_id: str | None = None, history_item_ids: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The stored history plus the request's items (stamped ``now``), each with its catalog text columns.

        The rows and values of ``history.merge(items, on="item_id", how="left")`` as column arrays, read by
        position (a frame per request costs more than the profile built from it).
        """
        rows = self._history_rows.get(user_id, np.zeros(0, dtype=np.int64)) if user_id is not None else []
        rows = np.asarray(rows, dtype=np.int64)
        extra = [i for i in (history_item_ids or []) if i in self.model.item_index][-self.max_history_items :]
        h = self._hist
        items = np.concatenate([h["item"][rows], [self.model.item_index[i] for i in extra]]).astype(np.int64)
        n = len(extra)
        out = {
            "item_id": np.concatenate([h["item_id"][rows], np.asarray(extra, dtype=object)]),
            "event_ts": np.concatenate([h["event_ts"][rows], np.full(n, self.model.now.to_datetime64())]),
            "dwell_seconds": np.concatenate([h["dwell_seconds"][rows], np.zeros(n)]),
            "rating": np.concatenate([h["rating"][rows], np.full(n, np.nan)]),
        }
        for c in _PROFILE_ITEM_COLUMNS[1:]:
            out[c] = self._item_cols[c][items]
        return out

    def explain(
        self,
        profile: InterestProfile,
        item: dict[str, object] | str,
        style: str | None = None,
        source: str = "",
    ) -> str:
        """One sentence on why ``item`` suits ``profile``: a shared category, tag or keyword, else popularity/freshness."""
        row = self.item(item) if isinstance(item, str) else item
        templates = _REASON_TEMPLATES.get(style or profile.preferred_style, _REASON_TEMPLATES["concise"])
        category = str(row.get("category") or "")
        interests = dict(profile.top_categories)
        if category and category in interests:
            return templates["interest"].format(what=category)
        tags = set(split_list(row.get("tags")))
        shared = [t for t, _ in profile.top_tags if t in tags]
        if shared:
            return templates["interest"].format(what=shared[0])
        text = f"{row.get('title', '')} {row.get('body', '')}".lower()
        words = [w for w, _ in profile.keywords if w in text]
        if words:
            return templates["interest"].format(what=words[0])
        if SOURCE_FRESH in source:
            return templates["fresh"]
        if SOURCE_POPULAR in source:
            return templates["popular"]
        return templates["default"]


# --- the stacked full stack: multi-source candidates -> listwise ranker -> MMR ------------------------------
SourceFactory = Callable[[RecData], dict[str, CandidateSource]]
_EMPTY = np.zeros(0, dtype=np.int64)
_STACK_LABELS = {"fresh": "recent_popular"}  # served source names (explanations read "popular" in them)


@dataclass
class StackSources:
    """The stacked full stack's candidate sources with their hyperparameters (chosen on valid like the
    baselines'): calling it on a view fits EASE, item-kNN, popularity, recency-weighted popularity and, with an
    encoder, the two-tower retriever on that view."""

    ease_l2: float = 500.0
    knn_neighbors: int = 50
    knn_shrinkage: float = 0.0
    fresh_half_life_days: float = 14.0
    encoder: TwoTowerRetriever | None = None
    cold_interest_weight: float = 0.7
    # next-item transitions (models.retrieval.transitions) as a source when set: TransitionRecommender's kwargs
    transitions: dict[str, float] | None = None
    # EASE read from the user's last engagements (RecentEASERecommender) when set: (recent, decay)
    ease_recent: tuple[int, float] | None = None

    def __call__(self, view: RecData) -> dict[str, CandidateSource]:
        """Every source fitted on ``view``."""
        out: dict[str, CandidateSource] = {
            "ease": EASERecommender(self.ease_l2).fit(view),
            "itemknn": ItemKNNRecommender(self.knn_neighbors, self.knn_shrinkage).fit(view),
            "popularity": PopularityRecommender().fit(view),
            "fresh": FreshPopularity(self.fresh_half_life_days).fit(view),
        }
        if self.ease_recent is not None:
            out["ease_recent"] = RecentEASERecommender(self.ease_l2, *self.ease_recent).fit(view)
        if self.transitions is not None:
            out["transitions"] = TransitionRecommender(**self.transitions).fit(view)
        if self.encoder is not None:
            out["two_tower"] = TwoTowerRecommender(self.encoder, self.cold_interest_weight).fit(view)
        return out

    @classmethod
    def from_tuned(
        cls, tuned: Mapping[str, Mapping[str, Any]], encoder: TwoTowerRetriever | None, settings: Settings
    ) -> StackSources:
        """Sources with the baselines' hyperparameters chosen on valid (``tuned``: model -> params)."""
        ev = settings.evaluation
        knn = tuned.get("itemknn", {})
        return cls(
            ease_l2=float(tuned.get("ease", {}).get("l2", ev.ease_l2_grid[len(ev.ease_l2_grid) // 2])),
            knn_neighbors=int(knn.get("n_neighbors", ev.itemknn_neighbors)),
            knn_shrinkage=float(knn.get("shrinkage", 0.0)),
            fresh_half_life_days=float(
                tuned.get("recency_popularity", {}).get(
                    "half_life_days", settings.retrieval.popularity_half_life_days
                )
            ),
            encoder=encoder,
            cold_interest_weight=settings.profile.cold_start_interest_weight,
            transitions=settings.ranker.transition_params() if "transitions" in settings.ranker.stack_candidates
            else None,
            ease_recent=(settings.ranker.stack_recent_items, settings.ranker.stack_recent_decay)
            if "ease_recent" in settings.ranker.stack_candidates else None,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        """The hyperparameters (JSON), without the encoder."""
        return {
            "ease_l2": self.ease_l2, "knn_neighbors": self.knn_neighbors, "knn_shrinkage": self.knn_shrinkage,
            "fresh_half_life_days": self.fresh_half_life_days, "two_tower": self.encoder is not None,
            "cold_interest_weight": self.cold_interest_weight, "transitions": self.transitions,
            "ease_recent": self.ease_recent,
        }  # fmt: skip


class StackedFullStack:
    """Candidates from every source (unioned) -> a stacked ranker over point-in-time features -> MMR.

    The ranker is the blend of the torch :class:`StackedRanker` and LightGBM (:class:`BlendedStackedRanker`,
    the default ``ranker.stack_model``) or either one alone.

    ``make_sources(view)`` returns the candidate sources fitted on ``view`` (two-tower, EASE, item-kNN,
    popularity, fresh); :meth:`fit` calls it, :meth:`observe` moves the fitted sources to a later view without
    learning (the evaluation protocol's "no refit"). Either way every feature is computed as of the view's end,
    while the ranker's weights stay those learned by :func:`fit_stacked_ranker`.

    It is also what the service serves (:class:`Recommender`): :meth:`rank_candidates` scores a user from the
    snapshot or from a request's history (the stored one plus recent items, or an anonymous one), building the
    user's features from the user's own rows only, so a known user gets exactly the offline list.
    """

    name = "full_stack"

    def __init__(
        self, make_sources: SourceFactory, n_per_source: Mapping[str, int],
        ranker: ListRanker, mmr_lambda: float = 1.0, encoder: TwoTowerRetriever | None = None,
    ) -> None:  # fmt: skip
        self.make_sources = make_sources
        self.n_per_source = dict(n_per_source)
        self.ranker = ranker
        self.mmr_lambda = mmr_lambda
        self.encoder = encoder if encoder is not None else getattr(make_sources, "encoder", None)

    # --- state as of a cutoff -----------------------------------------------------------------------------
    def fit(self, view: RecData) -> StackedFullStack:
        """Fit every source on ``view``; features are computed as of ``view.now``."""
        self.sources = self.make_sources(view)
        self._index_view(view)
        return self

    def observe(self, view: RecData) -> StackedFullStack:
        """Move the fitted sources to a later ``view`` (histories and counts as of its end, no learning)."""
        for source in self.sources.values():
            source.observe(view)  # in place: weights kept, state as of the view
        self._index_view(view)
        return self

    def _index_view(self, view: RecData) -> None:
        self.view = view
        self.items = view.items.reset_index(drop=True)
        self.item_ids = self.items["item_id"].to_numpy()
        self.item_index = view.item_index
        self.users = view.users.reset_index(drop=True)
        self.user_index = set(self.users["user_id"])
        self._user_row = {str(u): i for i, u in enumerate(self.users["user_id"])}
        self.histories = view.histories
        self.now = view.now
        self.store = HistoryStore.from_frame(view.histories, view.item_index)
        self.text_vecs = view.item_text / np.clip(
            np.linalg.norm(view.item_text, axis=1, keepdims=True), 1e-12, None
        )
        if self.ranker is not None:
            self.ranker.set_catalog(view.item_text)
        self._seen = view.seen_idx()
        self._unpublished = view.unpublished()
        self._item_features = point_in_time_item_features(view)
        self._shares = group_share(view)
        self._history_rows = view.histories.groupby("user_id", sort=False).indices
        self._interaction_rows = view.interactions.groupby("user_id", sort=False).indices

    # --- offline (batch) ------------------------------------------------------------------------------------
    def examples(self, user_ids: Sequence[str], exclude_seen: bool = True) -> StackExamples:
        """Candidates and features of ``user_ids`` as of the view's end."""
        excl = exclusion_lists(self._seen if exclude_seen else {}, self._unpublished, list(user_ids))
        cands = generate_candidates(self.sources, self.n_per_source, list(user_ids), excl)
        return build_stack_examples(self.view, cands, item_features=self._item_features, shares=self._shares)

    def ranked_positions(
        self, user_ids: Sequence[str], k: int, mmr_lambda: float | None = None, exclude_seen: bool = True,
        batch_size: int = 512,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Top-k catalog positions per user after the ranker and MMR."""
        lam = self.mmr_lambda if mmr_lambda is None else mmr_lambda
        out: dict[str, np.ndarray] = {}
        users = list(user_ids)
        for s in range(0, len(users), batch_size):
            ex = self.examples(users[s : s + batch_size], exclude_seen)
            scores = self.ranker.score(ex)
            for r, user in enumerate(ex.user_ids):
                m = ex.mask[r]
                out[user] = mmr_rerank(ex.items[r][m], scores[r][m], self.text_vecs, k, lam)
        return out

    def recommend(self, user_ids: list[str], k: int, exclude_seen: bool = True) -> dict[str, list[str]]:
        """Top-k item ids per user."""
        ranked = self.ranked_positions(user_ids, k, exclude_seen=exclude_seen)
        return {u: self.item_ids[p].tolist() for u, p in ranked.items()}

    def score(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
        """Ranker logit of each pair among the user's candidates; an item outside them scores one below the
        user's lowest candidate (it ranks below every candidate); NaN for an item outside the catalog."""
        distinct = list(dict.fromkeys(user_ids))
        ex = self.examples(distinct, exclude_seen=False)
        scores = self.ranker.score(ex)
        lookup = {
            (u, int(i)): float(s)
            for r, u in enumerate(ex.user_ids)
            for i, s, m in zip(ex.items[r], scores[r], ex.mask[r], strict=True)
            if m
        }
        floor = {
            u: float(scores[r][ex.mask[r]].min()) - 1.0 if ex.mask[r].any() else 0.0
            for r, u in enumerate(ex.user_ids)
        }
        return np.asarray(
            [
                lookup.get((u, self.item_index[i]), floor[u]) if i in self.item_index else np.nan
                for u, i in zip(user_ids, item_ids, strict=True)
            ]
        )

    # --- serving (the surface Recommender uses) -----------------------------------------------------------
    def exclusions(
        self, user_ids: Sequence[str], store: HistoryStore | None = None, exclude_seen: bool = True
    ) -> list[np.ndarray]:
        """Unpublished items always; the user's engaged and rated items (and ``store``'s) when ``exclude_seen``."""
        store = store or self.store
        history = (
            {u: np.union1d(store.user_items(u), self._seen.get(u, _EMPTY)).astype(np.int64) for u in user_ids}
            if exclude_seen
            else {}
        )
        return exclusion_lists(history, self._unpublished, list(user_ids))

    def _request_view(self, user_ids: Sequence[str], store: HistoryStore) -> RecData:
        """The view restricted to these users' rows, plus the items ``store`` holds beyond the snapshot
        (a request's recent items) as engagements one second before ``now``."""
        hist_rows = [self._history_rows.get(u, _EMPTY) for u in user_ids]
        inter_rows = [self._interaction_rows.get(u, _EMPTY) for u in user_ids]
        histories = (
            self.view.histories.iloc[np.concatenate(hist_rows)] if hist_rows else self.view.histories[:0]
        )
        interactions = (
            self.view.interactions.iloc[np.concatenate(inter_rows)]
            if inter_rows
            else self.view.interactions[:0]
        )
        extra_rows = []
        if store is not self.store:
            stamp = self.now - pd.Timedelta(seconds=1)
            for u in user_ids:
                extra = store.user_items(u)[len(self.store.user_items(u)) :]
                if len(extra):
                    extra_rows.append(
                        pd.DataFrame({"user_id": u, "item_id": self.item_ids[extra], "event_ts": stamp})
                    )
        if extra_rows:
            extra = pd.concat(extra_rows, ignore_index=True)
            extra = extra.assign(
                seq=np.arange(len(extra)) + 1_000_000_000, split="request", dwell_seconds=0.0, rating=np.nan,
                clicked=True, position=0, request_id="request", event_date=stamp.normalize(),
            )  # fmt: skip
            histories = pd.concat([histories, extra[[c for c in histories.columns if c in extra]]])
            interactions = pd.concat([interactions, extra[[c for c in interactions.columns if c in extra]]])
        view = copy.copy(self.view)  # shares the catalog (and its index) with the snapshot view
        view.histories = histories.reset_index(drop=True)
        view.interactions = interactions.reset_index(drop=True)
        view.samples = self.view.samples[:0]
        return view

    def rank_candidates(
        self,
        user_ids: Sequence[str],
        store: HistoryStore | None = None,
        exclusions: list[np.ndarray] | None = None,
    ) -> list[RankedCandidates]:
        """Each user's candidates with the ranker's logits (``store``: a request's histories, else the snapshot)."""
        store = store or self.store
        user_ids = list(user_ids)
        exclusions = exclusions if exclusions is not None else self.exclusions(user_ids, store)
        sources = (
            self.sources
            if store is self.store
            else {n: s.for_store(store, user_ids) for n, s in self.sources.items()}
        )
        cands = generate_candidates(sources, self.n_per_source, user_ids, exclusions)
        ex = build_stack_examples(
            self._request_view(user_ids, store), cands, item_features=self._item_features, shares=self._shares
        )
        scores = self.ranker.score(ex)
        # "fresh" here is recency-weighted popularity (popular lately), not "just published"
        names = np.asarray([_STACK_LABELS.get(n, n) for n in cands.sources], dtype=object)
        out = []
        for r in range(len(user_ids)):
            m = ex.mask[r]
            proposed = cands.proposed[r][m]
            out.append(
                RankedCandidates(
                    items=ex.items[r][m],
                    ranker_logit=scores[r][m],
                    retrieval_logit=np.zeros(int(m.sum()), dtype=np.float32),
                    sources=["+".join(names[p]) for p in proposed],
                )
            )
        return out

    def finalize(self, ranked: RankedCandidates, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-k (items, scores, sources) after MMR on the text embeddings."""
        picked = mmr_rerank(ranked.items, ranked.ranker_logit, self.text_vecs, k, self.mmr_lambda)
        pos = {int(item): i for i, item in enumerate(ranked.items)}
        rows = [pos[int(i)] for i in picked]
        return picked, ranked.ranker_logit[rows], [ranked.sources[r] for r in rows]

    # --- persistence --------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Ranker, two-tower encoder, the sources' hyperparameters and the view they are fitted on."""
        if not isinstance(self.make_sources, StackSources):
            raise TypeError("only a stack over StackSources can be saved (its sources are rebuilt on load)")
        path.mkdir(parents=True, exist_ok=True)
        self.ranker.save(path / "ranker")
        if self.encoder is not None:
            self.encoder.save(path / "profile")
        view = self.view
        for name in ("items", "users", "histories", "interactions", "boundaries"):
            frame = getattr(view, name)
            frame.to_parquet(path / f"{name}.parquet")
        np.save(path / "item_text.npy", view.item_text)
        (path / "stack.json").write_text(
            json.dumps(
                {
                    "kind": "stacked",
                    "now": view.now.isoformat(),
                    "sources": self.make_sources.config(),
                    "n_per_source": self.n_per_source,
                    "mmr_lambda": self.mmr_lambda,
                }
            )
        )

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> StackedFullStack:
        """Load what :meth:`save` wrote: the deterministic sources (EASE, item-kNN, popularity) are fitted
        again on the saved view, which gives the saved weights (closed forms of the same data)."""
        config = json.loads((path / "stack.json").read_text())
        frames = {
            n: pd.read_parquet(path / f"{n}.parquet")
            for n in ("items", "users", "histories", "interactions", "boundaries")
        }
        for name, cols in (
            ("items", ["published_at"]),
            ("histories", ["event_ts"]),
            ("interactions", ["event_ts"]),
            ("boundaries", ["starts_at", "ends_at"]),
        ):
            for col in cols:
                frames[name][col] = pd.to_datetime(frames[name][col])
        view = RecData(
            items=frames["items"], users=frames["users"], histories=frames["histories"],
            interactions=frames["interactions"], samples=pd.DataFrame(columns=MART_COLUMNS["training_samples"]),
            boundaries=frames["boundaries"], item_text=np.load(path / "item_text.npy"),
            cutoff=pd.Timestamp(config["now"]),
        )  # fmt: skip
        spec = dict(config["sources"])
        encoder = TwoTowerRetriever.load(path / "profile", device) if spec.pop("two_tower") else None
        sources = StackSources(**spec, encoder=encoder)
        ranker = load_stacked_ranker(path / "ranker", view.item_text, device)
        return cls(sources, config["n_per_source"], ranker, config["mmr_lambda"], encoder).fit(view)


def load_full_stack(path: Path, device: str = "cpu") -> FullStackModel | StackedFullStack:
    """The saved full stack at ``path``, whichever kind it is."""
    config = json.loads((path / "stack.json").read_text())
    kind = StackedFullStack if config.get("kind") == "stacked" else FullStackModel
    return kind.load(path, device)


@dataclass
class StackFit:
    """What :func:`fit_stacked_ranker` learned and how it chose it."""

    ranker: ListRanker
    mmr_lambda: float
    epochs: int
    log: pd.DataFrame
    mmr_table: pd.DataFrame
    candidate_recall: float


def stacking_windows(
    data: RecData, n_windows: int, stride_share: float = 1.0
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Label windows of the valid split's length (oldest first): up to ``n_windows - 1`` ending at or before the
    valid start, ``stride_share`` x valid's length apart, then valid itself.

    A training window never reaches into valid (valid's labels only choose epochs and MMR). Windows starting
    less than one window length after the first event are dropped (their features would describe nothing).
    """
    start, end = data.split_start("valid"), data.split_end("valid")
    length, stride = end - start, (end - start) * stride_share
    first = data.histories["event_ts"].min() if len(data.histories) else start
    earliest = first + length
    windows = []
    for i in range(max(n_windows - 1, 0)):
        w_start = start - length - i * stride
        if w_start <= earliest:
            break
        windows.append((w_start, w_start + length))
    return [*reversed(windows), (start, end)]


@dataclass
class StackingLists:
    """The candidate lists of every stacking window, built once and shared by every seed's ranker fit."""

    train: list[StackExamples]  # one per training window, oldest first
    valid: StackExamples  # the valid window's lists (features as of the valid start)
    valid_labels: dict[str, set[int]]
    candidate_recall: float  # share of valid's relevant items among the candidates (the ranker's ceiling)
    windows: list[tuple[pd.Timestamp, pd.Timestamp]]


def stacking_lists(
    data: RecData, make_sources: SourceFactory, n_per_source: Mapping[str, int], settings: Settings
) -> StackingLists:
    """Per window: sources fitted on the view as of its start, candidates and features as of it, its labels."""
    cfg = settings.ranker
    windows = stacking_windows(data, cfg.stack_windows, cfg.stack_window_stride)
    parts: list[StackExamples] = []
    labels: dict[str, set[int]] = {}
    recall = float("nan")
    t0 = time.perf_counter()
    for n, (start, end) in enumerate(windows, 1):
        view = data.as_of(start)
        labels = window_relevant(data, start, end)
        users = sorted(labels)
        cands = generate_candidates(make_sources(view), n_per_source, users, view.exclusions(users))
        parts.append(build_stack_examples(view, cands, labels))
        recall = cands.recall(labels)
        log.info(
            "stacking window %d/%d from %s: %d lists, candidate recall %.3f (%.0fs)",
            n, len(windows), start, len(users), recall, time.perf_counter() - t0,
        )  # fmt: skip
    return StackingLists(parts[:-1], parts[-1], labels, recall, windows)


_BAG_SEED_STEP = 1009  # seed offset between the bagged fits of one member kind


def fit_stacked_ranker(
    data: RecData, make_sources: SourceFactory, n_per_source: Mapping[str, int], settings: Settings,
    seed: int | None = None, lists: StackingLists | None = None,
) -> StackFit:  # fmt: skip
    """Time-based stacking: features as of each window's start, labels from the window; epochs and MMR on valid.

    The ranker is trained on the windows before valid (:func:`stacking_windows`) and its epoch count and MMR
    weight are chosen on the valid window; it is not refitted with valid's labels (no refit, as for every model).
    With no window before valid, a share of valid's users is held out instead. ``lists`` (from
    :func:`stacking_lists`) reuses the candidate lists across seeds: they do not depend on the seed.
    """
    cfg = settings.ranker
    seed = settings.seed if seed is None else seed
    device = settings.resolved_device
    lists = lists or stacking_lists(data, make_sources, n_per_source, settings)
    last_labels = lists.valid_labels
    if lists.train:
        # choose on valid after training on the earlier windows only: users of one window share its future, so
        # a split by user inside a window would reward memorizing that window's hot items
        train, holdout = concat_examples(lists.train), lists.valid
    else:
        last = lists.valid
        held = np.random.default_rng(seed).random(len(last)) < cfg.stack_holdout_share
        train, holdout = last.take(np.flatnonzero(~held)), last.take(np.flatnonzero(held))
    sources = list(n_per_source)
    kinds = ["torch", "lightgbm"] if cfg.stack_model == "blend" else [cfg.stack_model]
    share = {"torch": cfg.stack_blend_torch_weight, "lightgbm": 1.0 - cfg.stack_blend_torch_weight}
    members: list[ListRanker] = []
    weights: list[float] = []
    logs = []
    for kind in kinds:
        # every member kind learns from the same lists, each fit stopping at its own best valid NDCG@10; with
        # stack_bags > 1 each kind is fitted once per derived seed and the fits share the kind's weight
        for bag in range(cfg.stack_bags):
            bag_seed = seed + _BAG_SEED_STEP * bag
            if kind == "lightgbm":
                fitted, frame = train_gbdt_ranker(train, holdout, last_labels, sources, cfg, bag_seed)
            else:
                fitted, frame = train_stacked_ranker(
                    train, holdout, last_labels, sources, data.item_text, cfg, device, bag_seed
                )
            members.append(fitted)
            weights.append((share[kind] if len(kinds) > 1 else 1.0) / cfg.stack_bags)
            logs.append(frame.assign(member=kind, bag=bag) if len(kinds) > 1 or cfg.stack_bags > 1 else frame)
    log_frame = pd.concat(logs, ignore_index=True)
    # the epoch count is the first torch fit's whenever one is trained (the boosting rounds are the trees' own)
    first = logs[0]
    epochs = int(first.loc[first["valid_ndcg@10"].idxmax(), "epoch"])
    ranker: ListRanker = members[0] if len(members) == 1 else BlendedStackedRanker(members, weights)
    mmr_lambda, mmr_table = choose_mmr(ranker, holdout, last_labels, data.item_text, cfg.mmr_lambda_grid)
    if len(members) > 1:
        best = log_frame.groupby("member")["valid_ndcg@10"].max().to_dict()
        log.info(
            "blended stack ranker: %d fits (%s, best valid NDCG@10 of each kind %s), blend %.4f at MMR weight %g",
            len(members), " + ".join(f"{cfg.stack_bags} {k}" for k in kinds),
            {k: round(v, 4) for k, v in best.items()}, mmr_table["holdout_ndcg@10"].max(), mmr_lambda,
        )  # fmt: skip
    return StackFit(ranker, mmr_lambda, epochs, log_frame, mmr_table, lists.candidate_recall)


def choose_mmr(
    ranker: ListRanker, holdout: StackExamples, relevant: Mapping[str, set[int]], item_text: np.ndarray,
    grid: Sequence[float],
) -> tuple[float, pd.DataFrame]:  # fmt: skip
    """The MMR weight of ``grid`` with the best full-ranking NDCG@10 on ``holdout`` (ties: the larger weight, i.e.
    less diversity), and the table of every weight's NDCG@10."""
    text_vecs = item_text / np.clip(np.linalg.norm(item_text, axis=1, keepdims=True), 1e-12, None)
    scores = ranker.score(holdout)
    rows = []
    for lam in grid:
        values = []
        for r, user in enumerate(holdout.user_ids):
            m = holdout.mask[r]
            top = mmr_rerank(holdout.items[r][m], scores[r][m], text_vecs, 10, lam)
            values.append(metrics.ndcg_at_k(top.tolist(), relevant[user], 10))
        rows.append({"mmr_lambda": lam, "holdout_ndcg@10": metrics.mean_defined(values)})
    table = pd.DataFrame(rows)
    best = table.sort_values(["holdout_ndcg@10", "mmr_lambda"], ascending=[False, False]).iloc[0]
    return float(best["mmr_lambda"]), table
