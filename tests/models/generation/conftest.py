"""One tiny generator trained once per session, shared by the generation tests.

Tiny on purpose (2 layers, 64 dims, 30 steps): the tests check plumbing (padding, caching, loading, guardrails),
not fluency, and other suites share the same two cores.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.generation.generator import DecodingConfig, Generator
from models.generation.samples import sample_items
from models.generation.train import TrainResult, train_default_lm
from models.settings import GenerationSettings

TINY = GenerationSettings(
    train_steps=30,
    train_batch_size=8,
    n_layer=2,
    n_embd=64,
    n_head=2,
    vocab_size=400,
    n_positions=256,
    max_new_tokens=16,
    batch_size=8,
    target_scorer="overlap",  # MiniLM target selection is tested once, in test_train.py
    heldout_share=0.2,
)


@pytest.fixture(scope="session")
def catalog() -> pd.DataFrame:
    """A seeded 24-item catalog with names, places and numbers in its texts."""
    return sample_items(24, seed=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, catalog: pd.DataFrame) -> TrainResult:
    """The tiny LM, trained once on the catalog and saved with save_pretrained."""
    out = tmp_path_factory.mktemp("tiny_lm") / "model"
    return train_default_lm(catalog, TINY, out, seed=0, device="cpu")


@pytest.fixture
def generator(tiny_model: TrainResult) -> Generator:
    """A fresh generator (counters at zero) loaded from the tiny model's dir."""
    return Generator.load(tiny_model.path, decoding(), batch_size=8, device="cpu")


def decoding(**overrides: object) -> DecodingConfig:
    """The decoding the settings ask for (prompt-constrained greedy), with overrides."""
    fields = {
        "max_new_tokens": TINY.max_new_tokens,
        "constrain_to_prompt": TINY.constrain_to_prompt,
        "no_repeat_ngram_size": TINY.no_repeat_ngram_size,
        **overrides,
    }
    return DecodingConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def tiny_dir(tiny_model: TrainResult) -> Path:
    return tiny_model.path
