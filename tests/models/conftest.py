"""Tiny synthetic marts with exactly the columns of the dbt contract, for fast model tests.

The world is simple on purpose so tests can state what a model must learn: every item has one of four topics,
every user likes one topic, and a user clicks an item of their topic far more often (and dwells longer) than
any other item, with a position-dependent examination probability. Item text embeddings are topic centroids
plus noise, so a model that uses text and history can find a user's topic; a popularity model cannot.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.ranking.pair_ranker import Ranker, train_ranker
from models.recdata import MART_COLUMNS, RecData
from models.retrieval.two_tower import TwoTowerRetriever, train_profile_model
from models.settings import Settings, get_settings
from models.torch_utils import torch_threads

TOPICS = ("sports", "politics", "science", "travel")
TOPIC_WORDS = {
    "sports": ["match", "league", "goal", "coach", "season"],
    "politics": ["election", "senate", "policy", "vote", "minister"],
    "science": ["physics", "genome", "telescope", "quantum", "climate"],
    "travel": ["beach", "hotel", "flight", "island", "museum"],
}
START = pd.Timestamp("2026-10-01")
# These tests run small models on a 2-core machine shared with other jobs, where torch's thread pool waits on busy
# cores: one intra-op thread is ~10x faster there (see models.torch_utils.limit_cpu_threads).
TEST_THREADS = int(os.environ.get("RECGEN_TORCH_THREADS", "1"))
ML_TEST_MODULES = {
    f"test_{m}"
    for m in (
        "encoders",
        "two_tower",
        "candidates",
        "retrieval",
        "ranking",
        "baselines",
        "metrics",
        "registry",
        "training",
        "recommender",
    )
}


@pytest.fixture(autouse=True)
def _ml_test_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """One torch thread for the ML test modules (and only them), restored afterwards."""
    mine = request.module.__name__.rsplit(".", 1)[-1] in ML_TEST_MODULES
    with torch_threads(TEST_THREADS if mine else None):
        yield


def make_synthetic_marts(
    n_users: int = 60,
    n_items: int = 80,
    n_days: int = 10,
    valid_days: int = 2,
    test_days: int = 2,
    slate_size: int = 6,
    text_dim: int = 32,
    seed: int = 0,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Mart frames keyed by mart name, and an ``item_id, embedding`` frame."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{i:04d}" for i in range(n_items)]
    item_topic = np.arange(n_items) % len(TOPICS)
    # a tenth of the catalog is published during the window, the rest before it
    published = [
        START + pd.Timedelta(days=int(rng.integers(1, n_days)))
        if rng.random() < 0.1
        else START - pd.Timedelta(days=3)
        for _ in range(n_items)
    ]
    titles, bodies, tags = [], [], []
    for i, topic in enumerate(item_topic):
        words = rng.choice(TOPIC_WORDS[TOPICS[topic]], size=3, replace=False)
        titles.append(f"{words[0].title()} {words[1]} news {i}")
        bodies.append(f"A story about {' '.join(words)} and more {TOPICS[topic]}.")
        tags.append(f"{words[0]}|{words[1]}")
    centroids = rng.normal(size=(len(TOPICS), text_dim))
    text = centroids[item_topic] + 0.6 * rng.normal(size=(n_items, text_dim))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    item_pop = rng.gamma(1.0, 1.0, size=n_items)  # some items are shown more often, as in a real feed

    user_ids = [f"u{u:03d}" for u in range(n_users)]
    user_topic = rng.integers(0, len(TOPICS), size=n_users)
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "user_group": rng.choice(["18-34", "35-54", "55+"], size=n_users),
            "region": rng.choice(["north", "south"], size=n_users),
            "preferred_style": rng.choice(["concise", "casual", "formal", "enthusiastic"], size=n_users),
            "declared_interests": [TOPICS[t] if rng.random() < 0.8 else None for t in user_topic],
        }
    )

    rows = []
    for u, user in enumerate(user_ids):
        for day in range(n_days):
            for r in range(rng.poisson(1.2)):
                ts = START + pd.Timedelta(
                    days=day, hours=int(rng.integers(6, 23)), minutes=int(rng.integers(60))
                )
                available = np.array([p <= ts for p in published])
                probs = item_pop * available
                slate = rng.choice(n_items, size=slate_size, replace=False, p=probs / probs.sum())
                for pos, i in enumerate(slate):
                    likes = item_topic[i] == user_topic[u]
                    p_click = (0.6 if likes else 0.04) / (1 + 0.3 * pos)
                    clicked = int(rng.random() < p_click)
                    dwell = float(rng.uniform(30, 90) if likes else rng.uniform(3, 15)) if clicked else 0.0
                    rows.append((f"{user}-d{day}-r{r}", user, item_ids[i], ts, pos, clicked, dwell))
    inter = pd.DataFrame(
        rows, columns=["request_id", "user_id", "item_id", "event_ts", "position", "clicked", "dwell_seconds"]
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "body": bodies,
            "category": [TOPICS[t] for t in item_topic],
            "tags": tags,
            "creator_id": [f"c{i % 10}" for i in range(n_items)],
            "creator_group": ["independent" if i % 10 >= 7 else "large" for i in range(n_items)],
            "published_at": published,
        }
    )
    return marts_from_events(inter, users, items, text, n_days, valid_days, test_days)


def marts_from_events(
    inter: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    text: np.ndarray,
    n_days: int,
    valid_days: int,
    test_days: int,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The marts of a world from its impressions (``inter``: request_id, user_id, item_id, event_ts, position,
    clicked, dwell_seconds), its users (user_id and the attributes), its catalog (item_id, title, body,
    category, tags, creators, published_at) and item text vectors, split by time as dbt splits the days."""
    inter = inter.copy()
    inter["event_date"] = inter["event_ts"].dt.normalize()
    inter["rating"] = np.nan
    test_start = START + pd.Timedelta(days=n_days - test_days)
    valid_start = test_start - pd.Timedelta(days=valid_days)
    end = START + pd.Timedelta(days=n_days)
    inter["split"] = np.where(
        inter["event_ts"] >= test_start, "test", np.where(inter["event_ts"] >= valid_start, "valid", "train")
    )
    boundaries = pd.DataFrame(
        {
            "split": ["train", "valid", "test"],
            "starts_at": [START, valid_start, test_start],
            "ends_at": [valid_start, test_start, end],
        }
    )

    hist = inter[inter["clicked"] == 1].sort_values(["user_id", "event_ts", "item_id"]).copy()
    hist["seq"] = hist.groupby("user_id").cumcount() + 1
    hist = hist[MART_COLUMNS["user_histories"]].reset_index(drop=True)

    train = inter[inter["split"] == "train"]
    ua = train.groupby("user_id").agg(
        n_impressions=("clicked", "size"), n_clicks=("clicked", "sum"), last_event_ts=("event_ts", "max")
    )
    dwell_u = (
        train[train["clicked"] == 1].groupby("user_id")["dwell_seconds"].mean().rename("avg_dwell_seconds")
    )
    users = users.merge(ua, on="user_id", how="left").merge(dwell_u, on="user_id", how="left")
    users[["n_impressions", "n_clicks"]] = users[["n_impressions", "n_clicks"]].fillna(0).astype(int)
    users["ctr"] = users["n_clicks"] / users["n_impressions"].replace(0, np.nan)
    users["n_ratings"] = 0
    users["avg_rating"] = np.nan
    topic_of = dict(zip(items["item_id"], items["category"], strict=True))
    top_cat = (
        train[train["clicked"] == 1]
        .assign(category=lambda d: d["item_id"].map(topic_of))
        .groupby("user_id")["category"]
        .agg(lambda s: s.value_counts().index[0])
        .rename("top_category")
    )
    users = users.merge(top_cat, on="user_id", how="left")[MART_COLUMNS["user_features"]]

    ia = train.groupby("item_id").agg(n_impressions=("clicked", "size"), n_clicks=("clicked", "sum"))
    dwell_i = (
        train[train["clicked"] == 1].groupby("item_id")["dwell_seconds"].mean().rename("avg_dwell_seconds")
    )
    items = items.copy()
    items["content_hash"] = [
        hashlib.md5(f"{t}\n{b}".encode()).hexdigest()
        for t, b in zip(items["title"], items["body"], strict=True)
    ]
    items = items.merge(ia, on="item_id", how="left").merge(dwell_i, on="item_id", how="left")
    items[["n_impressions", "n_clicks"]] = items[["n_impressions", "n_clicks"]].fillna(0).astype(int)
    items["ctr"] = items["n_clicks"] / items["n_impressions"].replace(0, np.nan)
    items["popularity"] = items["n_clicks"]
    items = items[MART_COLUMNS["item_features"]]

    samples = _training_samples(inter, items)
    interactions = inter[MART_COLUMNS["interactions"]].reset_index(drop=True)
    embeddings = pd.DataFrame({"item_id": items["item_id"], "embedding": list(text.astype(np.float32))})
    frames = {
        "interactions": interactions,
        "split_boundaries": boundaries,
        "user_histories": hist,
        "user_features": users,
        "item_features": items,
        "training_samples": samples,
    }
    return frames, embeddings


