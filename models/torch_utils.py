"""Device, seeding and mixed-precision helpers shared by the torch models."""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); returns a CPU generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast_dtype(device: str) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 on CUDA; None (full precision) on CPU."""
    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: str) -> Iterator[None]:
    """Mixed precision on CUDA; a no-op on CPU, where bf16 matmuls are slower than fp32 for these small models."""
    dtype = autocast_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


def grad_scaler(device: str) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)


def limit_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (``settings.torch_threads``; None leaves torch's choice).

    On a CPU shared with other busy processes, torch's thread pool waits on cores it does not get: small ops
    then take milliseconds instead of microseconds (measured here: one full-stack evaluation 12x slower with 2
    threads than with 1 on a loaded 2-core machine). Entry points (assets, benchmarks, tests) call this once.
    """
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: unchanged), then restore the previous count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def save_weights(path: Path, name: str, model: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write ``model``'s state_dict as ``<name>_weights.pt`` and ``config`` as ``<name>_config.json`` in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / f"{name}_weights.pt")
    (path / f"{name}_config.json").write_text(json.dumps(config))


def read_config(path: Path, name: str) -> dict[str, Any]:
    """The config :func:`save_weights` wrote under ``name``."""
    return json.loads((path / f"{name}_config.json").read_text())


def load_weights(model: torch.nn.Module, path: Path, name: str, device: str) -> torch.nn.Module:
    """Load the state_dict :func:`save_weights` wrote under ``name`` into ``model`` (weights only, no pickle)."""
    model.load_state_dict(torch.load(path / f"{name}_weights.pt", map_location=device, weights_only=True))
    return model


class EarlyStopping:
    """The weights of the best-scoring epoch so far, and when ``patience`` epochs without a gain should stop.

    ``keep_first``: the first epoch's weights are kept whatever its score (even NaN), so there is always a state.
    """

    def __init__(self, patience: int | None, keep_first: bool = False) -> None:
        self.patience, self.keep_first = patience, keep_first
        self.best_score, self.since_best = -math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None

    def step(self, score: float, model: torch.nn.Module) -> bool:
        """Keep ``model``'s weights when ``score`` is the best yet; True once ``patience`` epochs had no gain."""
        if score > self.best_score or (self.keep_first and self.state is None):
            self.best_score, self.since_best = score, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best epoch's weights into ``model`` (when one was kept)."""
        if self.state is not None:
            model.load_state_dict(self.state)
