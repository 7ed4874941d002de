"""The text encoder with the real packaged MiniLM: shape, normalization, semantics and the incremental cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from models.encoders import TextEncoder, embed_items, item_text
from models.settings import packaged_encoder_path


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(packaged_encoder_path(), device="cpu", batch_size=4, max_length=64)


def _items(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "body": [r[2] for r in rows],
            "content_hash": [hashlib.md5(f"{r[1]}\n{r[2]}".encode()).hexdigest() for r in rows],
        }
    )


def test_item_text_joins_title_and_body() -> None:
    assert item_text("Title", "Body text") == "Title. Body text"
    assert item_text("Title", None) == "Title"


def test_minilm_embeddings_are_384_d_unit_vectors(encoder: TextEncoder) -> None:
    vecs = encoder.encode(["a short sentence", "another, somewhat longer sentence about football"])
    assert vecs.shape == (2, 384)  # all-MiniLM-L6-v2 has hidden size 384
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_similar_texts_are_closer_than_dissimilar_ones(encoder: TextEncoder) -> None:
    football, soccer, markets = encoder.encode(
        [
            "The striker scored twice as the team won the football match.",
            "A late goal decided the soccer game in the final minutes.",
            "Central bank raises interest rates as inflation worries investors.",
        ]
    )
    # two sports reports share a topic; a finance report does not
    assert float(football @ soccer) > float(football @ markets) + 0.1


def test_cache_avoids_re_encoding(encoder: TextEncoder) -> None:
    items = _items(
        [("a", "Football final", "The match ended 2-1."), ("b", "Rate rise", "The bank moved rates.")]
    )
    before = encoder.n_encoded
    first = embed_items(items, encoder, None)
    assert encoder.n_encoded - before == 2
    # one item edited (new content hash), one new item: exactly those two are encoded again
    changed = _items(
        [
            ("a", "Football final", "The match ended 2-1."),
            ("b", "Rate rise", "The bank moved rates by half a point."),
            ("c", "Telescope", "A new image of a distant galaxy."),
        ]
    )
    before = encoder.n_encoded
    second = embed_items(changed, encoder, first)
    assert encoder.n_encoded - before == 2
    assert list(second.columns) == ["item_id", "content_hash", "embedding", "encoder_name", "encoder_version"]
    np.testing.assert_array_equal(second.loc[0, "embedding"], first.loc[0, "embedding"])
    # a cache written by another encoder version is not reused
    other = first.assign(encoder_version="something-else")
    before = encoder.n_encoded
    embed_items(items, encoder, other)
    assert encoder.n_encoded - before == 2
