"""Figures on generated copy: grounding, fallbacks, diversity, personalization, summary overlap, speed.

Small pure functions over texts and :class:`GeneratedContent` rows, each tested against hand-computed
values; :func:`evaluate` combines them and :func:`write_summary` writes ``reports/generation_summary.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.generation.service import GeneratedContent, ItemText
from models.generation.text import lead_sentences, words_of
from models.interests import InterestProfile

SUMMARY_KEYS = (
    "grounding_rate",
    "fallback_rate",
    "distinct_2",
    "personalization",
    "rouge_l",
    "tokens_per_s",
    "p95_latency_ms",
    "n_items",
)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a) * len(b)) DP)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens: 2PR/(P+R) with P = LCS/len(cand), R = LCS/len(ref)."""
    cand, ref = words_of(candidate), words_of(reference)
    lcs = lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique n-grams over all n-grams across ``texts`` (corpus-level distinct-n; 0 when there are none)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = words_of(text)
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_2(texts: Sequence[str]) -> float:
    """Distinct bigram ratio across ``texts``."""
    return distinct_n(texts, 2)


def mentions_any(text: str, terms: Sequence[str]) -> bool:
    """Whether ``text`` contains one of ``terms`` as whole words (case-insensitive)."""
    words = words_of(text)
    joined = f" {' '.join(words)} "
    return any(f" {' '.join(words_of(t))} " in joined for t in terms if words_of(t))


def personalization(
    rows: Sequence[GeneratedContent], profiles: Mapping[str, InterestProfile], n_terms: int = 3
) -> float:
    """Share of blurbs that name one of their user's top ``n_terms`` interests (NaN without blurbs)."""
    blurbs = [r for r in rows if r.task == "blurb" and r.user_id in profiles]
    if not blurbs:
        return float("nan")
    hits = sum(mentions_any(r.text, profiles[r.user_id].interest_terms(n_terms)) for r in blurbs)
    return hits / len(blurbs)


def grounding_rate(rows: Sequence[GeneratedContent]) -> float:
    """Share of model outputs the grounding check accepted (rejections for other reasons count as grounded)."""
    if not rows:
        return float("nan")
    return sum("ungrounded" not in (r.fallback_reason or "") for r in rows) / len(rows)


def fallback_rate(rows: Sequence[GeneratedContent]) -> float:
    """Share of rows whose model output was replaced by the extractive fallback."""
    if not rows:
        return float("nan")
    return sum(not r.passed_guardrails for r in rows) / len(rows)


def summary_rouge_l(rows: Sequence[GeneratedContent], items: Mapping[str, ItemText]) -> float:
    """Mean ROUGE-L of published summaries against the item's lead sentences (NaN without summaries)."""
    scores = [
        rouge_l(r.text, lead_sentences(items[r.item_id].body))
        for r in rows
        if r.task == "summary" and r.item_id in items
    ]
    return float(np.mean(scores)) if scores else float("nan")


def latency_percentiles(rows: Sequence[GeneratedContent]) -> dict[str, float]:
    """p50 and p95 latency (ms) of the rows generated now (all rows when every one was cached)."""
    generated = [r.latency_ms for r in rows if not r.cached] or [r.latency_ms for r in rows]
    if not generated:
        return {"p50_latency_ms": float("nan"), "p95_latency_ms": float("nan")}
    return {
        "p50_latency_ms": float(np.percentile(generated, 50)),
        "p95_latency_ms": float(np.percentile(generated, 95)),
    }


def evaluate(
    rows: Sequence[GeneratedContent],
    items: Mapping[str, ItemText],
    profiles: Mapping[str, InterestProfile],
    generator_stats: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Every figure of the generation summary, plus counts (cached rows, model calls)."""
    fresh = [r for r in rows if not r.cached]
    stats = dict(generator_stats or {})
    tokens_per_s = stats.get("tokens_per_s")
    if tokens_per_s is None:
        # Without the generator's own timing: tokens of fresh rows over the summed batch wall time is not
        # exact (rows share batches), so only the generator's figure is reported.
        tokens_per_s = float("nan")
    figures: dict[str, Any] = {
        "grounding_rate": grounding_rate(rows),
        "fallback_rate": fallback_rate(rows),
        "distinct_2": distinct_2([r.text for r in rows]),
        "personalization": personalization(rows, profiles),
        "rouge_l": summary_rouge_l(rows, items),
        "rouge_l_model": summary_rouge_l([r for r in rows if r.passed_guardrails], items),
        "tokens_per_s": float(tokens_per_s),
        **latency_percentiles(rows),
        "n_items": len({r.item_id for r in rows}),
        "n_rows": len(rows),
        "n_generated": len(fresh),
        "n_cached": len(rows) - len(fresh),
        "model_calls": int(stats.get("model_calls", 0)),
        "generated_tokens": int(stats.get("generated_tokens", 0)),
    }
    return figures


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def write_summary(figures: Mapping[str, Any], path: str | Path) -> Path:
    """Write the figures as JSON (NaN as null); the summary keys come first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {k: _json_safe(figures.get(k)) for k in SUMMARY_KEYS}
    ordered.update({k: _json_safe(v) for k, v in figures.items() if k not in ordered})
    path.write_text(json.dumps(ordered, indent=2, default=str))
    return path
