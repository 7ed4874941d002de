"""Baselines on the shared model surface: popularity (plain and recency-weighted), item-kNN, EASE and BPR-MF.

Every model, these and the full stack in ``models.recommender``, exposes ``fit(view)``, ``score(user_ids,
item_ids)`` and ``recommend(user_ids, k, exclude_seen)``, so ``models.evaluation`` runs one protocol over all.

Protocol (``models.evaluation``): ``fit(view)`` learns the model's parameters from a :class:`RecData` view
(``data.as_of(cutoff)``; in the evaluation always the TRAIN view, events before the valid cutoff), with the
hyperparameters (and BPR's epoch) chosen on VALID; no model is refit on train + valid. ``observe(view)`` then
moves the model to a later cutoff without learning: the users' histories (the input of every model), item
engagement counts (the popularity models' state), the items already published and the items not to recommend
are read as of the new view, as a model trained on a schedule serves between retrains. A model never returns
an item the user engaged with or rated before the cutoff (``exclude_seen``) or one not yet published (always).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from models.history import HistoryStore
from models.progress import EpochProgress
from models.recdata import RecData, exclusion_lists
from models.retrieval.index import mask_seen, stable_topk
from models.torch_utils import EarlyStopping, seed_everything

log = logging.getLogger(__name__)


class BaseRecommender:
    """Full-catalog scorers: subclasses implement ``_fit`` and ``score_all``; recommend/score come from here."""

    name = "base"

    def __init__(self) -> None:
        self.view: RecData | None = None

    def fit(self, view: RecData) -> BaseRecommender:
        """Learn the parameters from the view's engagements; recommendations are as of ``view.now``."""
        self._read_state(view)
        self._fit(view)
        self._observe(view)
        return self

    def observe(self, view: RecData) -> BaseRecommender:
        """Read histories, counts and exclusions as of a (later) view, keeping the learned parameters."""
        self._read_state(view)
        self._observe(view)
        return self

    def _read_state(self, view: RecData) -> None:
        self.view = view
        self.item_ids = view.items["item_id"].to_numpy()
        self._history = view.history_idx()
        self._seen = view.seen_idx()
        self._unpublished = view.unpublished()
        self.popularity = view.item_popularity()

    def _fit(self, view: RecData) -> None:
        raise NotImplementedError

    def _observe(self, view: RecData) -> None:
        """Per-view inputs built from ``self._history`` (user rows of a matrix); nothing by default."""

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        """Scores (users, catalog items) — higher is better."""
        raise NotImplementedError

    def for_store(self, store: HistoryStore, user_ids: Sequence[str]) -> BaseRecommender:
        """The same learned model reading ``user_ids``' histories from ``store`` (a request's, at serving).

        Models without per-user state (popularity) return themselves; matrix models rebuild their user rows
        for just these users, so a request never copies the snapshot's matrix.
        """
        if not hasattr(self, "user_items"):
            return self
        clone = copy.copy(self)
        history = {u: np.unique(store.user_items(u)).astype(np.int64) for u in user_ids}
        clone.user_row, clone.user_items = _user_item_matrix(history, len(self.item_ids))
        return clone

    def score(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
        """Score of each (user_ids[i], item_ids[i]) pair."""
        assert self.view is not None, "fit first"
        scores = self.score_all(list(dict.fromkeys(user_ids)))
        row = {u: r for r, u in enumerate(dict.fromkeys(user_ids))}
        cols = self.view.item_idx(item_ids)
        return np.asarray(
            [
                float(scores[row[u], c]) if c >= 0 else float("nan")
                for u, c in zip(user_ids, cols, strict=True)
            ]
        )

    def exclusions(self, user_ids: list[str], exclude_seen: bool = True) -> list[np.ndarray]:
        """Items not to recommend per user: unpublished ones always, engaged with or rated when ``exclude_seen``."""
        return exclusion_lists(self._seen if exclude_seen else {}, self._unpublished, user_ids)

    def recommend(
        self, user_ids: list[str], k: int, exclude_seen: bool = True, batch_size: int | None = None
    ) -> dict[str, list[str]]:
        """Top-k item ids per user (cold-start users included: every model falls back to popularity)."""
        out: dict[str, list[str]] = {}
        # a (users x catalog) score matrix per batch: keep it near 2**25 floats whatever the catalog size
        batch_size = batch_size or max(1, min(1024, 2**25 // max(len(self.item_ids), 1)))
        for s in range(0, len(user_ids), batch_size):
            users = list(user_ids[s : s + batch_size])
            scores = mask_seen(self.score_all(users).float().clone(), self.exclusions(users, exclude_seen))
            # equal scores keep catalog order, so results never depend on the topk kernel
            values, indices = stable_topk(scores, k)
            for r, user in enumerate(users):
                keep = torch.isfinite(values[r]).cpu().numpy()
                out[user] = self.item_ids[indices[r].cpu().numpy()[keep]].tolist()
        return out

    def _popularity_prior(self) -> torch.Tensor:
        """A tiny popularity term that breaks score ties (and orders cold users) by popularity."""
        pop = torch.as_tensor(self.popularity, dtype=torch.float32)
        return 1e-6 * pop / (pop.max() + 1.0)

    def save(self, path: Path) -> None:
        """Write the learned state (subclasses add theirs) and the catalog order."""
        path.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"item_id": self.item_ids, "popularity": self.popularity}).to_parquet(
            path / "items.parquet"
        )
        (path / "config.json").write_text(json.dumps({"model": self.name}))


class PopularityRecommender(BaseRecommender):
    """Most engaged-with items in the view, the same list for everyone."""

    name = "popularity"

    def _fit(self, view: RecData) -> None:
        pass

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        base = torch.as_tensor(self.popularity, dtype=torch.float32)
        return base.unsqueeze(0).expand(len(user_ids), -1)


def recency_popularity(view: RecData, half_life_days: float) -> np.ndarray:
    """Engagements per item in the view, each decayed by its age at ``view.now`` (recent interest counts more)."""
    counts = np.zeros(view.n_items, dtype=np.float64)
    if len(view.histories):
        age_days = ((view.now - view.histories["event_ts"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
        np.add.at(
            counts,
            view.item_idx(view.histories["item_id"]),
            0.5 ** (np.clip(age_days, 0, None) / half_life_days),
        )
    return counts


class RecencyPopularityRecommender(BaseRecommender):
    """Engagements per item decayed by their age at the cutoff (half-life chosen on valid), the same for all."""

    name = "recency_popularity"

    def __init__(self, half_life_days: float = 7.0) -> None:
        super().__init__()
        self.half_life_days = half_life_days

    def _fit(self, view: RecData) -> None:
        pass

    def _observe(self, view: RecData) -> None:
        self.recency = recency_popularity(view, self.half_life_days)

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        base = torch.as_tensor(self.recency, dtype=torch.float32) + self._popularity_prior()
        return base.unsqueeze(0).expand(len(user_ids), -1)


class ItemKNNRecommender(BaseRecommender):
    """Item-based kNN: shrunk cosine similarity of item co-occurrence columns, top neighbours kept, summed
    over the history. sim(i, j) = co(i, j) / (sqrt(n_i n_j) + shrinkage); neighbours and shrinkage are
    chosen on valid."""

    name = "itemknn"

    def __init__(self, n_neighbors: int = 50, shrinkage: float = 0.0) -> None:
        super().__init__()
        self.n_neighbors = n_neighbors
        self.shrinkage = shrinkage

    def _fit(self, view: RecData) -> None:
        _, matrix = _user_item_matrix(self._history, view.n_items)
        co = (matrix.T @ matrix).tocsr().astype(np.float64)
        co.setdiag(0.0)
        co.eliminate_zeros()
        counts = np.asarray(matrix.sum(0)).ravel()
        norm = np.sqrt(np.maximum(counts, 1.0))
        co = co.tocoo()
        sim = sp.csr_matrix(
            (co.data / (norm[co.row] * norm[co.col] + self.shrinkage), (co.row, co.col)), shape=co.shape
        )
        self.similarity = self._keep_top(sim, self.n_neighbors)

    def _observe(self, view: RecData) -> None:
        self.user_row, self.user_items = _user_item_matrix(self._history, view.n_items)

    @staticmethod
    def _keep_top(sim: sp.csr_matrix, n: int) -> sp.csr_matrix:
        """Keep each item's n most similar neighbours (rows), which removes noise from one-off co-occurrences."""
        sim.eliminate_zeros()
        rows, cols, vals = [], [], []
        for i in range(sim.shape[0]):
            start, end = sim.indptr[i], sim.indptr[i + 1]
            if end == start:
                continue
            data, idx = sim.data[start:end], sim.indices[start:end]
            top = np.argsort(-data, kind="stable")[:n]
            rows.append(np.full(len(top), i))
            cols.append(idx[top])
            vals.append(data[top])
        if not rows:
            return sp.csr_matrix(sim.shape)
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=sim.shape
        )

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        # score(u, i) = sum over history items j of sim(j, i)
        return sparse_scores(
            self._popularity_prior(), user_ids, self.user_row, self.user_items, self.similarity
        )

    def save(self, path: Path) -> None:
        super().save(path)
        sp.save_npz(path / "similarity.npz", self.similarity)


def sparse_scores(
    prior: torch.Tensor,
    user_ids: Sequence[str],
    user_row: dict[str, int],
    user_matrix: sp.csr_matrix,
    item_item: sp.csr_matrix,
) -> torch.Tensor:
    """(users x items) ``prior`` plus, for users in ``user_row``, their row of ``user_matrix @ item_item``."""
    out = prior.unsqueeze(0).repeat(len(user_ids), 1)
    known = [(r, user_row[u]) for r, u in enumerate(user_ids) if u in user_row]
    if known:
        rows = user_matrix[[m for _, m in known]]
        scores = np.asarray((rows @ item_item).todense(), dtype=np.float32)
        out[[r for r, _ in known]] += torch.as_tensor(scores)
    return out


def _user_item_matrix(history: dict[str, np.ndarray], n_items: int) -> tuple[dict[str, int], sp.csr_matrix]:
    """Binary (users x items) matrix of the histories (repeated engagements count once) and its row index."""
    users = list(history)
    rows = (
        np.concatenate([np.full(len(history[u]), r) for r, u in enumerate(users)]) if users else np.zeros(0)
    )
    cols = np.concatenate([history[u] for u in users]) if users else np.zeros(0)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), n_items))
    matrix.data[:] = 1.0
    return {u: r for r, u in enumerate(users)}, matrix