def _training_samples(
    inter: pd.DataFrame, items: pd.DataFrame, negatives_per_positive: int = 4
) -> pd.DataFrame:
    """All clicks plus hash-chosen negatives from their requests, with point-in-time counts as in dbt."""
    inter = inter.sort_values(["event_ts", "request_id", "position"]).reset_index(drop=True)
    # user counts strictly before the row's timestamp: cumulative counts minus the row's own request
    by_user = inter.groupby("user_id")
    inter["user_prior_impressions"] = by_user.cumcount()
    inter["user_prior_clicks"] = by_user["clicked"].cumsum() - inter["clicked"]
    same_ts = inter.groupby(["user_id", "event_ts"])
    inter["user_prior_impressions"] -= same_ts.cumcount()
    inter["user_prior_clicks"] -= same_ts["clicked"].cumsum() - inter["clicked"]
    inter["user_prior_ctr"] = inter["user_prior_clicks"] / inter["user_prior_impressions"].replace(0, np.nan)
    daily = inter.groupby(["item_id", "event_date"]).agg(imp=("clicked", "size"), clk=("clicked", "sum"))
    daily = daily.groupby(level=0).cumsum().groupby(level=0).shift(1).fillna(0).reset_index()
    inter = inter.merge(daily, on=["item_id", "event_date"], how="left")
    inter["item_prior_impressions"] = inter["imp"].astype(int)
    inter["item_prior_clicks"] = inter["clk"].astype(int)
    inter["item_prior_ctr"] = inter["item_prior_clicks"] / inter["item_prior_impressions"].replace(0, np.nan)
    published = items.set_index("item_id")["published_at"]
    inter["item_age_hours"] = (inter["event_ts"] - inter["item_id"].map(published)).dt.total_seconds() / 3600
    inter["features_as_of"] = inter["event_ts"] - pd.Timedelta(microseconds=1)
    inter["label"] = inter["clicked"]
    has_click = inter.groupby("request_id")["clicked"].transform("sum")
    rank = inter["request_id"].str.cat(inter["item_id"]).map(lambda s: hashlib.md5(s.encode()).hexdigest())
    inter["neg_rank"] = rank.where(inter["clicked"] == 0).groupby(inter["request_id"]).rank()
    keep = (inter["clicked"] == 1) | (
        (has_click > 0) & (inter["neg_rank"] <= negatives_per_positive * has_click)
    )
    return inter.loc[keep, MART_COLUMNS["training_samples"]].reset_index(drop=True)


