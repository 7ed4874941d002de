"""Inputs and output of the daily copy run: active users, their recommendations and profiles, the stored rows.

Recommendations come from ``ml.recommendations`` when that table exists (rows on or before the day, the latest
per user), else from the champion :class:`models.recommender.Recommender` (the caller loads it), else from a
popularity fallback within the user's top category. Profiles come from ``ml.user_profiles`` (the user_profiles
asset), else from the champion recommender, else from :func:`profiles_from_marts` (categories and tags of the
user's engagements up to the day).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd

from models.data.warehouse import table_exists
from models.generation.service import GeneratedContent, GenerationRequest, ItemText
from models.interests import InterestProfile

RECOMMENDATIONS_TABLE = "ml.recommendations"
PROFILES_TABLE = (
    "ml.user_profiles"  # written by the user_profiles asset: user_id, profile (InterestProfile JSON)
)
CONTENT_TABLE = "generation.generated_content"
# Column names a producer of ml.recommendations may use for the day the list was made, in order of preference.
RECOMMENDATION_DAY_COLUMNS = ("generated_day", "generated_date", "generated_at", "day", "date", "as_of")
ITEM_COLUMNS = "item_id, title, body, category, tags, creator_id, creator_group, published_at, content_hash"


def active_users(con: duckdb.DuckDBPyConnection, day: dt.date, limit: int) -> list[str]:
    """Users with impressions on ``day``, most active first (ties by id), at most ``limit``."""
    rows = con.execute(
        """
        select user_id from marts.interactions where event_date = ?
        group by user_id order by count(*) desc, user_id limit ?
        """,
        [day, limit],
    ).fetchall()
    return [str(r[0]) for r in rows]


def read_items(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The catalog columns generation reads, from marts.item_features."""
    return con.execute(f"select {ITEM_COLUMNS} from marts.item_features order by item_id").df()


def stored_recommendations(
    con: duckdb.DuckDBPyConnection, users: Sequence[str], day: dt.date, top_n: int
) -> pd.DataFrame | None:
    """Top-``top_n`` rows of ``ml.recommendations`` for ``users`` as of ``day`` (None when the table is absent)."""
    if not table_exists(con, RECOMMENDATIONS_TABLE):
        return None
    columns = {r[0] for r in con.execute(f"describe {RECOMMENDATIONS_TABLE}").fetchall()}
    day_col = next((c for c in RECOMMENDATION_DAY_COLUMNS if c in columns), None)
    recs = con.execute(
        f"select * from {RECOMMENDATIONS_TABLE} where user_id in (select unnest(?::varchar[]))", [list(users)]
    ).df()
    if day_col is not None and len(recs):
        days = pd.to_datetime(recs[day_col]).dt.date
        recs = recs[days <= day].assign(_day=days[days <= day])
        recs = recs[recs["_day"] == recs.groupby("user_id")["_day"].transform("max")]
    order = "rank" if "rank" in recs.columns else "score"
    recs = recs.sort_values(["user_id", order], ascending=[True, order == "rank"])
    return recs.groupby("user_id").head(top_n)[["user_id", "item_id"]].reset_index(drop=True)


def stored_profiles(
    con: duckdb.DuckDBPyConnection, users: Sequence[str]
) -> dict[str, InterestProfile] | None:
    """The users' profiles from ``ml.user_profiles`` (None when the table is absent)."""
    if not table_exists(con, PROFILES_TABLE):
        return None
    rows = con.execute(
        f"select user_id, profile from {PROFILES_TABLE} where user_id in (select unnest(?::varchar[]))",
        [list(users)],
    ).fetchall()
    return {str(u): InterestProfile.from_dict(json.loads(p)) for u, p in rows if p}


