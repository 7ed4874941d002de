"""EarlyStopping: the best epoch's weights come back, and training stops after ``patience`` epochs without gain."""

from __future__ import annotations

import math

import torch

from models.torch_utils import EarlyStopping


def test_stops_after_patience_epochs_without_gain_and_restores_the_best_epoch() -> None:
    model = torch.nn.Linear(2, 1)
    stopping = EarlyStopping(patience=2)
    stops = []
    for epoch, score in enumerate([0.1, 0.3, 0.2, 0.25]):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weights say which epoch they are from
        stops.append(stopping.step(score, model))
    assert stops == [False, False, False, True]
    assert stopping.best_score == 0.3
    stopping.restore(model)
    assert torch.all(model.weight == 1.0)  # epoch 1's weights, not the last epoch's


def test_keep_first_keeps_a_state_even_when_the_first_score_is_nan() -> None:
    model = torch.nn.Linear(2, 1)
    plain, keeping = EarlyStopping(patience=None), EarlyStopping(patience=None, keep_first=True)
    assert not plain.step(math.nan, model) and plain.state is None
    assert not keeping.step(math.nan, model) and keeping.state is not None
    assert not keeping.step(0.5, model)  # no patience: never stops