@pytest.fixture(scope="session")
def synthetic_marts() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Mart frames and text embeddings of the default tiny synthetic world."""
    return make_synthetic_marts()


@pytest.fixture(scope="session")
def rec_data(synthetic_marts: tuple[dict[str, pd.DataFrame], pd.DataFrame]) -> RecData:
    """The synthetic marts as a :class:`RecData`."""
    frames, embeddings = synthetic_marts
    return RecData.from_frames(frames, embeddings)


def tiny_settings(tmp_home: Path | None = None, **overrides: object) -> Settings:
    """Settings with small models and few epochs: enough for the synthetic world, fast on two cores."""
    base: dict[str, object] = {
        "device": "cpu",
        "profile": {"epochs": 3, "hidden_dim": 32, "n_heads": 2, "batch_size": 64, "max_history": 20},
        "ranker": {"epochs": 3, "hidden_dim": 32, "batch_size": 128, "retrieval_weight_grid": (0.0, 1.0)},
        "retrieval": {"n_candidates": 30, "n_popular": 10, "n_fresh": 5},
        "evaluation": {"bpr_epochs": 10, "bpr_dim": 16},
    }
    if tmp_home is not None:
        base["home"] = tmp_home
        base["reports_dir"] = tmp_home / "reports"
    base.update(overrides)
    return get_settings(**base)


@dataclass
class TinyStack:
    """A profile model and ranker trained on the synthetic marts."""

    settings: Settings
    data: RecData
    encoder: TwoTowerRetriever
    ranker: Ranker
    profile_log: pd.DataFrame
    ranker_log: pd.DataFrame


@pytest.fixture(scope="session")
def tiny_stack(rec_data: RecData) -> TinyStack:
    """Both neural models trained once per test session (a few seconds on the tiny world)."""
    settings = tiny_settings()
    with torch_threads(TEST_THREADS):
        encoder, profile_log = train_profile_model(rec_data, settings)
        ranker, ranker_log = train_ranker(rec_data, settings, encoder)
    return TinyStack(settings, rec_data, encoder, ranker, profile_log, ranker_log)