def ease_weights(matrix: sp.spmatrix | np.ndarray, l2: float) -> np.ndarray:
    """EASE item-item weights (Steck 2019): P = (X^T X + l2 I)^-1, B = I - P / diag(P), so diag(B) = 0.

    Closed form of the ridge regression of every item's column on the others with a zero-diagonal constraint;
    the (items x items) inverse makes it right for catalogs up to some tens of thousands of items.
    """
    x = sp.csr_matrix(matrix, dtype=np.float64)
    gram = np.asarray((x.T @ x).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]  # column j divided by P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASERecommender(BaseRecommender):
    """EASE (Steck, 2019): a closed-form linear item-item model, score(u) = x_u B; l2 is chosen on valid."""

    name = "ease"

    def __init__(self, l2: float = 500.0) -> None:
        super().__init__()
        self.l2 = l2

    def _fit(self, view: RecData) -> None:
        _, matrix = _user_item_matrix(self._history, view.n_items)
        self.weights = torch.as_tensor(ease_weights(matrix, self.l2), dtype=torch.float32)

    def _observe(self, view: RecData) -> None:
        self.user_row, self.user_items = _user_item_matrix(self._history, view.n_items)

    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        out = self._popularity_prior().unsqueeze(0).repeat(len(user_ids), 1)
        known = [(r, self.user_row[u]) for r, u in enumerate(user_ids) if u in self.user_row]
        if known:
            rows = torch.as_tensor(self.user_items[[m for _, m in known]].toarray(), dtype=torch.float32)
            out[[r for r, _ in known]] += rows @ self.weights
        return out

    def save(self, path: Path) -> None:
        super().save(path)
        np.save(path / "weights.npy", self.weights.numpy())
        (path / "config.json").write_text(json.dumps({"model": self.name, "l2": self.l2}))


