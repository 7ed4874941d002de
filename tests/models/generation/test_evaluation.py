"""Generation metrics against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.generation.evaluation import (
    SUMMARY_KEYS,
    distinct_2,
    evaluate,
    fallback_rate,
    grounding_rate,
    lcs_length,
    personalization,
    rouge_l,
    write_summary,
)
from models.generation.samples import sample_profile
from models.generation.service import GeneratedContent, ItemText


def _row(
    user: str,
    item: str,
    task: str,
    text: str,
    passed: bool = True,
    reason: str | None = None,
    cached: bool = False,
    latency: float = 10.0,
) -> GeneratedContent:
    return GeneratedContent(user, item, task, "concise", text, passed, reason, "v", latency, 5, cached)


def test_lcs_and_rouge_l() -> None:
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3  # a c d
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 words each
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # P = 2/2, R = 2/4 -> F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    assert rouge_l("the cat", "The cat sat down.") == pytest.approx(2 / 3)
    assert rouge_l("", "anything") == 0.0


def test_distinct_2() -> None:
    # bigrams: (a b) (b c) | (a b) (b d) -> 3 unique of 4
    assert distinct_2(["a b c", "A b d"]) == pytest.approx(0.75)
    assert distinct_2(["one"]) == 0.0


def test_rates_and_personalization() -> None:
    rows = [
        _row("u1", "i1", "blurb", "For fans of sports: a race."),
        _row("u1", "i2", "blurb", "A quiet race.", False, "ungrounded: Zorblax"),
        _row("u2", "i1", "blurb", "Music tonight.", False, "repetition: 3 repeated 3-grams"),
        _row("u2", "i1", "summary", "A race."),
    ]
    profiles = {"u1": sample_profile("u1", ["sports"]), "u2": sample_profile("u2", ["music"])}
    assert grounding_rate(rows) == pytest.approx(3 / 4)  # one ungrounded rejection
    assert fallback_rate(rows) == pytest.approx(2 / 4)
    # blurbs only: u1's first names "sports", u2's names "music" -> 2 of 3
    assert personalization(rows, profiles) == pytest.approx(2 / 3)


def test_evaluate_and_summary_file(tmp_path: Path) -> None:
    items = {"i1": ItemText("i1", "Race", "The race was fast. It rained.", "sports")}
    rows = [
        _row("u1", "i1", "summary", "The race was fast.", latency=100.0),
        _row("u1", "i1", "summary", "The race was fast. It rained.", cached=True, latency=1.0),
    ]
    figures = evaluate(rows, items, {}, {"tokens_per_s": 50.0, "model_calls": 1, "generated_tokens": 5})
    # ROUGE-L vs the lead "The race was fast. It rained.": 4/6 words -> P=1, R=2/3, F=0.8; and 1.0
    assert figures["rouge_l"] == pytest.approx((0.8 + 1.0) / 2)
    assert figures["p95_latency_ms"] == 100.0  # only the row generated now counts
    assert figures["n_items"] == 1 and math.isnan(figures["personalization"])
    path = write_summary(figures, tmp_path / "reports" / "generation_summary.json")
    data = json.loads(path.read_text())
    assert list(data)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert data["personalization"] is None and data["tokens_per_s"] == 50.0
