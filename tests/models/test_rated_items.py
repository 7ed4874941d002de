"""A rated item counts as seen even without a click (MovieLens ratings below 4): no model recommends it back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from models.evaluation import build_models
from models.recdata import RecData
from models.recommender import FullStackModel
from tests.models.conftest import TinyStack


def _rate_without_click(data: RecData, picks: dict[str, str], at: pd.Timestamp) -> RecData:
    """``data`` plus, per user, an impression of the picked item rated 2 (no click) at ``at``."""
    rows = pd.DataFrame(
        {
            "request_id": [f"rated-{u}" for u in picks],
            "user_id": list(picks),
            "item_id": list(picks.values()),
            "event_ts": at,
            "event_date": at.date(),
            "position": 0,
            "clicked": 0,
            "dwell_seconds": 0.0,
            "rating": 2.0,
            "split": "train",
        }
    )
    return replace(data, interactions=pd.concat([data.interactions, rows], ignore_index=True))


def test_items_rated_without_a_click_are_never_recommended(tiny_stack: TinyStack, tmp_path: Path) -> None:
    data, settings = tiny_stack.data, tiny_stack.settings
    start = data.split_start("test")
    users = data.users["user_id"].tolist()[:20]

    def fitted(d: RecData) -> dict[str, object]:
        return build_models(settings, d.as_of(start), tiny_stack.encoder, tiny_stack.ranker, 1.0)

    before = {name: model.recommend(users, k=5) for name, model in fitted(data).items()}
    # each user rates (and dislikes) the full stack's first pick, an hour before the test window
    picks = {u: before["full_stack"][u][0] for u in users}
    rated = _rate_without_click(data, picks, start - pd.Timedelta(hours=1))
    assert set(rated.as_of(start).histories["item_id"]) == set(data.as_of(start).histories["item_id"])

    models = fitted(rated)
    stack = models["full_stack"]
    assert isinstance(stack, FullStackModel)
    stack.save(tmp_path / "stack")
    models["full_stack (loaded)"] = FullStackModel.load(tmp_path / "stack")
    for name, model in models.items():
        recs = model.recommend(users, k=5)
        for user in users:
            assert picks[user] not in recs[user], (name, user)
            assert len(recs[user]) == 5, (name, user)
    # the view's exclusions (used by retrieval and the profile model's evaluation) hold the item too
    view = rated.as_of(start)
    for user, excluded in zip(users, view.exclusions(users), strict=True):
        assert view.item_index[picks[user]] in excluded
