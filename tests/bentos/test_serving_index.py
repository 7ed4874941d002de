"""Serving uses the pipeline's ``retrieval_index`` artifact (its saved faiss index) when it indexes the catalog."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from bentos.serving import RETRIEVAL_NAME, use_retrieval_index
from models.registry import ModelRegistry
from models.retrieval.index import FaissIndex, ItemSpace, RetrievalIndex


def _index(n: int, seed: int = 0, threshold: int = 500) -> RetrievalIndex:
    gen = torch.Generator().manual_seed(seed)
    space = ItemSpace(
        F.normalize(torch.randn(n, 8, generator=gen), dim=-1), torch.randn(n, generator=gen), 5.0
    )
    return RetrievalIndex(space, np.arange(n, dtype=float), np.zeros(n), ann_threshold_items=threshold)


def test_the_matching_artifact_is_served_with_its_saved_ann(tmp_path, monkeypatch) -> None:
    registry = ModelRegistry(tmp_path / "artifacts")
    matching = registry.register(RETRIEVAL_NAME, _index(1000).save, metrics={})
    registry.register(RETRIEVAL_NAME, _index(1000, seed=1).save, metrics={})  # newer, another catalog
    model = SimpleNamespace(index=_index(1000))  # the served model's own index of its catalog, no ANN yet
    own = model.index

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the ANN must be read from the artifact, not rebuilt")

    monkeypatch.setattr(FaissIndex, "build", no_build)
    version = use_retrieval_index(registry, model, "cpu", 500)
    assert version == f"{RETRIEVAL_NAME}:{matching.version}"
    assert model.index is not own and model.index.ann is not None
    assert model.index.ann.index.ntotal == 1000
    users = F.normalize(torch.randn(4, 8), dim=-1)
    seen = [np.zeros(0, dtype=np.int64)] * 4
    exact = own.search_exact(users, 10, seen)[1]
    recall = np.mean(
        [
            len(set(a.tolist()) & set(b.tolist())) / 10
            for a, b in zip(model.index.search(users, 10, seen)[1], exact, strict=True)
        ]
    )
    assert recall > 0.5


def test_without_a_matching_artifact_the_model_index_is_kept_and_its_ann_built(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "artifacts")
    registry.register(RETRIEVAL_NAME, _index(999).save, metrics={})
    model = SimpleNamespace(index=_index(1000))
    own = model.index
    assert use_retrieval_index(registry, model, "cpu", 500) is None
    assert model.index is own and own.ann is not None  # ready before the first request
    small = SimpleNamespace(index=_index(100))
    assert (
        use_retrieval_index(registry, small, "cpu", 500) is None and small.index.ann is None
    )  # exact search
