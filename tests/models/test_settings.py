"""The split settings: share split for rating logs by default, days for the simulator, explicit wins."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.settings import SplitSettings, get_settings


def test_rating_logs_default_to_the_share_split(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEST_SHARE", "VALID_SHARE", "TEST_DAYS", "VALID_DAYS"):
        monkeypatch.delenv(f"RECGEN_SPLIT__{name}", raising=False)
    assert not get_settings(dataset="simulator").split.by_share
    for dataset in ("movielens", "recbole"):
        split = get_settings(dataset=dataset, dataset_path="x").split
        assert (split.test_share, split.valid_share) == (0.1, 0.1)
    assert not get_settings(dataset="mind", dataset_path="x").split.by_share
    # A days field set explicitly keeps the days split, as the issue's `RECGEN_SPLIT__TEST_DAYS=10` run did.
    monkeypatch.setenv("RECGEN_SPLIT__TEST_DAYS", "10")
    split = get_settings(dataset="movielens", dataset_path="x").split
    assert not split.by_share and split.test_days == 10
    monkeypatch.delenv("RECGEN_SPLIT__TEST_DAYS")
    monkeypatch.setenv("RECGEN_SPLIT__TEST_SHARE", "0.2")
    monkeypatch.setenv("RECGEN_SPLIT__VALID_SHARE", "0.05")
    split = get_settings(dataset="simulator").split
    assert (split.test_share, split.valid_share) == (0.2, 0.05)


def test_shares_are_set_together_and_leave_a_train_share() -> None:
    with pytest.raises(ValidationError, match="set together"):
        SplitSettings(test_share=0.1)
    with pytest.raises(ValidationError, match="sum < 1"):
        SplitSettings(test_share=0.5, valid_share=0.5)
