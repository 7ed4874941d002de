"""Next-item transitions: what users engaged with right after the items this user engaged with last.

A first-order sequential model in the spirit of Markov-chain recommenders (FPMC's transition part, Rendle et
al. 2010) and session-kNN: ``T[i, j]`` counts how often, over every user's time-ordered engagements in the
view, item ``j`` followed item ``i`` within ``window`` engagements (weight ``decay ** (distance - 1)``), row
normalized with a shrinkage. A user's score for ``j`` sums ``T[h, j]`` over the user's last ``recent``
engagements ``h``, the latest weighted most (``recent_decay ** age``). EASE, item-kNN and the two-tower's
bag of history see which items co-occur, not in which order; on data consumed in sessions (MovieLens ratings
are entered in sittings) the order carries signal they do not. Written here because no maintained library
offers this as a fit-on-a-view scorer over our catalog positions; it is a few sparse-matrix lines.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from models.history import HistoryStore
from models.recdata import RecData
from models.retrieval.baselines import BaseRecommender, recent_rows, sparse_scores


def transition_matrix(
    histories: dict[str, np.ndarray], n_items: int, window: int, decay: float, shrinkage: float
) -> sp.csr_matrix:
    """(items x items) ``T[i, j]``: decayed counts of ``j`` following ``i`` within ``window``, row-normalized.

    ``T[i, :] = counts[i, :] / (sum_j counts[i, j] + shrinkage)``; an item never followed by anything has an
    empty row. Repeated pairs add up; an item following itself is not counted.
    """
    rows, cols, vals = [], [], []
    for seq in histories.values():
        seq = np.asarray(seq, dtype=np.int64)
        for d in range(1, min(window, len(seq) - 1) + 1):
            a, b = seq[:-d], seq[d:]
            keep = a != b
            rows.append(a[keep])
            cols.append(b[keep])
            vals.append(np.full(int(keep.sum()), decay ** (d - 1)))
    if not rows:
        return sp.csr_matrix((n_items, n_items))
    counts = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    )
    counts.sum_duplicates()
    out_weight = np.asarray(counts.sum(1)).ravel()
    scale = 1.0 / (out_weight + shrinkage)
    scale[out_weight == 0] = 0.0
    return sp.csr_matrix(sp.diags(scale) @ counts)


class TransitionRecommender(BaseRecommender):
    """Scores the catalog by the transitions out of the user's last ``recent`` engagements (see module doc)."""

    name = "transitions"

    def __init__(
        self,
        window: int = 5,
        decay: float = 0.7,
        recent: int = 5,
        recent_decay: float = 0.7,
        shrinkage: float = 10.0,
    ) -> None:
        super().__init__()
        self.window, self.decay, self.recent = window, decay, recent
        self.recent_decay, self.shrinkage = recent_decay, shrinkage

    def _fit(self, view: RecData) -> None:
        self.transitions = transition_matrix(
            self._history, view.n_items, self.window, self.decay, self.shrinkage
        )

    def _observe(self, view: RecData) -> None:
        self.user_row, self.user_recent = self._recent_rows(self._history, view.n_items)

    def for_store(self, store: HistoryStore, user_ids: Sequence[str]) -> TransitionRecommender:
        """The same transitions reading ``user_ids``' last engagements from ``store`` (a request's, at serving)."""
        clone = copy.copy(self)
        history = {u: np.asarray(store.user_items(u), dtype=np.int64) for u in user_ids}
        clone.user_row, clone.user_recent = self._recent_rows(history, len(self.item_ids))
        return clone

    def _recent_rows(
        self, history: dict[str, np.ndarray], n_items: int
    ) -> tuple[dict[str, int], sp.csr_matrix]:
        """Each user's last ``recent`` engagements as a weighted (users x items) row, the latest weighted most."""
        return recent_rows(history, n_items, self.recent, self.recent_decay)

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        return sparse_scores(
            self._popularity_prior(), user_ids, self.user_row, self.user_recent, self.transitions
        )

    def save(self, path: Path) -> None:
        super().save(path)
        sp.save_npz(path / "transitions.npz", self.transitions)
        (path / "config.json").write_text(
            json.dumps(
                {"model": self.name, "window": self.window, "decay": self.decay, "recent": self.recent,
                 "recent_decay": self.recent_decay, "shrinkage": self.shrinkage}
            )
        )  # fmt: skip
