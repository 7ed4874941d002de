"""Shared helpers of the monitoring reports: dates, relevance, NDCG, DuckDB schema and plain HTML pages."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from models import metrics

MONITORING_SCHEMA = "monitoring"


def as_day(value: object) -> dt.date:
    """A calendar day from a date, datetime, Timestamp or ISO string."""
    return pd.Timestamp(value).date()


def day_column(values: pd.Series) -> pd.Series:
    """``event_date`` as midnight Timestamps, whatever DuckDB or a test handed over (date, str, datetime)."""
    return pd.to_datetime(values).dt.normalize()


def engaged(interactions: pd.DataFrame) -> pd.Series:
    """Positive engagement, as ``marts.user_histories`` defines it: a click or a rating of 4 or more."""
    rating = (
        interactions["rating"] if "rating" in interactions else pd.Series(np.nan, index=interactions.index)
    )
    return (interactions["clicked"] == 1) | (rating.fillna(0) >= 4)


SPLIT_ORDER = ("train", "valid", "test")


def relevant_pairs(interactions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Ground truth: (user_id, item_id) engaged with in ``split`` and not in an earlier split.

    The same protocol as the offline evaluation (``models/evaluation.py``): items a user engaged with before the
    window are never recommended, so they never count as relevant either.
    """
    positive = interactions[engaged(interactions)]
    earlier = SPLIT_ORDER[: SPLIT_ORDER.index(split)] if split in SPLIT_ORDER else ()
    window = positive[positive["split"] == split][["user_id", "item_id"]].drop_duplicates()
    seen = positive[positive["split"].isin(earlier)][["user_id", "item_id"]].drop_duplicates()
    window = window.merge(seen.assign(_seen=1), on=["user_id", "item_id"], how="left")
    return window[window["_seen"].isna()].drop(columns="_seen").reset_index(drop=True)


def with_scores(recs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """``recs`` with a score column (``-rank`` when the model gave none) and whether real scores were there."""
    if "score" in recs and recs["score"].notna().all():
        return recs, True
    return recs.assign(score=-recs["rank"].astype(float)), False


def top_k(recs: pd.DataFrame, k: int) -> pd.DataFrame:
    """The rows of ``recs`` with rank <= k (ranks are 1-based)."""
    return recs[recs["rank"] <= k]


def ndcg_per_user(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> pd.DataFrame:
    """Binary-gain NDCG@k per user who has at least one relevant item (user_id, ndcg, n_relevant).

    Computed by ``models.metrics.ndcg_at_k``, the one NDCG of the project (the evaluation's table uses it
    too): ideal DCG over min(#relevant, k) hits, the same definition as Evidently's NDCG, so the per-group
    figures average to the overall figure the quality report shows.
    """
    rel = relevant.drop_duplicates()
    relevant_sets = rel.groupby("user_id")["item_id"].agg(set)
    ranked = top_k(recs, k).sort_values(["user_id", "rank"], kind="stable").groupby("user_id")["item_id"]
    lists = ranked.agg(list)
    # Users without recommendations count as 0, like users whose list misses every relevant item.
    rows = [
        (user, metrics.ndcg_at_k(lists.get(user, []), items, k), len(items))
        for user, items in relevant_sets.items()
    ]
    return pd.DataFrame(rows, columns=["user_id", "ndcg", "n_relevant"]).astype({"ndcg": float})


def mean_ndcg(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> float:
    """Mean NDCG@k over the users with at least one relevant item (0.0 when there are none)."""
    per_user = ndcg_per_user(recs, relevant, k)
    return float(per_user["ndcg"].mean()) if len(per_user) else 0.0


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``monitoring`` schema if it is missing."""
    con.execute(f"create schema if not exists {MONITORING_SCHEMA}")


def fmt(value: object, digits: int = 4) -> str:
    """A number for a message or a table cell: floats rounded, everything else as text."""
    if isinstance(value, float | np.floating):
        return "nan" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def html_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a plain HTML table (escaped, floats rounded)."""
    return frame.to_html(
        index=False, border=0, classes="tbl", float_format=lambda v: f"{v:.{digits}f}", na_rep="", escape=True
    )


_PAGE_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table.tbl { border-collapse: collapse; margin: .6em 0; } .tbl th, .tbl td { padding: 4px 10px; }
.tbl th { background: #f0f0f0; text-align: left; } .tbl td { border-top: 1px solid #e4e4e4; }
.pass { color: #17692a; font-weight: bold; } .fail { color: #a4161a; font-weight: bold; }
p.note { color: #555; max-width: 60em; } section { overflow-x: auto; }
"""


def html_page(title: str, sections: Sequence[tuple[str, Iterable[str]]]) -> str:
    """A self-contained HTML page (no scripts, no external files): a title and (heading, html parts) sections."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, parts in sections:
        body.append(f"<section><h2>{html.escape(heading)}</h2>")
        body.extend(parts)
        body.append("</section>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_PAGE_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )


def paragraph(text: str, css_class: str = "note") -> str:
    """An escaped paragraph."""
    return f'<p class="{css_class}">{html.escape(text)}</p>'


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
