"""Candidate generation: two-tower logits (exact, or a faiss IVF index for large catalogs) unioned with popular
and fresh items.

Exact search is one (users x dim) @ (dim x items) product and ``torch.topk`` with each user's seen items set to
-inf. Above ``ann_threshold_items`` a faiss inverted-file index scores only the items in the ``n_probe`` lists
nearest to the user, which trades a little recall for a cost that grows with sqrt(n_items) instead of n_items
(``benchmarks/serve.py`` prints its recall@10 against exact search and both latencies on the served catalog).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

SOURCE_TWO_TOWER = "two_tower"
SOURCE_POPULAR = "popular"
SOURCE_FRESH = "fresh"
log = logging.getLogger(__name__)

# share of the IVF lists probed per query before calibration (FaissIndex.calibrate raises it until recall@10
# reaches retrieval.ann_target_recall; benchmarks/serve.py --items 100000 prints the sweep)
ANN_PROBE_SHARE = 0.2


@dataclass
class ItemSpace:
    """One catalog in the two-tower space: unit vectors, biases and the logit scale (1 / temperature)."""

    vecs: torch.Tensor
    bias: torch.Tensor
    scale: float

    def logits(self, user_vecs: torch.Tensor) -> torch.Tensor:
        """(users, items) retrieval logits."""
        return self.scale * (user_vecs @ self.vecs.T) + self.bias

    def pair_logits(self, user_vecs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logit of each (user_vecs[i], items[i])."""
        return self.scale * (user_vecs * self.vecs[items]).sum(-1) + self.bias[items]