def profiles_from_marts(
    con: duckdb.DuckDBPyConnection, users: Sequence[str], day: dt.date
) -> dict[str, InterestProfile]:
    """Profiles from engagements before the end of ``day`` and the declared attributes (cold start otherwise)."""
    feats = con.execute(
        """
        select user_id, preferred_style, declared_interests from marts.user_features
        where user_id in (select unnest(?::varchar[]))
        """,
        [list(users)],
    ).df()
    history = con.execute(
        """
        select h.user_id, i.category, i.tags from marts.user_histories h
        join marts.item_features i using (item_id)
        where h.user_id in (select unnest(?::varchar[])) and h.event_ts < ?
        """,
        [list(users), dt.datetime.combine(day + dt.timedelta(days=1), dt.time())],
    ).df()
    by_user = {u: g for u, g in history.groupby("user_id")}
    out: dict[str, InterestProfile] = {}
    for row in feats.itertuples(index=False):
        events = by_user.get(row.user_id)
        if events is not None and len(events):
            cats = Counter(events["category"].dropna())
            tags = Counter(t for ts in events["tags"].dropna() for t in str(ts).split("|") if t)
            cold = False
        else:
            cats = Counter(t for t in str(row.declared_interests or "").split("|") if t)
            tags, cold = Counter(), True
        out[str(row.user_id)] = InterestProfile(
            user_id=str(row.user_id),
            top_categories=_weights(cats, 5),
            top_tags=_weights(tags, 5),
            preferred_style=str(row.preferred_style or "concise"),
            n_events=0 if events is None else len(events),
            cold_start=cold,
        )
    return out


def choose_inputs(
    users: Sequence[str],
    recs: pd.DataFrame | None,
    stored: Mapping[str, InterestProfile] | None,
    marts: Mapping[str, InterestProfile],
    recommender: Any | None,
    top_n: int,
    popular: Callable[[dict[str, InterestProfile]], pd.DataFrame],
) -> tuple[dict[str, InterestProfile], str, pd.DataFrame, str]:
    """The day's profiles and recommendations, each with where it came from.

    Profiles: ``ml.user_profiles`` (``stored``; users newer than it get their ``marts`` profile), else the champion
    ``recommender``'s (a :class:`models.recommender.Recommender`, None when there is none), else ``marts``.
    Recommendations: ``recs`` (``ml.recommendations``), else the champion's top ``top_n`` for the users it
    knows, else ``popular(profiles)``.
    """
    if stored is not None:
        profiles, profile_source = {**marts, **stored}, PROFILES_TABLE
    elif recommender is not None:
        profiles = {u: recommender.profile(u) if recommender.known_user(u) else marts[u] for u in marts}
        profile_source = "champion recommender"
    else:
        profiles, profile_source = dict(marts), "marts (engagement categories and tags)"
    if recs is not None:
        return profiles, profile_source, recs, RECOMMENDATIONS_TABLE
    if recommender is not None:
        known = [u for u in users if recommender.known_user(u)]
        pairs = [(u, r.item_id) for u in known for r in recommender.recommend(u, k=top_n)]
        return (
            profiles,
            profile_source,
            pd.DataFrame(pairs, columns=["user_id", "item_id"]),
            "champion recommender",
        )
    return (
        profiles,
        profile_source,
        popular(profiles),
        "popular in the user's top category (no recommender yet)",
    )


def _weights(counts: Counter[str], k: int) -> list[tuple[str, float]]:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    total = sum(c for _, c in top)
    return [(name, c / total) for name, c in top] if total else []


