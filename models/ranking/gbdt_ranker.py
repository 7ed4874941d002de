"""A LightGBM lambdarank stacked ranker over the same examples (the optional ``gbdt`` extra), for comparison."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.progress import EpochProgress
from models.ranking.stack_features import StackExamples, stack_feature_names
from models.ranking.stacked_ranker import stacked_ndcg
from models.settings import RankerSettings

log = logging.getLogger(__name__)


class GBDTStackedRanker:
    """LightGBM lambdarank over the same stacking lists (a comparison point to :class:`StackedRanker`).

    Reads :attr:`StackExamples.dense` only (no attention over the history: the text similarities are among the
    dense features). Selected by ``ranker.stack_model = "lightgbm"``; ``lightgbm`` is imported only then.
    """

    def __init__(self, booster: Any, sources: list[str], cfg: RankerSettings, iterations: int) -> None:
        self.booster = booster
        self.sources = sources
        self.cfg = cfg
        self.iterations = iterations

    @property
    def feature_names(self) -> list[str]:
        return stack_feature_names(self.sources)

    def set_catalog(self, item_text: np.ndarray) -> None:
        """Nothing to index: the trees read the dense features only."""

    def score(self, examples: StackExamples, batch_size: int = 0) -> np.ndarray:
        """(users, width) relevance scores, -inf on padding."""
        out = np.full(examples.items.shape, -np.inf, dtype=np.float32)
        if examples.mask.any():
            out[examples.mask] = self.booster.predict(
                examples.dense[examples.mask], num_iteration=self.iterations
            )
        return out

    def save(self, path: Path) -> None:
        """Write the booster (text model file) and the schema into ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / "ranker_gbdt.txt"), num_iteration=self.iterations)
        (path / "ranker_config.json").write_text(
            json.dumps(
                {
                    "model": "lightgbm",
                    "settings": self.cfg.model_dump(),
                    "sources": self.sources,
                    "features": self.feature_names,
                    "iterations": self.iterations,
                }
            )
        )

    @classmethod
    def load(cls, path: Path) -> GBDTStackedRanker:
        """Load what :meth:`save` wrote."""
        import lightgbm

        config = json.loads((path / "ranker_config.json").read_text())
        booster = lightgbm.Booster(model_file=str(path / "ranker_gbdt.txt"))
        return cls(booster, config["sources"], RankerSettings(**config["settings"]), config["iterations"])


def train_gbdt_ranker(
    train: StackExamples,
    valid: StackExamples,
    valid_relevant: Mapping[str, set[int]],
    sources: list[str],
    cfg: RankerSettings,
    seed: int,
) -> tuple[GBDTStackedRanker, pd.DataFrame]:
    """Fit LightGBM lambdarank on the training lists; the iteration count of best valid NDCG@10 is kept."""
    import lightgbm

    keep = train.labels.sum(1) > 0  # lists without a positive carry no ranking signal
    x, y = train.dense[keep][train.mask[keep]], train.labels[keep][train.mask[keep]]
    params = {
        "objective": cfg.stack_gbdt_objective, "learning_rate": cfg.stack_gbdt_learning_rate,
        "num_leaves": cfg.stack_gbdt_leaves, "min_data_in_leaf": cfg.stack_gbdt_min_leaf,
        "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambdarank_truncation_level": 20,
        "verbose": -1, "seed": seed, "num_threads": 1,
    }  # fmt: skip
    data = lightgbm.Dataset(x, y, group=train.mask[keep].sum(1))
    step = 10
    # the wall clock at the end of every block of ``step`` rounds, so each row's seconds are its own block's
    # training time, as the torch ranker's rows are one epoch's (the blend's log holds both)
    clock = [time.perf_counter()]

    def _mark(env: Any) -> None:
        if (env.iteration + 1) % step == 0:
            clock.append(time.perf_counter())

    booster = lightgbm.train(params, data, num_boost_round=cfg.stack_gbdt_rounds, callbacks=[_mark])
    rows = []
    with EpochProgress("gbdt ranker", total=cfg.stack_gbdt_rounds // step, log=log) as progress:
        for block, it in enumerate(range(step, cfg.stack_gbdt_rounds + 1, step), start=1):
            ranker = GBDTStackedRanker(booster, sources, cfg, it)
            score = stacked_ndcg(ranker, valid, valid_relevant)  # type: ignore[arg-type]
            rows.append({"epoch": it, "valid_ndcg@10": score, "seconds": clock[block] - clock[block - 1]})
            progress.step(valid_ndcg10=score)
    frame = pd.DataFrame(rows)
    best = int(frame.loc[frame["valid_ndcg@10"].idxmax(), "epoch"])
    return GBDTStackedRanker(booster, sources, cfg, best), frame
