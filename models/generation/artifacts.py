"""The generator in the model registry: register a trained dir, find a version, load the champion.

Registry versions live in ``<artifacts_dir>/generator/<version>/`` (``models.registry``). The registry writes
its own ``config.json`` there, so the Hugging Face files go one level down, in ``model/``; a configured
pretrained model registered without fine-tuning is a ``source.json`` pointer to its name or path instead.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from models.generation.generator import Generator
from models.generation.train import FORMAT_VERSION, TrainResult
from models.registry import ArtifactVersion, ModelRegistry
from models.settings import Settings

REGISTRY_NAME = "generator"
MODEL_SUBDIR = "model"
SOURCE_FILE = "source.json"
PROMOTION_METRIC = "neg_eval_loss"  # the registry promotes on a higher metric; lower loss is better


def model_location(artifact: ArtifactVersion) -> str:
    """The name or local path ``from_pretrained`` loads for a registered generator."""
    local = artifact.path / MODEL_SUBDIR
    if local.is_dir():
        return str(local)
    pointer = artifact.path / SOURCE_FILE
    if pointer.is_file():
        return str(json.loads(pointer.read_text())["model_name_or_path"])
    raise FileNotFoundError(f"{artifact.path} holds neither {MODEL_SUBDIR}/ nor {SOURCE_FILE}")


def find_version(registry: ModelRegistry, model_version: str) -> ArtifactVersion | None:
    """The registered generator whose model version (training hash) is ``model_version``, newest first."""
    for artifact in reversed(registry.versions(REGISTRY_NAME)):
        if artifact.config.get("model_version") == model_version:
            return artifact
    return None


def register_trained(
    registry: ModelRegistry,
    result: TrainResult,
    data_snapshot_id: str = "",
    extra: dict[str, Any] | None = None,
) -> ArtifactVersion:
    """Copy a trained or fine-tuned model dir into a new registry version and promote it if its loss is lower."""

    def write(path: Path) -> None:
        shutil.copytree(result.path, path / MODEL_SUBDIR)

    artifact = registry.register(
        REGISTRY_NAME,
        write,
        metrics={
            "loss_before": result.loss_before,
            "loss_after": result.loss_after,
            PROMOTION_METRIC: -result.loss_after,
            "train_seconds": result.seconds,
            "n_examples": result.n_examples,
        },
        config={
            "model_version": result.version,
            "prompt_format": result.prompt_format,
            "base_model": result.base_model,
            "steps": result.steps,
            "device": result.device,
            "eval_set": eval_set(result),
            **(extra or {}),
        },
        data_snapshot_id=data_snapshot_id,
    )
    promote_generator(registry, artifact.version)
    return artifact


def eval_set(result: TrainResult) -> str:
    """What a generator's validation loss was computed on: the example format and the held-out items."""
    digest = hashlib.sha1("|".join(sorted(result.heldout_items)).encode()).hexdigest()[:10]
    return f"format{FORMAT_VERSION}-heldout-{digest}"


def promote_generator(registry: ModelRegistry, version: str) -> bool:
    """Promote ``version`` if its validation loss beats the champion's on the same evaluation set.

    Losses on other examples (another example format, other held-out items, or a champion registered before
    the evaluation set was recorded, whose loss was on its own training examples) say nothing about which
    model writes better copy, so then the newer model replaces the champion. True if it is the champion now.
    """
    candidate = registry.get(REGISTRY_NAME, version)
    current = registry.champion(REGISTRY_NAME)
    mine, theirs = candidate.config.get("eval_set"), current.config.get("eval_set") if current else None
    if current is None or not mine or mine != theirs:
        registry.promote(REGISTRY_NAME, version, metric=PROMOTION_METRIC)
        return True
    return registry.promote_if_better(REGISTRY_NAME, version, metric=PROMOTION_METRIC)


def register_pretrained(
    registry: ModelRegistry, name_or_path: str, data_snapshot_id: str = ""
) -> ArtifactVersion:
    """Register a configured pretrained model as is (a pointer, no weights copied) and make it champion."""

    def write(path: Path) -> None:
        (path / SOURCE_FILE).write_text(json.dumps({"model_name_or_path": name_or_path}))

    artifact = registry.register(
        REGISTRY_NAME,
        write,
        metrics={},
        config={
            "model_version": f"hf:{name_or_path}",
            "prompt_format": "instruction",
            "base_model": name_or_path,
        },
        data_snapshot_id=data_snapshot_id,
    )
    # No loss to compare: a configured model replaces whatever was champion, as the settings ask.
    alias = registry.root / REGISTRY_NAME / "champion.json"
    alias.unlink(missing_ok=True)
    registry.promote_if_better(REGISTRY_NAME, artifact.version, metric=PROMOTION_METRIC)
    return artifact


def load_generator(settings: Settings) -> Generator:
    """The champion generator of the registry, else the configured pretrained model; error when neither exists."""
    registry = ModelRegistry(settings.artifacts_dir)  # read-only use: no warehouse mirror needed
    champion = registry.champion(REGISTRY_NAME)
    if champion is not None:
        return Generator.from_settings(settings, model_location(champion))
    if settings.generation.model_name_or_path:
        return Generator.from_settings(settings)
    raise FileNotFoundError(
        f"no generator registered under {settings.artifacts_dir / REGISTRY_NAME}: materialize the "
        "content_generator asset first (or set generation.model_name_or_path)"
    )