def popular_recommendations(
    con: duckdb.DuckDBPyConnection, profiles: dict[str, InterestProfile], top_n: int
) -> pd.DataFrame:
    """Fallback: the most clicked items of each user's top category (all categories for users without one)."""
    items = con.execute("select item_id, category, popularity from marts.item_features").df()
    items = items.sort_values(["popularity", "item_id"], ascending=[False, True])
    rows = []
    for user_id, profile in profiles.items():
        top = profile.top_categories[0][0] if profile.top_categories else None
        pool = items[items["category"] == top] if top is not None else items
        rows.extend((user_id, item_id) for item_id in (pool if len(pool) else items)["item_id"].head(top_n))
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def ensure_content_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``generation.generated_content`` if missing (one row per day, user, item, task)."""
    con.execute("create schema if not exists generation")
    con.execute(
        f"""
        create table if not exists {CONTENT_TABLE} (
            day date not null,
            user_id varchar not null,
            item_id varchar not null,
            task varchar not null,
            style varchar not null,
            text varchar not null,
            passed_guardrails boolean not null,
            fallback_reason varchar,
            model_version varchar not null,
            latency_ms double not null,
            n_tokens integer not null,
            cached boolean not null,
            generated_at timestamp not null,
            segment varchar,
            primary key (day, user_id, item_id, task)
        )
        """
    )
    # warehouses written before the segment column (the cache segment a row's text was written for)
    con.execute(f"alter table {CONTENT_TABLE} add column if not exists segment varchar")


def store_content(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    rows: Sequence[GeneratedContent],
    segments: Sequence[str] | None = None,
) -> int:
    """Replace the day's rows of ``generation.generated_content`` with ``rows``; returns the row count.

    ``segments`` (one per row) are the cache segments the texts were written for: rows of one (item, segment,
    task, style) share one generation, which the quality check counts once.
    """
    ensure_content_table(con)
    frame = pd.DataFrame([r.to_dict() for r in rows])
    if segments is not None:
        if len(segments) != len(rows):
            raise ValueError(f"segments: {len(segments)} values for {len(rows)} rows")
        frame["segment"] = list(segments)
    con.execute(f"delete from {CONTENT_TABLE} where day = ?", [day])
    if frame.empty:
        return 0
    frame = frame.drop_duplicates(subset=["user_id", "item_id", "task"], keep="first")
    frame.insert(0, "day", day)
    frame["generated_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    con.register("_generated_rows", frame)
    try:
        con.execute(f"insert into {CONTENT_TABLE} by name select * from _generated_rows")
    finally:
        con.unregister("_generated_rows")
    return len(frame)


def rows_without_reason(con: duckdb.DuckDBPyConnection) -> int:
    """Rows that neither passed the guardrails nor record why they fell back (the asset check wants 0)."""
    if not table_exists(con, CONTENT_TABLE):
        return 0
    row = con.execute(
        f"""
        select count(*) from {CONTENT_TABLE}
        where not passed_guardrails and (fallback_reason is null or trim(fallback_reason) = '')
        """
    ).fetchone()
    return int(row[0]) if row else 0


def latest_day_rows(con: duckdb.DuckDBPyConnection) -> tuple[dt.date | None, list[GeneratedContent]]:
    """The rows of the day written last (by ``generated_at``), each generation once.

    The first row of each (item, segment, task, style) is read as written (``cached`` false, whether it was
    generated in that run or an earlier one); the other rows of the same generation are its copies served to
    other readers (``cached`` true), so quality figures count every generation once and never a copy. Rows
    stored without a segment (older warehouses) each count as a generation.
    """
    ensure_content_table(con)
    row = con.execute(f"select day from {CONTENT_TABLE} order by generated_at desc limit 1").fetchone()
    if not row:
        return None, []
    frame = con.execute(
        f"select * from {CONTENT_TABLE} where day = ? order by user_id, item_id, task", [row[0]]
    ).df()
    fields = [f for f in GeneratedContent.__dataclass_fields__ if f != "cached"]
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for rec in frame.to_dict("records"):
        segment = rec.get("segment")
        copy = False
        if isinstance(segment, str) and segment:
            generation = (str(rec["item_id"]), segment, str(rec["task"]), str(rec["style"]))
            copy = generation in seen
            seen.add(generation)
        out.append(GeneratedContent(**{f: rec[f] for f in fields}, cached=copy))
    for i, r in enumerate(out):
        if r.fallback_reason is not None and r.fallback_reason != r.fallback_reason:  # NaN from pandas
            out[i] = GeneratedContent(**{**r.to_dict(), "fallback_reason": None})
    return row[0], out


def heldout_probe(
    requests: Sequence[GenerationRequest],
    items: Mapping[str, ItemText],
    profiles: Mapping[str, InterestProfile],
    heldout: Iterable[str],
    n_users: int,
    per_user: int,
    tasks: Sequence[str],
) -> list[GenerationRequest]:
    """Requests on held-out items for the first ``n_users`` users of ``requests`` (measured, never published).

    User k gets held-out items k*per_user .. in sorted order (cycling), so the probe covers many held-out
    items and the same items for the same day.
    """
    held = sorted(i for i in heldout if i in items)
    users = list(dict.fromkeys(r.user_id for r in requests if r.user_id in profiles))[:n_users]
    if not held or not users:
        return []
    out = []
    for k, user in enumerate(users):
        for j in range(min(per_user, len(held))):
            item = items[held[(k * per_user + j) % len(held)]]
            out.extend(GenerationRequest(user, item, profiles[user], task) for task in tasks)
    return out
