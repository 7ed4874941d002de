"""Figures on generated copy: grounding, fallbacks, diversity, personalization, summary overlap, speed.

Small pure functions over texts and :class:`GeneratedContent` rows, each tested against hand-computed
values; :func:`evaluate` combines them and :func:`write_summary` writes ``reports/generation_summary.json``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.generation.guardrails import strip_opening, unsupported_claims
from models.generation.prompts import INTEREST_PHRASINGS, STYLE_PHRASINGS, STYLED_TASKS
from models.generation.service import GeneratedContent, ItemText
from models.generation.text import lead_sentences, split_sentences, word_ngrams, words_of
from models.interests import InterestProfile

SUMMARY_KEYS = (
    "n_rows",
    "n_model_rows",
    "n_fallback_rows",
    "n_cached_rows",
    "fallback_rate",
    "fallback_reasons",
    "well_formed_share",
    "faithfulness",
    "raw_faithfulness",
    "personalization_lift",
    "opening_agreement",
    "distinct_1",
    "distinct_2",
    "distinct_2_at_100",
    "distinct_2_copy_ceiling",
    "distinct_2_same_item",
    "repeated_3gram_rate",
    "style_accuracy",
    "tokens_per_s",
    "p95_latency_ms",
    "n_items",
)
# Figures reported again over the rows of held-out items (prefix heldout_) and of seen items (prefix seen_).
SPLIT_KEYS = tuple(
    k for k in SUMMARY_KEYS if k not in {"n_rows", "distinct_1", "repeated_3gram_rate", "tokens_per_s"}
)
Embed = Callable[[Sequence[str]], np.ndarray]


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
    grams = [g for text in texts for g in word_ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_2_at(texts: Sequence[str], n: int = 100, draws: int = 20, seed: int = 0) -> tuple[float, float]:
    """Distinct-2 of ``n`` texts drawn at random, mean and std over ``draws`` draws (NaN with fewer texts).

    Corpus distinct-n falls as a corpus grows (every new text can only repeat more of what came before), so a
    day that writes copy for more readers or deeper slates reads as less varied even when each part of it is
    more varied. This holds the number of texts fixed, so days of different sizes compare.
    """
    if len(texts) < n or n < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [
        distinct_n([texts[i] for i in rng.choice(len(texts), n, replace=False)], 2) for _ in range(draws)
    ]
    return float(np.mean(values)), float(np.std(values))


def distinct_2_copy_ceiling(rows: Sequence[GeneratedContent], items: Mapping[str, ItemText]) -> float:
    """The highest distinct-2 outputs of this length could reach while copying only their items' text.

    (distinct bigrams of the sources of the items the rows are about + distinct bigrams of the rows found in
    none of those sources) / all bigrams of the rows, at most 1 (no set of rows has more distinct bigrams than
    bigrams: where the items' text holds more than the rows write, the ceiling does not bind). Copy decoding
    writes no other bigram, so its distinct-2 cannot pass this; a day with many readers per item has a low
    ceiling (NaN without rows).
    """
    pool: set[tuple[str, ...]] = set()
    for item_id in {r.item_id for r in rows}:
        item = items.get(item_id)
        for text in item.sources if item else ():
            for sentence in split_sentences(text):
                pool.update(word_ngrams(sentence, 2))
    written: set[tuple[str, ...]] = set()
    total = 0
    for r in rows:
        grams = word_ngrams(r.text, 2)
        total += len(grams)
        written.update(grams)
    return min(1.0, (len(pool) + len(written - pool)) / total) if total else float("nan")


def distinct_2_same_item(rows: Sequence[GeneratedContent]) -> float:
    """Distinct-2 among the readers of one item: how differently the same item's copy reads to each reader.

    Per (item, task) with at least two rows: its distinct bigrams; summed over those groups and divided by
    their bigrams (NaN without such a group). Corpus distinct-2 also falls when many readers get one item
    whose copy is correctly drawn from the same few sentences; this figure sets that apart from copy that
    repeats across items.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        groups.setdefault((r.item_id, r.task), []).append(r.text)
    distinct = total = 0
    for texts in groups.values():
        if len(texts) < 2:
            continue
        grams = [g for t in texts for g in word_ngrams(t, 2)]
        distinct += len(set(grams))
        total += len(grams)
    return distinct / total if total else float("nan")


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


def model_rows(rows: Sequence[GeneratedContent]) -> list[GeneratedContent]:
    """Rows the model wrote in this run and the guardrails published (no fallbacks, no cache hits)."""
    return [r for r in rows if r.passed_guardrails and not r.cached]


def fallback_rate(rows: Sequence[GeneratedContent]) -> float:
    """Share of rows generated now whose model output was replaced by the extractive fallback (cache hits aside)."""
    fresh = [r for r in rows if not r.cached]
    if not fresh:
        return float("nan")
    return sum(not r.passed_guardrails for r in fresh) / len(fresh)


def reason_kinds(reason: str | None) -> list[str]:
    """The kinds of a fallback reason ("ungrounded: X; repetition: ..." -> ["ungrounded", "repetition"])."""
    return [part.split(":")[0].strip() for part in (reason or "").split("; ") if part.strip()]


def fallback_reasons(rows: Sequence[GeneratedContent]) -> dict[str, int]:
    """How many fresh fallback rows record each kind of reason (a row may record several)."""
    counts: Counter[str] = Counter()
    for r in rows:
        if not r.cached and not r.passed_guardrails:
            counts.update(dict.fromkeys(reason_kinds(r.fallback_reason), 1))
    return dict(counts.most_common())


def _share_without(rows: Sequence[GeneratedContent], *kinds: str) -> float:
    fresh = [r for r in rows if not r.cached]
    if not fresh:
        return float("nan")
    return sum(not set(kinds) & set(reason_kinds(r.fallback_reason)) for r in fresh) / len(fresh)


def well_formed_share(rows: Sequence[GeneratedContent]) -> float:
    """Share of fresh model outputs the well-formedness guardrail accepted (before any fallback)."""
    return _share_without(rows, "not_well_formed", "empty", "too_short")


def raw_faithfulness(rows: Sequence[GeneratedContent]) -> float:
    """Share of fresh model outputs, before the guardrails, with no unsupported claim (rejected ones count)."""
    return _share_without(rows, "ungrounded")


def faithful(row: GeneratedContent, items: Mapping[str, ItemText]) -> bool:
    """Whether every number, name and content claim of the row is supported by its own item's facts."""
    item = items.get(row.item_id)
    return item is not None and not unsupported_claims(row.text, item.sources)


def faithfulness(rows: Sequence[GeneratedContent], items: Mapping[str, ItemText]) -> float:
    """Share of model rows whose claims are all supported by the item's own facts (NaN without model rows)."""
    written = [r for r in rows if r.passed_guardrails]
    if not written:
        return float("nan")
    return sum(faithful(r, items) for r in written) / len(written)


def style_of(text: str) -> str:
    """The style a rule set reads off an output: its template opening, else its punctuation and register."""
    opening, _ = strip_opening(text)
    if opening:
        # the most specific template wins: "On the subject of travel:" is formal, though "On {interest}:"
        # (concise) matches it too
        matches = [
            (len(head.replace("{interest}", "")), style)
            for table in (STYLE_PHRASINGS, INTEREST_PHRASINGS)
            for style, phrasings in table.items()
            for head in (p.split("{text}")[0].strip() for p in phrasings)
            if head and _opening_matches(head, opening)
        ]
        if matches:
            return max(matches)[1]
    if "!" in text:
        return "enthusiastic"
    if re.search(r"\b(you|your|you're|it's|don't)\b", text, re.IGNORECASE):
        return "casual"
    return "concise"


def _opening_matches(template_head: str, opening: str) -> bool:
    parts = [re.escape(p) for p in template_head.split("{interest}")]
    return re.fullmatch(r".+?".join(parts), opening) is not None


def style_accuracy(rows: Sequence[GeneratedContent]) -> float:
    """Share of styled model rows whose style the rule set (:func:`style_of`) reads back correctly."""
    styled = [r for r in rows if r.task in STYLED_TASKS]
    if not styled:
        return float("nan")
    return sum(style_of(r.text) == r.style for r in styled) / len(styled)


def profile_text(profile: InterestProfile) -> str:
    """The readable profile as one text for the encoder: categories, tags and keywords, strongest first."""
    return ", ".join(profile.interest_terms(12)) or "no interests"


def personalization_lift(
    rows: Sequence[GeneratedContent], profiles: Mapping[str, InterestProfile], embed: Embed | None
) -> tuple[float, int]:
    """Mean of sim(copy, own profile) - mean sim(copy, other users' profiles) over personalized rows.

    The other users are those with a copy of the same item (so the item's content cancels out), else every
    other user; returns the lift (NaN without an encoder or rows) and how many rows had same-item others.
    """
    blurbs = [r for r in rows if r.task == "blurb" and r.user_id in profiles]
    if embed is None or not blurbs or len(profiles) < 2:
        return float("nan"), 0
    users = sorted({r.user_id for r in blurbs} | set(profiles))
    texts = {u: profile_text(profiles[u]) for u in users if u in profiles}
    user_list = list(texts)
    profile_vecs = embed([texts[u] for u in user_list])
    index = {u: i for i, u in enumerate(user_list)}
    copy_vecs = embed([r.text for r in blurbs])
    by_item: dict[str, set[str]] = {}
    for r in blurbs:
        by_item.setdefault(r.item_id, set()).add(r.user_id)
    lifts, same_item = [], 0
    for r, vec in zip(blurbs, copy_vecs, strict=True):
        own = texts[r.user_id]
        others = [u for u in by_item[r.item_id] if u != r.user_id and texts[u] != own]
        if others:
            same_item += 1
        else:
            others = [u for u in user_list if texts[u] != own]
        if not others:
            continue
        sims = profile_vecs @ vec
        lifts.append(float(sims[index[r.user_id]] - np.mean([sims[index[u]] for u in others])))
    return (float(np.mean(lifts)) if lifts else float("nan")), same_item


def opening_agreement(
    rows: Sequence[GeneratedContent], items: Mapping[str, ItemText], embed: Embed | None
) -> tuple[float, int]:
    """Share of blurbs whose opening names a catalog category that the sentence after it is about.

    Over model blurbs whose template opening names at least one of the catalog's categories ("A treat for food
    fans!"); the sentence after the opening agrees when it writes one of the named categories itself ("... is a
    1997 drama film." after "New in drama:", as a movie's facts do), else when the category nearest to it by the
    encoder's similarity to the category names (a zero-shot topic, nothing the generator chose by) is one of
    them. Returns the share (NaN without an encoder or such rows) and the number of rows it is over.
    """
    categories = sorted({it.category for it in items.values() if it.category})
    if embed is None or len(categories) < 2:
        return float("nan"), 0
    patterns = {c: re.compile(rf"\b{re.escape(c.lower())}\b") for c in categories}
    named, rests = [], []
    for r in rows:
        if r.task != "blurb":
            continue
        opening, rest = strip_opening(r.text)
        hits = {c for c, p in patterns.items() if opening and p.search(opening.lower())}
        if hits and rest:
            named.append(hits)
            rests.append(rest)
    if not rests:
        return float("nan"), 0
    topic = np.asarray(categories)[np.argmax(embed(rests) @ embed(categories).T, axis=1)]
    agree = [
        t in hits or any(patterns[c].search(rest.lower()) for c in hits)
        for t, hits, rest in zip(topic, named, rests, strict=True)
    ]
    return float(np.mean(agree)), len(rests)


def summary_rouge_l(rows: Sequence[GeneratedContent], items: Mapping[str, ItemText]) -> float:
    """Mean ROUGE-L of published summaries against the item's lead sentences (NaN without summaries)."""
    scores = [
        rouge_l(r.text, lead_sentences(items[r.item_id].body))
        for r in rows
        if r.task == "summary" and r.item_id in items
    ]
    return float(np.mean(scores)) if scores else float("nan")


def latency_percentiles(rows: Sequence[GeneratedContent]) -> dict[str, float]:
    """p50 and p95 latency (ms) of the rows generated now (NaN when every row was cached)."""
    generated = [r.latency_ms for r in rows if not r.cached]
    if not generated:
        return {"p50_latency_ms": float("nan"), "p95_latency_ms": float("nan")}
    return {
        "p50_latency_ms": float(np.percentile(generated, 50)),
        "p95_latency_ms": float(np.percentile(generated, 95)),
    }


def repeated_ngram_rate(texts: Sequence[str], n: int = 3) -> float:
    """Share of word n-gram occurrences across ``texts`` that repeat an earlier one (1 - distinct-n)."""
    d = distinct_n(texts, n)
    return 1.0 - d if any(len(words_of(t)) >= n for t in texts) else float("nan")


def quality_figures(
    rows: Sequence[GeneratedContent],
    items: Mapping[str, ItemText],
    profiles: Mapping[str, InterestProfile],
    embed: Embed | None = None,
) -> dict[str, Any]:
    """Counts over all rows; quality over the model rows only (fallbacks and cache hits counted apart)."""
    written = model_rows(rows)
    texts = [r.text for r in written]
    lift, same_item = personalization_lift(written, profiles, embed)
    agreement, agreement_rows = opening_agreement(written, items, embed)
    at_100, at_100_std = distinct_2_at(texts, 100)
    return {
        "n_rows": len(rows),
        "n_model_rows": len(written),
        "n_fallback_rows": sum(not r.cached and not r.passed_guardrails for r in rows),
        "n_cached_rows": sum(r.cached for r in rows),
        "fallback_rate": fallback_rate(rows),
        "fallback_reasons": fallback_reasons(rows),
        "well_formed_share": well_formed_share(rows),
        "faithfulness": faithfulness(written, items),
        "raw_faithfulness": raw_faithfulness(rows),
        "personalization_lift": lift,
        "lift_same_item_rows": same_item,
        "opening_agreement": agreement,
        "opening_agreement_rows": agreement_rows,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_2_at_100": at_100,
        "distinct_2_at_100_std": at_100_std,
        "distinct_2_copy_ceiling": distinct_2_copy_ceiling(written, items),
        "distinct_2_same_item": distinct_2_same_item(written),
        "repeated_3gram_rate": repeated_ngram_rate(texts, 3),
        "style_accuracy": style_accuracy(written),
        "mentions_interest": personalization(written, profiles),
        "rouge_l_summary": summary_rouge_l(written, items),
        **latency_percentiles(rows),
        "n_items": len({r.item_id for r in rows}),
    }


def evaluate(
    rows: Sequence[GeneratedContent],
    items: Mapping[str, ItemText],
    profiles: Mapping[str, InterestProfile],
    generator_stats: Mapping[str, float] | None = None,
    heldout_items: Sequence[str] | frozenset[str] = (),
    embed: Embed | None = None,
    heldout_probe: Sequence[GeneratedContent] = (),
) -> dict[str, Any]:
    """Every figure of the generation summary: all rows, then seen_* and heldout_* (items never trained on).

    ``heldout_probe`` are extra rows on held-out items written only to be measured (never published); they
    count in the heldout_* figures only, beside the rows of held-out items among ``rows``.
    """
    stats = dict(generator_stats or {})
    figures = quality_figures(rows, items, profiles, embed)
    figures["tokens_per_s"] = float(stats.get("tokens_per_s", float("nan")))
    figures["model_calls"] = int(stats.get("model_calls", 0))
    figures["generated_tokens"] = int(stats.get("generated_tokens", 0))
    figures["second_attempts"] = int(stats.get("second_attempts", 0))
    held = set(heldout_items)
    for prefix, part in (
        ("seen_", [r for r in rows if r.item_id not in held]),
        (
            "heldout_",
            [r for r in rows if r.item_id in held] + [r for r in heldout_probe if r.item_id in held],
        ),
    ):
        sub = quality_figures(part, items, profiles, embed)
        figures.update({prefix + k: sub[k] for k in SPLIT_KEYS})
    figures["heldout_probe_rows"] = len(heldout_probe)
    return figures


def sample_rows(rows: Sequence[GeneratedContent], per_style: int = 5) -> list[GeneratedContent]:
    """Up to ``per_style`` model rows per style (fallback rows where a style has too few), distinct texts."""
    out: list[GeneratedContent] = []
    for style in sorted({r.style for r in rows}):
        mine = [r for r in rows if r.style == style]
        ordered = [r for r in mine if r.passed_guardrails] + [r for r in mine if not r.passed_guardrails]
        seen: set[str] = set()
        for r in ordered:
            if r.text not in seen and len(seen) < per_style:
                seen.add(r.text)
                out.append(r)
    return out


def check_failures(figures: Mapping[str, Any], settings: Any) -> list[str]:
    """Why the copy fails its check (``GenerationSettings`` thresholds); empty when it passes."""
    failures = []
    rate, faith, d2 = figures.get("fallback_rate"), figures.get("faithfulness"), figures.get("distinct_2")
    if rate is None or not math.isfinite(rate) or rate > settings.max_fallback_rate:
        failures.append(f"fallback rate {rate} > {settings.max_fallback_rate}")
    if faith is None or not math.isfinite(faith) or faith < settings.min_faithfulness:
        failures.append(f"faithfulness {faith} < {settings.min_faithfulness}")
    if d2 is None or not math.isfinite(d2) or d2 < settings.min_distinct_2:
        ceiling = figures.get("distinct_2_copy_ceiling")
        bound = (
            f" (copying the items' text allows at most {ceiling:.3f})" if isinstance(ceiling, float) else ""
        )
        failures.append(f"distinct-2 {d2} < {settings.min_distinct_2}{bound}")
    return failures


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
