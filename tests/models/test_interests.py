"""Profile keywords name what a reader is into, not the catalog's own phrasing."""

from __future__ import annotations

import pandas as pd
import pytest

from models.interests import build_interest_profile, compute_idf, topicality


def _catalog() -> pd.DataFrame:
    # every headline says "matters more than ever" (the catalog's phrasing); each category has its own nouns
    rows = []
    for category, nouns in {
        "food": ["sourdough", "bakery"],
        "travel": ["cruise", "glacier"],
        "tech": ["chip", "laptop"],
    }.items():
        for i in range(10):
            noun = nouns[i % 2]
            rows.append(
                {
                    "item_id": f"{category}{i}",
                    "title": f"Why the {noun} matters more than ever",
                    "body": f"The {noun} grew by {i + 2} percent.",
                    "category": category,
                    "tags": category,
                }
            )
    return pd.DataFrame(rows)


def test_topicality_separates_a_categorys_words_from_the_catalogs_phrasing() -> None:
    scores = topicality(_catalog())
    # "sourdough" is in 5 items, all food (a third of the catalog): P(food | sourdough) / P(food) = 3
    assert scores["sourdough"] == pytest.approx(3.0)
    assert scores["matters"] == pytest.approx(1.0)
    assert scores["percent"] == pytest.approx(1.0)


def test_words_of_the_catalogs_phrasing_never_become_keywords() -> None:
    items = _catalog()
    history = (
        items[items["category"] == "food"]
        .head(4)
        .assign(event_ts=pd.Timestamp("2026-01-01"), dwell_seconds=30.0, rating=float("nan"))
    )
    kept = build_interest_profile("u", history, None, idf=compute_idf(items))
    words = [w for w, _ in kept.keywords]
    assert words and set(words) <= {"sourdough", "bakery"}
    assert all(w > 0 for _, w in kept.keywords)
    everything = build_interest_profile("u", history, None, idf=compute_idf(items, min_topicality=None))
    assert {"matters", "percent"} & {w for w, _ in everything.keywords}


def test_a_catalog_without_categories_keeps_every_term() -> None:
    items = _catalog().drop(columns=["category"])
    assert topicality(items) == {}
    assert min(compute_idf(items).values()) > 0
