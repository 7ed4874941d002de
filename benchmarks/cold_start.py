"""Users without history at the cutoff: how far can one list per cohort go on ml-100k?

About half of ml-100k's test users under the share split have no engagement before the test window. For them
every model falls back to a list that does not depend on the user's own history. This prints the full-ranking
NDCG@10 over those users, on valid and on test, of:

- recency-weighted popularity (half-lives 3 .. 28 days), of everyone's engagements and of newcomers' only
  (engagements within ``NEWCOMER_DAYS`` of their user's first event, what ``log_newcomer_share`` reads);
- cohort popularity: the same counts over the users of the same gender, occupation or age band (or a pair of
  them, or all three), shrunk toward everyone's list: ``(w_c(i) + beta * share(i)) / (W_c + beta)``;
- the ceiling of any single list: the test window's own counts over those users (it reads the labels, so it is
  an upper bound for every cohort-free list, not a model).

Each family's half-life and beta are chosen on valid; the test column is reported, not chosen on.

Usage (after ``benchmarks/accuracy.py --datasets ml-100k --rebuild`` built the warehouse)::

    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/cold_start.py
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ATTRIBUTES = ("gender", "occupation", "user_group")
HALF_LIVES = (3.0, 7.0, 14.0, 28.0)
BETAS = (10.0, 50.0, 200.0, 1000.0, 5000.0)


def engagement_weights(view, half_life: float, newcomers: bool) -> pd.DataFrame:  # noqa: ANN001
    """``user_id, item, weight`` of the view's engagements, recency-weighted (newcomers' only when asked)."""
    from models.ranking.stack_features import NEWCOMER_DAYS

    h = view.histories
    if newcomers:
        first = view.interactions.groupby("user_id")["event_ts"].min()
        since_first = (h["event_ts"] - h["user_id"].map(first)) / pd.Timedelta(days=1)
        h = h[since_first.to_numpy(float) < NEWCOMER_DAYS]
    age = ((view.now - h["event_ts"]) / pd.Timedelta(days=1)).to_numpy(float)
    return pd.DataFrame(
        {
            "user_id": h["user_id"].to_numpy(),
            "item": view.item_idx(h["item_id"]),
            "weight": 0.5 ** (age / half_life),
        }
    )


def cohort_lists(
    view, users: list[str], weights: pd.DataFrame, cols: tuple[str, ...], beta: float
) -> np.ndarray:  # noqa: ANN001
    """(users, items) scores: each user's cohort's weighted counts shrunk toward everyone's share."""
    everyone = np.bincount(weights["item"], weights=weights["weight"], minlength=view.n_items)
    share = everyone / max(everyone.sum(), 1e-12)
    if not cols:
        return np.tile(share, (len(users), 1))
    attrs = view.users.set_index("user_id")[list(cols)].astype(object).fillna("unknown")
    key = attrs.apply(tuple, axis=1)
    engaged_key = weights["user_id"].map(key)
    out = np.zeros((len(users), view.n_items))
    cache: dict[tuple, np.ndarray] = {}
    for r, user in enumerate(users):
        k = key.get(user, ("unknown",) * len(cols))
        if k not in cache:
            mine = weights[engaged_key == k]
            counts = np.bincount(mine["item"], weights=mine["weight"], minlength=view.n_items)
            cache[k] = (counts + beta * share) / (counts.sum() + beta)
        out[r] = cache[k]
    return out


_STATE: dict[tuple[str, tuple[str, ...]], tuple] = {}


def _split_state(data, split: str, users: tuple[str, ...]) -> tuple:  # noqa: ANN001
    """Relevant items, exclusions and popularity at ``split``'s start (one dataset per run: keyed by split)."""
    if (split, users) not in _STATE:
        view = data.as_of(data.split_start(split))
        _STATE[split, users] = data.relevant(split), view.exclusions(list(users)), view.item_popularity()
    return _STATE[split, users]


def mean_ndcg(data, split: str, users: list[str], scores: np.ndarray) -> float:  # noqa: ANN001
    """Full-ranking NDCG@10 over ``users`` with the protocol's exclusions (ties broken by popularity)."""
    from models import metrics

    relevant, excluded, popularity = _split_state(data, split, tuple(users))
    values = []
    for r, user in enumerate(users):
        s = scores[r] + 1e-12 * popularity / (popularity.max() + 1.0)
        s[excluded[r]] = -np.inf
        values.append(metrics.ndcg_at_k(np.argsort(-s, kind="stable")[:10].tolist(), relevant[user], 10))
    return float(np.mean(values))


def main() -> None:
    """Print one line per family: its choice on valid, valid and test NDCG@10 over users without history."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "bench-accuracy" / "ml-100k")
    args = parser.parse_args()
    os.environ.update(
        {"RECGEN_HOME": str(args.home), "RECGEN_DUCKDB_PATH": str(args.home / "recgen.duckdb"),
         "RECGEN_DATASET": "recbole", "RECGEN_DATASET_PATH": str(ROOT / "data" / "datasets" / "ml-100k")}
    )  # fmt: skip
    from models import evaluation as ev
    from models.data import warehouse
    from models.settings import get_settings

    with warehouse.connect(get_settings().database) as con:
        data = ev.build_data(ev.read_marts(con), ev.read_item_embeddings(con))
    cold: dict[str, list[str]] = {}
    for split in ("valid", "test"):
        history = data.as_of(data.split_start(split)).history_idx()
        cold[split] = [u for u in sorted(data.relevant(split)) if len(history.get(u, ())) == 0]
    print(f"users without history: valid {len(cold['valid'])}, test {len(cold['test'])}", flush=True)
    known = {a: int(data.users[a].notna().sum()) for a in ATTRIBUTES}
    print(f"users with a value: {known}", flush=True)

    cohorts: list[tuple[str, ...]] = [()] + [
        c for n in (1, 2, 3) for c in itertools.combinations(ATTRIBUTES, n)
    ]
    for newcomers in (False, True):
        for cols in cohorts:
            grid = [(hl, b) for hl in HALF_LIVES for b in (BETAS if cols else (0.0,))]
            scores = {}
            for split in ("valid", "test"):
                view = data.as_of(data.split_start(split))
                for hl in HALF_LIVES:
                    w = engagement_weights(view, hl, newcomers)
                    for beta in BETAS if cols else (0.0,):
                        scores[split, hl, beta] = mean_ndcg(
                            data, split, cold[split], cohort_lists(view, cold[split], w, cols, beta)
                        )
            hl, beta = max(grid, key=lambda g: (scores["valid", *g], g[1]))
            name = ("newcomers' " if newcomers else "") + ("x".join(cols) or "everyone")
            print(
                f"{name:40s} half-life {hl:>4g} d, beta {beta:>6g}: valid {scores['valid', hl, beta]:.4f}, "
                f"test {scores['test', hl, beta]:.4f}",
                flush=True,
            )
    for split in ("valid", "test"):
        relevant = data.relevant(split)
        counts = np.zeros(data.n_items)
        for user in cold[split]:
            counts[list(relevant[user])] += 1.0
        ceiling = mean_ndcg(data, split, cold[split], np.tile(counts, (len(cold[split]), 1)))
        print(f"ceiling of any single list ({split} window's own counts): {split} {ceiling:.4f}", flush=True)


if __name__ == "__main__":
    main()