def recent_rows(
    history: dict[str, np.ndarray], n_items: int, recent: int, decay: float, distinct: bool = False
) -> tuple[dict[str, int], sp.csr_matrix]:
    """Each user's last ``recent`` engagements (time-ordered ``history``) as a (users x items) row weighted
    ``decay**k`` (k = 0 the latest); with ``distinct`` a repeated engagement counts once, at its latest."""
    users = list(history)
    rows, cols, vals = [], [], []
    for r, u in enumerate(users):
        latest_first = history[u][::-1]
        if distinct:
            _, first = np.unique(latest_first, return_index=True)
            latest_first = latest_first[np.sort(first)]
        last = latest_first[:recent]
        rows.append(np.full(len(last), r))
        cols.append(last)
        vals.append(decay ** np.arange(len(last), dtype=np.float64))
    shape = (len(users), n_items)
    if not users:
        return {}, sp.csr_matrix(shape)
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    return {u: r for r, u in enumerate(users)}, matrix


class RecentEASERecommender(EASERecommender):
    """EASE's weights (learned from whole histories) read from each user's last ``recent`` engagements only,
    the latest weighted most (``decay`` per step back): what the user did lately, not what they ever did.

    A stack source (``ranker.stack_candidates`` with an ``ease_recent`` entry), not a baseline; the plain EASE
    source scores whole histories.
    """

    name = "ease_recent"

    def __init__(self, l2: float = 500.0, recent: int = 10, decay: float = 0.8) -> None:
        super().__init__(l2)
        self.recent, self.decay = recent, decay

    def _observe(self, view: RecData) -> None:
        self.user_row, self.user_items = recent_rows(
            self._history, view.n_items, self.recent, self.decay, distinct=True
        )

    def for_store(self, store: HistoryStore, user_ids: Sequence[str]) -> RecentEASERecommender:
        """The same weights reading ``user_ids``' last engagements from ``store`` (in time order)."""
        clone = copy.copy(self)
        history = {u: np.asarray(store.user_items(u), dtype=np.int64) for u in user_ids}
        clone.user_row, clone.user_items = recent_rows(
            history, len(self.item_ids), self.recent, self.decay, distinct=True
        )
        return clone

    def save(self, path: Path) -> None:
        super().save(path)
        config = {"model": self.name, "l2": self.l2, "recent": self.recent, "decay": self.decay}
        (path / "config.json").write_text(json.dumps(config))


