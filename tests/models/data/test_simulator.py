"""The simulator: determinism, the raw schema, and each statistical promise checked against its ground truth.

Statistical checks compare observed click counts with the expectation computed from the simulator's own
click model on the same logged impressions, using binomial standard errors: a bug in either the event log or
the ground-truth functions moves the counts several standard errors away.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.data.ingest import ingest_snapshot
from models.data.schema import CREATOR_GROUPS, EVENT_TYPES, RAW_TABLES, STYLES
from models.data.simulator import (
    REGIONS,
    USER_GROUPS,
    ContentPlatformSimulator,
    RawDataset,
    simulate,
    simulate_to_parquet,
    table_to_frame,
)
from models.data.sources import read_manifest, write_raw_snapshot
from models.data.vocab import TOPICS
from models.settings import SimulatorSettings, get_settings

TINY = {"n_users": 200, "n_items": 100, "n_days": 7}
# Statistical checks need a few thousand impressions per cell; still about a second to simulate.
STAT = {"n_users": 500, "n_items": 150, "n_days": 10}


def _impressions(sim: ContentPlatformSimulator, data: RawDataset) -> pd.DataFrame:
    """One row per impression with clicked (0/1), the ground-truth P(click) and item attributes."""
    events = data.events
    imp = events[events.event_type == "impression"]
    clicks = events.loc[events.event_type == "click", ["request_id", "item_id"]].assign(clicked=1)
    imp = imp.merge(clicks, on=["request_id", "item_id"], how="left").fillna({"clicked": 0})
    imp = imp.merge(data.items[["item_id", "category", "creator_group"]], on="item_id")
    positions = imp.position.astype(int).to_numpy()
    imp["p_click"] = sim.click_probability(imp.user_id, imp.item_id, positions, imp.event_ts)
    # The click probability without the creator penalty: what the same exposure would earn without bias.
    imp["p_unbiased"] = sim.examination(positions) * sim.relevance(imp.user_id, imp.item_id, imp.event_ts)
    imp["day"] = (imp.event_ts - pd.Timestamp(sim.settings.start_date)).dt.days
    return imp


def _z(observed: float, probabilities: pd.Series) -> float:
    """Standard score of a click count against the sum of independent Bernoulli probabilities."""
    expected = probabilities.sum()
    return float((observed - expected) / np.sqrt((probabilities * (1 - probabilities)).sum()))


@pytest.fixture(scope="module")
def tiny() -> tuple[ContentPlatformSimulator, RawDataset]:
    settings = SimulatorSettings(**TINY)
    return ContentPlatformSimulator(settings), simulate(settings)


@pytest.fixture(scope="module")
def stat() -> tuple[ContentPlatformSimulator, pd.DataFrame]:
    settings = SimulatorSettings(**STAT, drift_strength=0.0)
    sim = ContentPlatformSimulator(settings)
    return sim, _impressions(sim, simulate(settings))


def test_same_seed_gives_identical_frames_and_another_seed_does_not() -> None:
    first, again = simulate(SimulatorSettings(**TINY)), simulate(SimulatorSettings(**TINY))
    other = simulate(SimulatorSettings(**TINY, seed=8))
    for name in RAW_TABLES:
        pd.testing.assert_frame_equal(first.tables()[name], again.tables()[name])
    assert not first.items.title.equals(other.items.title)
    assert not first.users.user_group.equals(other.users.user_group)
    assert len(first.events) != len(other.events) or not first.events.item_id.equals(other.events.item_id)


def test_frames_follow_the_raw_schema(tiny: tuple[ContentPlatformSimulator, RawDataset]) -> None:
    sim, data = tiny
    for name, frame in data.tables().items():
        schema = RAW_TABLES[name]
        assert list(frame.columns) == schema.column_names
        for col in schema.columns:
            series = frame[col.name]
            if col.duckdb_type == "TIMESTAMP":
                assert series.dtype == "datetime64[ns]", col.name
            elif col.duckdb_type == "INTEGER":
                assert series.dtype == "Int32", col.name
            elif col.duckdb_type == "DOUBLE":
                assert series.dtype == "float64", col.name
            else:
                assert series.map(lambda v: v is None or isinstance(v, str)).all(), col.name
            if not col.nullable:
                assert series.notna().all(), f"{name}.{col.name} has nulls"
        assert frame.set_index(list(schema.key)).index.is_unique
    users, items, events = data.users, data.items, data.events
    assert len(users) == TINY["n_users"] and len(items) == TINY["n_items"]
    assert set(users.user_group) <= set(USER_GROUPS) and set(users.region) <= set(REGIONS)
    assert set(users.preferred_style) <= set(STYLES)
    topic_names = {t.name for t in TOPICS[:8]}
    declared = users.declared_interests.dropna().str.split("|").explode()
    assert set(declared) <= topic_names
    assert set(items.category) <= topic_names and set(items.creator_group) == set(CREATOR_GROUPS)
    assert items.tags.str.split("|").map(len).between(2, 4).all()
    assert set(events.event_type) == set(EVENT_TYPES)
    start = pd.Timestamp(sim.settings.start_date)
    assert events.event_ts.min() >= start and events.event_ts.max() < start + pd.Timedelta(
        days=TINY["n_days"]
    )
    assert (events.dwell_seconds.notna() == (events.event_type == "dwell")).all()
    assert (events.loc[events.event_type == "dwell", "dwell_seconds"] > 0).all()
    ratings = events.loc[events.event_type == "rating", "rating"]
    assert ratings.between(1, 5).all() and (ratings == ratings.round()).all()
    # Every click, dwell and rating points at an impression of the same request, slot and item.
    keys = ["request_id", "position", "item_id"]
    shown = set(events.loc[events.event_type == "impression", keys].itertuples(index=False, name=None))
    follow = events[events.event_type != "impression"]
    assert set(follow[keys].itertuples(index=False, name=None)) <= shown
    # Slates hold distinct items and have slate_size slots.
    imp = events[events.event_type == "impression"]
    assert not imp.duplicated(["request_id", "item_id"]).any()
    assert (imp.groupby("request_id").size() == sim.settings.slate_size).all()
    # Only published items are shown, and only to users who have signed up.
    shown_items = imp.merge(items[["item_id", "published_at"]], on="item_id")
    assert (shown_items.event_ts > shown_items.published_at).all()
    shown_users = imp.merge(users[["user_id", "signup_at"]], on="user_id")
    assert (shown_users.event_ts >= shown_users.signup_at).all()
    # Some items arrive during the window and some users sign up during it (fresh items, cold start).
    assert (items.published_at >= start).any() and (items.published_at < start).any()
    assert (users.signup_at >= start).any()


def test_item_texts_are_readable_and_name_their_topic(
    tiny: tuple[ContentPlatformSimulator, RawDataset],
) -> None:
    _, data = tiny
    items = data.items
    # Titles of people and "Co." end in a dot without ending a sentence.
    unabbreviated = items.body.str.replace(r"\b(?:Dr|Prof|Ms|Mr|Rep|Co)\.", "", regex=True)
    sentences = unabbreviated.str.count(r"[.!?](?:\s|$)")
    assert sentences.between(4, 8).all()
    assert items.body.str.contains(r"\d").mean() > 0.9  # numbers in nearly every body
    # A bag-of-words classifier with the topic vocabularies recovers the category: the texts separate topics
    # (the first sentence is on the main topic and most of the rest follow the item's dominant topic).
    vocab = {t.name: [w.lower() for w in t.words + t.people + t.organizations] for t in TOPICS[:8]}

    def best_topic(text: str) -> str:
        lowered = text.lower()
        return max(
            vocab, key=lambda name: sum(len(re.findall(rf"\b{re.escape(w)}\b", lowered)) for w in vocab[name])
        )

    predicted = (items.title + " " + items.body).map(best_topic)
    assert (predicted == items.category).mean() > 0.85


def test_ctr_falls_with_position_as_the_examination_model_says(
    stat: tuple[ContentPlatformSimulator, pd.DataFrame],
) -> None:
    sim, imp = stat
    by_pos = imp.groupby("position")
    for _, group in by_pos:
        assert abs(_z(group.clicked.sum(), group.p_click)) < 4
    # The policy shuffles each slate, so what is shown in a slot does not depend on the slot: the mean
    # ground-truth relevance is the same in every slot, within its standard error.
    relevance = imp.p_unbiased / sim.examination(imp.position.astype(int))
    overall = relevance.mean()
    for _, slot in relevance.groupby(imp.position):
        assert abs(slot.mean() - overall) < 4 * slot.std() / np.sqrt(len(slot))
    # Hence the CTR ratio between slots is the examination ratio (1 + last) ** -position_bias, 8 ** -0.7 =
    # 0.23 here, within 4 standard errors of a ratio of two click rates.
    ctr = by_pos.clicked.mean()
    clicks = by_pos.clicked.sum()
    last = ctr.index.max()
    ratio = ctr[last] / ctr[0]
    assert ctr[0] > 2 * ctr[last]
    assert abs(ratio - float(sim.examination(last))) < 4 * ratio * np.sqrt(1 / clicks[last] + 1 / clicks[0])


def test_without_position_bias_ctr_is_flat_across_slots() -> None:
    settings = SimulatorSettings(**STAT, position_bias=0.0)
    sim = ContentPlatformSimulator(settings)
    imp = _impressions(sim, simulate(settings))
    ctr = imp.groupby("position").clicked.mean()
    assert ctr.iloc[-1] / ctr.iloc[0] == pytest.approx(1.0, abs=0.25)


@pytest.mark.parametrize("creator_bias", [0.5, 0.0])
def test_independent_creators_lose_clicks_only_by_the_creator_bias(creator_bias: float) -> None:
    settings = SimulatorSettings(**STAT, creator_bias=creator_bias)
    sim = ContentPlatformSimulator(settings)
    imp = _impressions(sim, simulate(settings))
    groups = imp.groupby("creator_group")
    # Clicks per unit of bias-free expected clicks: the same exposures with the penalty removed. The ratio
    # between the groups is then (1 - creator_bias) whatever topics and popularity each group's items have.
    earned = groups.clicked.sum() / groups.p_unbiased.sum()
    assert earned["independent"] / earned["large"] == pytest.approx(1 - creator_bias, abs=0.15)
    for _, group in groups:
        assert abs(_z(group.clicked.sum(), group.p_click)) < 4
    if creator_bias > 0:
        ctr = groups.clicked.mean()
        assert ctr["independent"] < ctr["large"]


def test_drift_raises_the_drift_topics_share_of_clicks_late_in_the_window() -> None:
    shares = {}
    for drift in (0.0, 0.8):
        settings = SimulatorSettings(**STAT, drift_strength=drift)
        sim = ContentPlatformSimulator(settings)
        imp = _impressions(sim, simulate(settings))
        clicks = imp[imp.clicked == 1]
        early = clicks[clicks.day < 3]
        late = clicks[clicks.day >= STAT["n_days"] - 3]
        on_topic = [(part.category == sim.drift_topic).mean() for part in (early, late)]
        se = np.sqrt(sum(s * (1 - s) / len(part) for s, part in zip(on_topic, (early, late), strict=True)))
        shares[drift] = (on_topic[1] - on_topic[0], se, imp)
    gap, se, _ = shares[0.8]
    assert gap > 4 * se
    gap, se, _ = shares[0.0]
    assert abs(gap) < 4 * se
    # The logging policy does not see drift, so both runs logged the very same impressions.
    assert shares[0.0][2][["request_id", "item_id", "position"]].equals(
        shares[0.8][2][["request_id", "item_id", "position"]]
    )


def test_clicks_concentrate_on_the_users_interest_topics(
    stat: tuple[ContentPlatformSimulator, pd.DataFrame],
) -> None:
    sim, imp = stat
    top_topic = np.asarray(sim.topic_names)[sim.user_interest.argmax(axis=1)]
    imp = imp.assign(on_interest=imp.category.to_numpy() == top_topic[sim.user_index(imp.user_id)])
    # Sparse interests (Dirichlet alpha 0.25) put most weight on the top topic, and the logit grows with
    # interest . topics: clicked items are on the top topic far more often than shown ones.
    shown_share = imp.on_interest.mean()
    clicked_share = imp.loc[imp.clicked == 1, "on_interest"].mean()
    assert clicked_share > 1.5 * shown_share


def test_dwell_and_ratings_rise_with_relevance(tiny: tuple[ContentPlatformSimulator, RawDataset]) -> None:
    sim, data = tiny
    events = data.events
    dwell = events[events.event_type == "dwell"]
    relevance = sim.relevance(dwell.user_id, dwell.item_id, dwell.event_ts)
    assert pd.Series(relevance).corr(dwell.dwell_seconds.reset_index(drop=True), method="spearman") > 0.3
    rated = events[events.event_type == "rating"]
    rated_relevance = pd.Series(
        sim.relevance(rated.user_id, rated.item_id, rated.event_ts), index=rated.index
    )
    assert rated_relevance[rated.rating >= 4].mean() > rated_relevance[rated.rating <= 2].mean()


def test_parquet_chunks_equal_the_in_memory_dataset(tmp_path: Path) -> None:
    # Exact equality, not just statistical: the event log's random numbers are addressed by (user, day,
    # request, slot), so splitting users into chunks of 60 changes nothing.
    in_memory = simulate(SimulatorSettings(**TINY, chunk_users=10_000))
    files = simulate_to_parquet(SimulatorSettings(**TINY, chunk_users=60), tmp_path)
    assert len(files["events"]) == 4 and len(files["users"]) == 4  # 200 users / 60 per chunk
    assert all(p.parent == tmp_path / p.parent.name and p.exists() for paths in files.values() for p in paths)
    for name in RAW_TABLES:
        table = pa.concat_tables([pq.read_table(p) for p in files[name]])
        pd.testing.assert_frame_equal(table_to_frame(table), in_memory.tables()[name])


def test_raw_snapshot_from_the_simulator_replaces_the_previous_one(tmp_path: Path) -> None:
    settings = get_settings(home=tmp_path, simulator=SimulatorSettings(**TINY, chunk_users=120))
    first = write_raw_snapshot(settings)
    assert len(first["events"]) == 2
    smaller = get_settings(
        home=tmp_path, simulator=SimulatorSettings(**{**TINY, "n_users": 50}, chunk_users=120)
    )
    second = write_raw_snapshot(smaller)
    assert len(second["events"]) == 1
    # The old second part is gone: readers globbing raw_dir see only the new snapshot.
    assert sorted(p.name for p in (tmp_path / "raw" / "events").iterdir()) == ["part-00000.parquet"]
    assert read_manifest(smaller)["rows"]["users"] == 50
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary folders left behind


def test_simulated_snapshot_passes_ingest_without_quarantine(tmp_path: Path) -> None:
    # Every simulated row must satisfy the ingest rules (types, keys, known users and items, ranges): a
    # quarantined row here would be a simulator bug. ``now`` is after the window so the clock does not matter.
    settings = get_settings(home=tmp_path, simulator=SimulatorSettings(**TINY, chunk_users=120))
    files = write_raw_snapshot(settings)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    now = datetime(2027, 1, 1, tzinfo=UTC)
    report = ingest_snapshot(con, files, source="simulator", now=now)
    assert report.rows_quarantined == 0, con.execute("select * from raw.quarantine limit 5").fetchall()
    assert report.tables["users"].rows_clean == TINY["n_users"]
    assert (
        con.execute("select count(*) from raw.events").fetchone()[0]
        == read_manifest(settings)["rows"]["events"]
    )
    con.close()
