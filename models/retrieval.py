"""Candidate generation: two-tower dot products (exact, or IVF for large catalogs) unioned with popular and fresh items.

Exact search is one (users x dim) @ (dim x items) product and ``torch.topk`` with each user's seen items set to
-inf. Above ``ann_threshold_items`` an inverted-file index (k-means cells over the item vectors, computed with
torch) scores only the items in the ``n_probe`` cells nearest to the user, which trades a little recall for a
cost that grows with sqrt(n_items) instead of n_items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SOURCE_TWO_TOWER = "two_tower"
SOURCE_POPULAR = "popular"
SOURCE_FRESH = "fresh"


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


def kmeans(
    vectors: torch.Tensor, n_clusters: int, n_iter: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (cosine) in torch: (centroids, assignment)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    init = torch.randperm(len(vectors), generator=generator)[:n_clusters].to(vectors.device)
    centroids = vectors[init].clone()
    assign = torch.zeros(len(vectors), dtype=torch.long, device=vectors.device)
    for _ in range(n_iter):
        assign = (vectors @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        counts = torch.bincount(assign, minlength=n_clusters)
        empty = counts == 0
        sums[empty] = centroids[empty]  # an empty cell keeps its centroid
        centroids = torch.nn.functional.normalize(sums, dim=-1)
    return centroids, assign


@dataclass
class IVFIndex:
    """Inverted file over item vectors: items grouped by their nearest k-means centroid.

    Cells are probed by cosine to the centroids; the per-item bias enters only the scores inside the probed
    cells, so a very popular item in an unprobed cell can be missed (the exact search has no such gap).
    """

    centroids: torch.Tensor  # (n_cells, dim)
    cells: torch.Tensor  # (n_cells, largest cell) item positions, -1 = padding
    n_probe: int

    @classmethod
    def build(
        cls, item_vecs: torch.Tensor, n_cells: int | None = None, n_probe: int | None = None, seed: int = 0
    ) -> IVFIndex:
        """Cells ~ sqrt(n_items); probing ~ 1/8 of them keeps recall high on clustered catalogs."""
        n_cells = n_cells or max(1, int(math.sqrt(len(item_vecs))))
        centroids, assign = kmeans(item_vecs, n_cells, seed=seed)
        order = torch.argsort(assign, stable=True)
        counts = torch.bincount(assign, minlength=n_cells)
        starts = torch.cumsum(counts, 0) - counts
        sorted_cells = assign[order]
        within = torch.arange(len(order), device=order.device) - starts[sorted_cells]
        cells = torch.full((n_cells, int(counts.max())), -1, dtype=torch.long, device=item_vecs.device)
        cells[sorted_cells, within] = order
        return cls(centroids, cells, n_probe or max(1, n_cells // 8))

    def search(
        self, user_vecs: torch.Tensor, space: ItemSpace, k: int, seen: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (logits, item positions) per user among the items of the probed cells (-inf padded)."""
        n_probe = min(self.n_probe, len(self.cells))
        probe = torch.topk(user_vecs @ self.centroids.T, n_probe, dim=1).indices
        width = n_probe * self.cells.shape[1]
        k = min(k, width)
        out_scores = torch.full((len(user_vecs), k), float("-inf"), device=user_vecs.device)
        out_items = torch.zeros((len(user_vecs), k), dtype=torch.long, device=user_vecs.device)
        # users per step so the gathered candidate vectors stay near 2**26 floats
        step = max(1, 2**26 // (width * space.vecs.shape[1]))
        for s in range(0, len(user_vecs), step):
            cand = self.cells[probe[s : s + step]].reshape(-1, width)
            safe = cand.clamp(min=0)
            scores = space.scale * torch.einsum("bcd,bd->bc", space.vecs[safe], user_vecs[s : s + step])
            scores = scores + space.bias[safe]
            seen_mask = mask_seen(
                torch.zeros(len(cand), len(space.vecs), device=cand.device), seen[s : s + step]
            )
            scores = scores.masked_fill((cand < 0) | torch.isinf(seen_mask.gather(1, safe)), float("-inf"))
            top = torch.topk(scores, k, dim=1)
            out_scores[s : s + step] = top.values
            out_items[s : s + step] = safe.gather(1, top.indices)
        return out_scores, out_items


@dataclass
class Candidates:
    """Per user: candidate item positions, their two-tower scores and where each came from."""

    items: list[np.ndarray]
    scores: list[np.ndarray]  # two-tower logit of every candidate (also of popular/fresh ones)
    sources: list[list[str]]


@dataclass
class RetrievalIndex:
    """Item vectors of one catalog plus the popularity and freshness orders used to widen the candidate set."""

    space: ItemSpace  # unit item vectors, biases, logit scale
    popularity: np.ndarray  # recent engagement counts per item
    published_hours: np.ndarray  # publication time per item (hours since epoch)
    ann_threshold_items: int = 200_000
    ann: IVFIndex | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.ann is None and self.n_items > self.ann_threshold_items:
            self.ann = IVFIndex.build(self.space.vecs)
        self.popular_order = np.argsort(-self.popularity, kind="stable")
        self.fresh_order = np.argsort(-self.published_hours, kind="stable")

    @property
    def n_items(self) -> int:
        return len(self.space.vecs)

    def search(
        self, user_vecs: torch.Tensor, k: int, seen: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (logits, item positions) by dot product + bias, seen items excluded; exact or IVF by size."""
        k = min(k, self.n_items)
        if self.ann is not None:
            return self.ann.search(user_vecs, self.space, k, seen)
        scores = mask_seen(self.space.logits(user_vecs), seen)
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices

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
        """Write vectors, biases, popularity and publication times (the IVF cells are rebuilt on load)."""
        path.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"vecs": self.space.vecs.cpu(), "bias": self.space.bias.cpu(), "scale": self.space.scale},
            path / "item_space.pt",
        )
        pd.DataFrame({"popularity": self.popularity, "published_hours": self.published_hours}).to_parquet(
            path / "item_order.parquet"
        )

    @classmethod
    def load(cls, path: Path, ann_threshold_items: int, device: str = "cpu") -> RetrievalIndex:
        """Load what :meth:`save` wrote."""
        order = pd.read_parquet(path / "item_order.parquet")
        space = torch.load(path / "item_space.pt", map_location=device, weights_only=True)
        return cls(
            space=ItemSpace(space["vecs"], space["bias"], float(space["scale"])),
            popularity=order["popularity"].to_numpy(),
            published_hours=order["published_hours"].to_numpy(),
            ann_threshold_items=ann_threshold_items,
        )
