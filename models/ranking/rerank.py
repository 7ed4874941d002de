"""MMR re-ranking of a scored candidate list (Carbonell and Goldstein, 1998): relevance against similarity to what is already picked."""

from __future__ import annotations

import numpy as np


def mmr_rerank(
    candidates: np.ndarray,
    relevance: np.ndarray,
    item_embeddings: np.ndarray,
    k: int,
    mmr_lambda: float,
) -> np.ndarray:
    """Greedy maximal marginal relevance: argmax lambda * rel - (1 - lambda) * max cosine to the items already picked.

    ``item_embeddings`` are the catalog's unit vectors (numpy: these are tiny per-user products, where torch's
    thread pool costs more than the arithmetic). Relevance is min-max scaled to [0, 1] within the list so it is
    on the cosine's scale; lambda = 1 keeps the relevance order.
    """
    n = len(candidates)
    k = min(k, n)
    if k == 0:
        return candidates[:0]
    order = np.argsort(-relevance, kind="stable")
    if mmr_lambda >= 1.0:
        return candidates[order[:k]]
    vecs = np.asarray(item_embeddings[candidates], dtype=np.float32)
    rel = relevance.astype(np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
    picked = [int(order[0])]
    # similarities to the picked items only (k matrix-vector products, not the full n x n matrix)
    max_sim = vecs @ vecs[order[0]]
    available = np.ones(n, dtype=bool)
    available[order[0]] = False
    for _ in range(k - 1):
        gain = mmr_lambda * rel - (1 - mmr_lambda) * max_sim
        gain[~available] = -np.inf
        nxt = int(np.argmax(gain))
        picked.append(nxt)
        available[nxt] = False
        max_sim = np.maximum(max_sim, vecs @ vecs[nxt])
    return candidates[np.asarray(picked)]