class BPRRecommender(BaseRecommender):
    """Matrix factorization trained with the BPR pairwise loss (Rendle et al., 2009) on uniform negatives.

    With a ``monitor`` (the evaluation passes valid NDCG@10 of the model as it stands), training stops after
    ``patience`` epochs without a better figure and keeps the best epoch's weights; ``best_epoch`` records it.
    """

    name = "bpr"

    def __init__(
        self, dim: int = 64, epochs: int = 30, lr: float = 0.01, weight_decay: float = 1e-5, batch_size: int = 1024,
        seed: int = 0, device: str = "cpu", monitor: Callable[[BPRRecommender], float] | None = None,
        patience: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        self.dim, self.epochs, self.lr, self.weight_decay = dim, epochs, lr, weight_decay
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.monitor, self.patience = monitor, patience
        self.loss_history: list[float] = []
        self.valid_history: list[float] = []
        self.best_epoch = 0

    def _fit(self, view: RecData) -> None:
        generator = seed_everything(self.seed)
        users = list(self._history)
        self.user_row = {u: r for r, u in enumerate(users)}
        pairs = np.unique(
            np.asarray(
                [(r, int(i)) for r, u in enumerate(users) for i in self._history[u]], dtype=np.int64
            ).reshape(-1, 2),
            axis=0,
        )
        n_items = view.n_items
        self.user_emb = torch.nn.Embedding(max(len(users), 1), self.dim).to(self.device)
        self.item_emb = torch.nn.Embedding(n_items, self.dim).to(self.device)
        self.item_bias = torch.nn.Embedding(n_items, 1).to(self.device)
        for emb in (self.user_emb, self.item_emb):
            torch.nn.init.normal_(emb.weight, std=0.1)
        torch.nn.init.zeros_(self.item_bias.weight)
        modules = (self.user_emb, self.item_emb, self.item_bias)
        params = [p for m in modules for p in m.parameters()]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        pairs_t = torch.as_tensor(pairs, device=self.device)
        stopping = EarlyStopping(self.patience)
        weights = torch.nn.ModuleList(modules)  # one state_dict over the three tables
        with EpochProgress("bpr", total=self.epochs, log=log) as progress:
            for epoch in range(self.epochs if len(pairs) else 0):
                order = torch.randperm(len(pairs_t), generator=generator).to(self.device)
                total = 0.0
                for s in range(0, len(order), self.batch_size):
                    batch = pairs_t[order[s : s + self.batch_size]]
                    u, pos = batch[:, 0], batch[:, 1]
                    neg = torch.randint(0, n_items, (len(batch),), generator=generator).to(self.device)
                    ue = self.user_emb(u)
                    x_pos = (ue * self.item_emb(pos)).sum(-1) + self.item_bias(pos).squeeze(-1)
                    x_neg = (ue * self.item_emb(neg)).sum(-1) + self.item_bias(neg).squeeze(-1)
                    loss = -F.logsigmoid(x_pos - x_neg).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(batch)
                self.loss_history.append(total / len(pairs_t))
                if self.monitor is None:
                    progress.step(loss=self.loss_history[-1])
                    self.best_epoch = epoch + 1
                    continue
                score = float(self.monitor(self))
                self.valid_history.append(score)
                progress.step(loss=self.loss_history[-1], valid_ndcg_at_10=score)
                stop = stopping.step(score, weights)
                if stopping.since_best == 0:
                    self.best_epoch = epoch + 1
                if stop:
                    progress.finish(f"no better valid NDCG@10 for {self.patience} epochs")
                    break
        stopping.restore(weights)

    @torch.inference_mode()
    def score_all(self, user_ids: list[str]) -> torch.Tensor:
        # users the model never saw get the popularity order (their factors would be random)
        out = self._popularity_prior().unsqueeze(0).repeat(len(user_ids), 1) + torch.as_tensor(
            self.popularity, dtype=torch.float32
        )
        known = [(r, self.user_row[u]) for r, u in enumerate(user_ids) if u in self.user_row]
        if known:
            ue = self.user_emb(torch.as_tensor([m for _, m in known], device=self.device))
            scores = ue @ self.item_emb.weight.T + self.item_bias.weight.T
            out[[r for r, _ in known]] = scores.float().cpu() + self._popularity_prior()
        return out

    def save(self, path: Path) -> None:
        super().save(path)
        torch.save(
            {
                "user": self.user_emb.state_dict(),
                "item": self.item_emb.state_dict(),
                "bias": self.item_bias.state_dict(),
            },
            path / "weights.pt",
        )
        (path / "users.json").write_text(json.dumps(list(self.user_row)))
