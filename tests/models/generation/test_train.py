"""Training the default LM and fine-tuning: losses, saved artifacts, versions, LoRA availability."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from models.generation.generator import MARKER_FILE, Generator
from models.generation.prompts import SPECIAL_TOKENS
from models.generation.train import TrainResult, build_examples, fine_tune, lm_version, train_default_lm
from tests.models.generation.conftest import TINY


def test_examples_copy_from_the_facts(catalog: pd.DataFrame) -> None:
    examples = build_examples(catalog.head(4), seed=1)
    assert len(examples) == 4 * 6  # six tasks per item per round (TASK_MIX)
    for prompt, target in examples:
        assert prompt.endswith("<out>")
        if prompt.startswith("<task=summary>") or prompt.startswith("<task=title>"):
            # summary = lead sentences and title = the title: both copied verbatim from the quoted fields
            assert target in prompt


def test_tiny_model_trains_and_saves(tiny_model: TrainResult, catalog: pd.DataFrame) -> None:
    assert tiny_model.loss_after < tiny_model.loss_before
    marker = json.loads((Path(tiny_model.path) / MARKER_FILE).read_text())
    assert marker["version"] == tiny_model.version == lm_version(catalog, TINY, seed=0)
    assert marker["prompt_format"] == "control" and marker["steps"] == TINY.train_steps
    tok = Generator.load(tiny_model.path, device="cpu").tokenizer
    # every control token is one token, and decoding drops it
    for token in SPECIAL_TOKENS:
        assert len(tok(token)["input_ids"]) == 1
    assert tok.decode(tok("<task=blurb> Lisbon")["input_ids"], skip_special_tokens=True).strip() == "Lisbon"


def test_same_inputs_reuse_the_saved_model(tiny_model: TrainResult, catalog: pd.DataFrame) -> None:
    again = train_default_lm(catalog, TINY, tiny_model.path, seed=0, device="cpu")
    assert again.reused and again.version == tiny_model.version
    # another seed or another catalog is another version
    assert lm_version(catalog, TINY, seed=1) != tiny_model.version
    assert lm_version(catalog.head(10), TINY, seed=0) != tiny_model.version


def test_fine_tune_from_local_path(tiny_model: TrainResult, catalog: pd.DataFrame, tmp_path: Path) -> None:
    settings = TINY.model_copy(update={"train_steps": 3, "fine_tune_learning_rate": 1e-3})
    result = fine_tune(
        tiny_model.path, catalog.head(6), settings, tmp_path / "ft", seed=0, device="cpu", use_lora=False
    )
    assert result.base_model == str(tiny_model.path) and result.version.startswith("ft-")
    assert result.prompt_format == "control"  # a recgen base keeps its prompt format
    gen = Generator.load(result.path, device="cpu")
    assert (
        gen.model_version == result.version and len(gen.generate(["<task=title> x"], max_new_tokens=2)) == 1
    )


@pytest.mark.skipif(importlib.util.find_spec("peft") is not None, reason="peft is installed")
def test_lora_without_peft_is_a_clear_error(
    tiny_model: TrainResult, catalog: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="peft"):
        fine_tune(tiny_model.path, catalog.head(2), TINY, tmp_path / "lora", use_lora=True)
