"""A blend of stacked rankers trained on the same lists: the torch listwise ranker and LightGBM lambdarank.

Two rankers of different families (an MLP with attention over the history, trained with a listwise softmax;
boosted trees with lambdarank over the dense features) make different errors on the same candidate lists, so
a fixed-weight average of their scores ranks better than either: on ml-100k under the evaluation protocol the
equal-weight blend is above the torch ranker on valid in five of six seeds (README, "The blended stack ranker").
Their scores live on different scales (logits of a softmax over the list against lambdarank margins), and only
the order within a list matters, so each member's scores are standardized within each list before weighting.
The weight is a setting (``ranker.stack_blend_torch_weight``, 0.5), not tuned per run: choosing it on valid would
spend valid on one more knob for a gain within the spread over seeds.

:func:`load_stacked_ranker` loads whichever stacked ranker a folder holds (torch, LightGBM or a blend).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from models.ranking.gbdt_ranker import GBDTStackedRanker
from models.ranking.stack_features import StackExamples
from models.ranking.stacked_ranker import StackedRanker


class ListRanker(Protocol):
    """What a stacked ranker offers: relevance scores per candidate list, a catalog and persistence."""

    @property
    def feature_names(self) -> list[str]: ...

    def set_catalog(self, item_text: np.ndarray) -> None: ...

    def score(self, examples: StackExamples, batch_size: int = ...) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...


def standardize_within_lists(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(users, width) scores z-scored over each list's real candidates; 0 on padding and for constant lists."""
    s = np.where(mask, scores.astype(np.float64), 0.0)
    n = np.maximum(mask.sum(1, keepdims=True), 1)
    mean = s.sum(1, keepdims=True) / n
    var = (np.where(mask, s - mean, 0.0) ** 2).sum(1, keepdims=True) / n
    std = np.sqrt(var)
    return np.where(mask & (std > 0), (s - mean) / np.where(std > 0, std, 1.0), 0.0)


class BlendedStackedRanker:
    """Weighted sum of its members' within-list standardized scores (members trained on the same lists)."""

    def __init__(self, members: Sequence[ListRanker], weights: Sequence[float]) -> None:
        if len(members) != len(weights) or not members:
            raise ValueError(
                f"a blend needs one weight per member: {len(members)} members, {len(weights)} weights"
            )
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"blend weights must be non-negative with a positive sum: {list(weights)}")
        names = [list(m.feature_names) for m in members]
        if any(n != names[0] for n in names):
            raise ValueError("the blend's members read different feature schemas")
        self.members = list(members)
        self.weights = [float(w) for w in weights]

    @property
    def feature_names(self) -> list[str]:
        return list(self.members[0].feature_names)

    def set_catalog(self, item_text: np.ndarray) -> None:
        for member in self.members:
            member.set_catalog(item_text)

    def member_scores(self, examples: StackExamples) -> list[np.ndarray]:
        """Each member's (users, width) scores, -inf on padding."""
        return [m.score(examples) for m in self.members]

    def score(self, examples: StackExamples, batch_size: int = 0) -> np.ndarray:
        """(users, width) blended scores, -inf on padding."""
        total = np.zeros(examples.items.shape, dtype=np.float64)
        for w, s in zip(self.weights, self.member_scores(examples), strict=True):
            if w:
                total += w * standardize_within_lists(s, examples.mask)
        return np.where(examples.mask, total, -np.inf).astype(np.float32)

    def save(self, path: Path) -> None:
        """Each member in ``member_<i>/``, the weights in ``ranker_config.json``."""
        path.mkdir(parents=True, exist_ok=True)
        for i, member in enumerate(self.members):
            member.save(path / f"member_{i}")
        (path / "ranker_config.json").write_text(
            json.dumps(
                {
                    "model": "blend",
                    "weights": self.weights,
                    "members": len(self.members),
                    "features": self.feature_names,
                }
            )
        )

    @classmethod
    def load(cls, path: Path, item_text: np.ndarray, device: str = "cpu") -> BlendedStackedRanker:
        """Load what :meth:`save` wrote."""
        config = json.loads((path / "ranker_config.json").read_text())
        members = [
            load_stacked_ranker(path / f"member_{i}", item_text, device)
            for i in range(int(config["members"]))
        ]
        return cls(members, config["weights"])


def load_stacked_ranker(path: Path, item_text: np.ndarray, device: str = "cpu") -> ListRanker:
    """The stacked ranker saved in ``path``, whichever kind its ``ranker_config.json`` names."""
    kind = json.loads((path / "ranker_config.json").read_text()).get("model", "torch")
    if kind == "blend":
        return BlendedStackedRanker.load(path, item_text, device)
    if kind == "lightgbm":
        return GBDTStackedRanker.load(path)
    return StackedRanker.load(path, item_text, device)
