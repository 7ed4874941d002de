"""A handmade warehouse with the marts (and ml.recommendations) the daily generation reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd

from models.generation.samples import sample_items

DAY = dt.date(2026, 10, 3)


def build_warehouse(path: Path, with_recommendations: bool = True) -> dict[str, pd.DataFrame]:
    """Write tiny marts to ``path``: 12 items, users u1..u4 (u4 inactive on DAY), u1's engagements in sports."""
    items = sample_items(12, seed=5)
    items["popularity"] = range(len(items))  # later items are more popular
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "preferred_style": ["casual", "formal", None, "concise"],
            "declared_interests": ["sports", "music|food", "travel", "science"],
        }
    )
    ts = pd.Timestamp(DAY) + pd.Timedelta(hours=9)
    interactions = pd.DataFrame(
        {
            # u1 has three impressions on DAY, u2 two, u3 one, u4 only the day before
            "user_id": ["u1", "u1", "u1", "u2", "u2", "u3", "u4"],
            "item_id": ["i0000", "i0006", "i0001", "i0004", "i0010", "i0002", "i0003"],
            "event_date": [DAY] * 6 + [DAY - dt.timedelta(days=1)],
        }
    )
    histories = pd.DataFrame(
        {
            # two sports clicks (i0000, i0006) and one travel click (i0001) by u1 before or on DAY; one later
            "user_id": ["u1", "u1", "u1", "u1"],
            "item_id": ["i0000", "i0006", "i0001", "i0004"],
            "event_ts": [ts, ts, ts, ts + pd.Timedelta(days=2)],
        }
    )
    recs = pd.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 2 + ["u1"],
            "item_id": ["i0006", "i0000", "i0007", "i0008", "i0004", "i0010", "i0011"],
            "rank": [1, 2, 3, 4, 1, 2, 1],
            "score": [0.9, 0.8, 0.7, 0.6, 0.9, 0.8, 0.99],
            # the last row is a list made after DAY: it must not be used for DAY
            "generated_day": [DAY] * 6 + [DAY + dt.timedelta(days=1)],
        }
    )
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    for name, frame in {
        "item_features": items,
        "user_features": users,
        "interactions": interactions,
        "user_histories": histories,
    }.items():
        con.register("f", frame)
        con.execute(f"create table marts.{name} as select * from f")
        con.unregister("f")
    if with_recommendations:
        con.execute("create schema ml")
        con.register("f", recs)
        con.execute("create table ml.recommendations as select * from f")
    con.close()
    return {"items": items, "users": users, "recommendations": recs}