def mask_seen(scores: torch.Tensor, seen: list[np.ndarray]) -> torch.Tensor:
    """Set ``scores[row, item] = -inf`` for every item in ``seen[row]`` (in place; returns scores)."""
    rows = [np.full(len(s), r) for r, s in enumerate(seen) if len(s)]
    if rows:
        r = torch.as_tensor(np.concatenate(rows), device=scores.device)
        c = torch.as_tensor(np.concatenate([s for s in seen if len(s)]), device=scores.device)
        scores[r, c] = float("-inf")
    return scores


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k where equal scores keep index order (torch.topk leaves tie order unspecified).

    Only the items at or above each row's k-th score are sorted, so this costs a topk plus tiny sorts.
    """
    k = min(k, scores.shape[1])
    kth = torch.topk(scores, k, dim=1).values[:, -1:]
    keep = scores >= kth
    values, indices = [], []
    for row in range(len(scores)):
        idx = torch.nonzero(keep[row]).squeeze(1)  # ascending item positions
        order = torch.sort(scores[row, idx], descending=True, stable=True).indices[:k]
        values.append(scores[row, idx[order]])
        indices.append(idx[order])
    if not values:
        return scores[:, :0], torch.zeros((0, 0), dtype=torch.long)
    return torch.stack(values), torch.stack(indices)


ANN_FILE = "ann.faiss"
ANN_META_FILE = "ann.json"


@dataclass
class FaissIndex:
    """faiss inverted file (IVF, inner product) over the exact retrieval logits.

    Each item is stored as ``[scale * v, bias]`` and each query as ``[u, 1]``, so the inner product faiss ranks
    by is the model's logit itself, bias included (a popular item is found like any other). Seen items are
    removed after the search, which fetches ``k`` plus the most seen items of any user in the batch. faiss
    (``faiss-cpu``) replaces a hand-written IVF: its IVF search is compiled, multi-threaded and serializable,
    so serving reads the index the pipeline built instead of re-clustering the catalog at start.
    """

    index: Any  # faiss.IndexIVFFlat
    n_probe: int

    @staticmethod
    def item_matrix(space: ItemSpace) -> np.ndarray:
        """(items, dim + 1) float32: scaled unit vectors and the bias."""
        vecs = space.scale * space.vecs.detach().float().cpu()
        return np.ascontiguousarray(torch.cat([vecs, space.bias.detach().float().cpu()[:, None]], 1).numpy())

    @classmethod
    def build(
        cls,
        space: ItemSpace,
        n_lists: int | None = None,
        n_probe: int | None = None,
        seed: int = 0,
        target_recall: float | None = None,
        user_vecs: torch.Tensor | None = None,
    ) -> FaissIndex:
        """IVF with ~sqrt(n_items) lists trained on <= 256 vectors a list, probing ``ANN_PROBE_SHARE`` of them.

        With ``target_recall``, the probe count is then raised until recall@10 against exact search reaches it
        on ``user_vecs`` (:meth:`calibrate`), so a retrained model whose vectors cluster differently keeps the
        recall asked for.
        """
        import faiss

        data = cls.item_matrix(space)
        n_lists = n_lists or max(1, min(len(data) // 39, int(math.sqrt(len(data)))))
        quantizer = faiss.IndexFlatIP(data.shape[1])
        index = faiss.IndexIVFFlat(quantizer, data.shape[1], n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        train = data[rng.choice(len(data), min(len(data), 256 * n_lists), replace=False)]
        index.train(train)
        index.add(data)
        ann = cls(index, n_probe or max(1, math.ceil(ANN_PROBE_SHARE * n_lists)))
        if target_recall is not None:
            ann.calibrate(space, target_recall, user_vecs, seed=seed)
        return ann

    def recall_at(self, queries: np.ndarray, exact_items: np.ndarray, k: int = 10) -> float:
        """Mean recall@k of this index's search against the given exact top-k item positions."""
        import faiss

        params = faiss.SearchParametersIVF(nprobe=self.n_probe)
        found = self.index.search(queries, k, params=params)[1]
        return float(
            np.mean(
                [len(set(a) & set(b)) / k for a, b in zip(found.tolist(), exact_items.tolist(), strict=True)]
            )
        )

    def calibrate(
        self,
        space: ItemSpace,
        target_recall: float,
        user_vecs: torch.Tensor | None = None,
        k: int = 10,
        n_queries: int = 256,
        seed: int = 0,
    ) -> float:
        """Raise ``n_probe`` a quarter at a time (to every list at most) until recall@k reaches ``target_recall``.

        The queries are a sample of ``user_vecs`` (real users' vectors: the asset that builds the index has
        them) or, without them, of the item vectors, which live in the same cosine space but sit inside the IVF's
        own clusters and so are easier than users; the exact top-k comes from a flat inner-product search over
        the same rows. Returns the recall reached. faiss has no recall-targeted probe setting for IVF (its
        ``ParameterSpace`` autotuning needs ground truth and sweeps every parameter), so this is the few lines
        of that search we need.
        """
        import faiss

        data = self.item_matrix(space)
        rng = np.random.default_rng(seed)
        if user_vecs is not None and len(user_vecs):
            vecs = user_vecs.detach().float().cpu().numpy()
            source = "user"
        else:
            vecs, source = data[:, :-1] / max(float(space.scale), 1e-12), "item"
        picked = rng.choice(len(vecs), min(len(vecs), n_queries), replace=False)
        queries = np.ascontiguousarray(
            np.concatenate([vecs[picked], np.ones((len(picked), 1))], 1), dtype=np.float32
        )
        flat = faiss.IndexFlatIP(data.shape[1])
        flat.add(data)
        exact = flat.search(queries, k)[1]
        recall = self.recall_at(queries, exact, k)
        while recall < target_recall and self.n_probe < self.index.nlist:
            self.n_probe = min(self.index.nlist, math.ceil(self.n_probe * 1.25))
            recall = self.recall_at(queries, exact, k)
        log.info(
            "faiss IVF: %d lists, n_probe %d, recall@%d %.3f on %d %s queries",
            self.index.nlist, self.n_probe, k, recall, len(picked), source,
        )  # fmt: skip
        return recall

    def search(
        self, user_vecs: torch.Tensor, k: int, seen: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (logits, item positions) per user, seen items excluded (-inf / 0 padded when fewer found)."""
        import faiss

        n_items = self.index.ntotal
        fetch = min(n_items, k + max((len(s) for s in seen), default=0))
        query = torch.cat([user_vecs.detach().float().cpu(), torch.ones(len(user_vecs), 1)], 1).numpy()
        faiss.omp_set_num_threads(torch.get_num_threads())
        params = faiss.SearchParametersIVF(nprobe=self.n_probe)
        scores, items = self.index.search(np.ascontiguousarray(query), fetch, params=params)
        out_scores = np.full((len(query), k), -np.inf, dtype=np.float32)
        out_items = np.zeros((len(query), k), dtype=np.int64)
        for row in range(len(query)):
            keep = items[row] >= 0
            if len(seen[row]):
                keep &= ~np.isin(items[row], seen[row])
            found = items[row][keep][:k]
            out_items[row, : len(found)] = found
            out_scores[row, : len(found)] = scores[row][keep][:k]
        device = user_vecs.device
        return torch.as_tensor(out_scores, device=device), torch.as_tensor(out_items, device=device)

    def save(self, path: Path) -> None:
        """Write the index (``ann.faiss``) and its search setting (``ann.json``)."""
        import faiss

        faiss.write_index(self.index, str(path / ANN_FILE))
        (path / ANN_META_FILE).write_text(json.dumps({"n_probe": self.n_probe, "kind": "faiss.IndexIVFFlat"}))

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        """Read what :meth:`save` wrote."""
        import faiss

        meta = json.loads((path / ANN_META_FILE).read_text())
        return cls(faiss.read_index(str(path / ANN_FILE)), int(meta["n_probe"]))


@dataclass
class Candidates:
    """Per user: candidate item positions, their two-tower scores and where each came from."""

    items: list[np.ndarray]
    scores: list[np.ndarray]  # two-tower logit of every candidate (also of popular/fresh ones)
    sources: list[list[str]]


@dataclass
class RetrievalIndex:
    """Item vectors of one catalog plus the popularity and freshness orders used to widen the candidate set.

    Above ``ann_threshold_items`` items the two-tower search goes through a :class:`FaissIndex`, built on the
    first search (or by :meth:`ensure_ann`), saved with the index and read back by :meth:`load`.
    """

    space: ItemSpace  # unit item vectors, biases, logit scale
    popularity: np.ndarray  # recent engagement counts per item
    published_hours: np.ndarray  # publication time per item (hours since epoch)
    ann_threshold_items: int = 50_000
    ann_target_recall: float | None = 0.99
    ann: FaissIndex | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.popular_order = np.argsort(-self.popularity, kind="stable")
        self.fresh_order = np.argsort(-self.published_hours, kind="stable")

    @property
    def n_items(self) -> int:
        return len(self.space.vecs)

    @property
    def uses_ann(self) -> bool:
        """Whether the two-tower search is approximate (the catalog is above the ANN threshold)."""
        return self.n_items > self.ann_threshold_items

    def ensure_ann(self, user_vecs: torch.Tensor | None = None) -> FaissIndex | None:
        """Build the ANN index now if this catalog uses one (so no request pays for it); None when exact.

        ``user_vecs`` (a sample of real users' vectors) are the queries its probe count is calibrated on.
        """
        if self.ann is None and self.uses_ann:
            self.ann = FaissIndex.build(self.space, target_recall=self.ann_target_recall, user_vecs=user_vecs)
        return self.ann

    def search_exact(
        self, user_vecs: torch.Tensor, k: int, seen: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (logits, item positions) over every item, seen items excluded."""
        scores = mask_seen(self.space.logits(user_vecs), seen)
        top = torch.topk(scores, min(k, self.n_items), dim=1)
        return top.values, top.indices

    def search(
        self, user_vecs: torch.Tensor, k: int, seen: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (logits, item positions) by dot product + bias, seen items excluded; exact or ANN by size."""
        k = min(k, self.n_items)
        ann = self.ensure_ann()
        if ann is not None:
            return ann.search(user_vecs, k, seen)
        return self.search_exact(user_vecs, k, seen)

    def _top_unseen(self, order: np.ndarray, n: int, exclude: set[int]) -> list[int]:
        out: list[int] = []
        for item in order:
            if len(out) >= n:
                break
            if int(item) not in exclude:
                out.append(int(item))
        return out

    def candidates(
        self, user_vecs: torch.Tensor, seen: list[np.ndarray], n_candidates: int, n_popular: int, n_fresh: int
    ) -> Candidates:
        """Two-tower top ``n_candidates`` unioned with the top unseen popular and freshest items, labelled by source."""
        scores, items = self.search(user_vecs, n_candidates, seen)
        scores_np, items_np = scores.float().cpu().numpy(), items.cpu().numpy()
        out_items, out_scores, out_sources = [], [], []
        for row in range(len(user_vecs)):
            excluded = set(seen[row].tolist())
            valid = np.isfinite(scores_np[row])
            sources: dict[int, list[str]] = {int(i): [SOURCE_TWO_TOWER] for i in items_np[row][valid]}
            for source, order, n in (
                (SOURCE_POPULAR, self.popular_order, n_popular),
                (SOURCE_FRESH, self.fresh_order, n_fresh),
            ):
                for item in self._top_unseen(order, n, excluded):
                    sources.setdefault(item, []).append(source)
            cand = np.fromiter(sources, dtype=np.int64, count=len(sources))
            cand_t = torch.as_tensor(cand, device=user_vecs.device)
            out_items.append(cand)
            logits = self.space.pair_logits(user_vecs[row].expand(len(cand_t), -1), cand_t)
            out_scores.append(logits.float().cpu().numpy())
            out_sources.append(["+".join(sources[int(i)]) for i in cand])
        return Candidates(out_items, out_scores, out_sources)

    def save(self, path: Path) -> None:
        """Write vectors, biases, popularity, publication times and, above the threshold, the faiss index."""
        path.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"vecs": self.space.vecs.cpu(), "bias": self.space.bias.cpu(), "scale": self.space.scale},
            path / "item_space.pt",
        )
        pd.DataFrame({"popularity": self.popularity, "published_hours": self.published_hours}).to_parquet(
            path / "item_order.parquet"
        )
        ann = self.ensure_ann()
        if ann is not None:
            ann.save(path)

    @classmethod
    def load(
        cls, path: Path, ann_threshold_items: int, device: str = "cpu", with_ann: bool = True
    ) -> RetrievalIndex:
        """Load what :meth:`save` wrote (the saved faiss index too, when this catalog uses one and ``with_ann``)."""
        order = pd.read_parquet(path / "item_order.parquet")
        space = torch.load(path / "item_space.pt", map_location=device, weights_only=True)
        index = cls(
            space=ItemSpace(space["vecs"], space["bias"], float(space["scale"])),
            popularity=order["popularity"].to_numpy(),
            published_hours=order["published_hours"].to_numpy(),
            ann_threshold_items=ann_threshold_items,
        )
        if with_ann and index.uses_ann and (path / ANN_FILE).exists():
            index.ann = FaissIndex.load(path)
        return index

    def same_catalog(self, other: RetrievalIndex) -> bool:
        """Whether ``other`` indexes the same items in the same order (vectors, biases, scale, orders)."""
        if self.n_items != other.n_items or not math.isclose(self.space.scale, other.space.scale):
            return False
        return (
            torch.allclose(self.space.vecs.cpu().float(), other.space.vecs.cpu().float(), atol=1e-6)
            and torch.allclose(self.space.bias.cpu().float(), other.space.bias.cpu().float(), atol=1e-6)
            and np.array_equal(self.popular_order, other.popular_order)
            and np.array_equal(self.fresh_order, other.fresh_order)
        )


def load_if_same_catalog(current: RetrievalIndex, path: Path, device: str = "cpu") -> RetrievalIndex | None:
    """The index saved at ``path`` (its faiss index included) when it indexes ``current``'s catalog, else None."""
    saved = RetrievalIndex.load(path, current.ann_threshold_items, device, with_ann=False)
    if not saved.same_catalog(current):
        return None
    if saved.uses_ann and (path / ANN_FILE).exists():
        saved.ann = FaissIndex.load(path)
    return saved
