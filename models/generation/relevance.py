"""How relevant an item's sentences are to a reader's profile: MiniLM similarity (default) or word overlap.

The blurb's training target is the fact sentence most relevant to the (synthetic) reader, and a personalized
prompt shows the item's sentences most relevant first, so the model learns to copy the first and a reader gets
the item's sentence closest to their interests. Both use the same scorer, so training and serving agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache

import numpy as np

from models.generation.prompts import PERSONALIZED_TASKS, PromptFields, opening_terms, quote_data
from models.generation.text import split_sentences, word_ngrams, words_of

SentenceScorer = Callable[[Sequence[str], Sequence[str]], list[list[float]]]


def minilm_scorer(model_name_or_path: str | None = None) -> SentenceScorer:
    """Score sentences against profiles by MiniLM cosine similarity (the packaged encoder by default).

    A profile is the mean of its terms' embeddings (each term encoded once), so scoring thousands of
    synthetic profiles costs one encoding per distinct term and sentence.
    """
    from models.encoders import TextEncoder
    from models.settings import packaged_encoder_path

    encoder = TextEncoder(model_name_or_path or packaged_encoder_path(), batch_size=64, max_length=64)
    cache: dict[str, np.ndarray] = {}

    def embed(texts: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            for text, vector in zip(missing, encoder.encode(missing), strict=True):
                cache[text] = vector

    def score(sentences: Sequence[str], profile_terms: Sequence[str]) -> list[list[float]]:
        embed([*sentences, *profile_terms])
        if not profile_terms:
            return [[0.0] * len(sentences)]
        profile = np.mean([cache[t] for t in profile_terms], axis=0)
        profile /= max(float(np.linalg.norm(profile)), 1e-9)
        return [[float(cache[s] @ profile) for s in sentences]]

    return score


def overlap_scorer(sentences: Sequence[str], profile_terms: Sequence[str]) -> list[list[float]]:
    """Score sentences by the words they share with the profile terms (a cheap stand-in for MiniLM)."""
    words = {w for t in profile_terms for w in words_of(t)}
    return [[float(len(words & set(words_of(s)))) for s in sentences]]


@lru_cache(maxsize=2)
def _shared_minilm() -> SentenceScorer:
    return minilm_scorer()


def scorer_for(kind: str) -> SentenceScorer | None:
    """The scorer a setting names: ``minilm`` (loaded once per process), ``overlap``, or None for ``none``."""
    if kind == "minilm":
        return _shared_minilm()
    if kind == "overlap":
        return overlap_scorer
    if kind == "none":
        return None
    raise ValueError(f"unknown relevance scorer {kind!r}; expected minilm, overlap or none")


def ranked_sentences(body: str, terms: Sequence[str], scorer: SentenceScorer) -> list[str]:
    """The sentences of ``body``, most relevant to ``terms`` first (ties keep the body's order)."""
    sentences = split_sentences(quote_data(body))
    if len(sentences) < 2 or not terms:
        return sentences
    scores = scorer(sentences, list(terms))[0]
    return [sentences[i] for i in sorted(range(len(sentences)), key=lambda i: (-scores[i], i))]


def by_relevance(fields: PromptFields, scorer: SentenceScorer | None) -> PromptFields:
    """``fields`` of a personalized task with its body's sentences ordered by relevance to its interests."""
    if scorer is None or fields.task not in PERSONALIZED_TASKS or not fields.interests:
        return fields
    return replace(fields, body=" ".join(ranked_sentences(fields.body, fields.interests, scorer)))


def upper_half(sentences: Sequence[str], term: str, scorer: SentenceScorer) -> set[int]:
    """Indices of the sentences about ``term``: the upper half by relevance to it (ties kept; n=5 keeps 3)."""
    scores = scorer(sentences, [term])[0]
    half = (len(sentences) + 1) // 2
    return {i for i in range(len(sentences)) if sum(x > scores[i] for x in scores) < half}


def named_by_sentence(
    fields: PromptFields, sentences: Sequence[str], chosen: int, scorer: SentenceScorer
) -> PromptFields:
    """``fields`` whose opening names only the interests that ``sentences[chosen]`` is about.

    A named interest (``fields.shared``, else ``fields.fit``) stays when the chosen sentence is among the upper
    half of the item's sentences by relevance to it; with none left the blurb opens with a plain phrasing of
    its style ("Have a look: ...") instead of naming an interest its sentence is not about.
    """
    named = opening_terms(fields)
    if not named or len(sentences) < 2:
        return fields
    keep = [t for t in named if chosen in upper_half(sentences, t, scorer)]
    if len(keep) == len(named):
        return fields
    fit = fields.fit if fields.fit in keep else (keep[0] if keep else None)
    return replace(fields, fit=fit, shared=tuple(t for t in fields.shared if t in keep))


def _bigrams(sentence: str) -> set[tuple[str, ...]]:
    return set(word_ngrams(sentence, 2))


def spread_over_readers(
    pending: Sequence[tuple[str, PromptFields]],
    scorer: SentenceScorer | None,
    weight: float,
    batch_weight: float = 0.0,
    focus: str = "profile",
) -> list[PromptFields]:
    """Each blurb's facts with the sentence chosen for its reader first, spread over readers and the batch.

    ``pending`` is (item id, fields) in request order. For a personalized task the chosen sentence is the one
    with the highest MiniLM relevance to the reader's profile, minus ``weight`` times the number of readers of
    the same item (in this batch) already given it (the item's lead sentence starts as given once: the
    summary every reader sees carries it), minus ``batch_weight`` times the share of its word pairs that
    sentences chosen earlier in the batch already carry (so a phrase the catalog repeats across items, such
    as "The project, led by ...", does not open every other blurb). The other sentences follow by relevance.
    With both weights 0 this is :func:`by_relevance`; other tasks and readers without interests are as given.
    ``focus="opening"`` scores against what the opening names (:func:`prompts.opening_terms`, the profile when it
    names nothing) instead of the whole profile; ``focus="named"``
    chooses on the profile among the sentences about what the opening names (:func:`upper_half`);
    ``focus="sentence"`` chooses on the profile and then keeps in the opening only what the chosen sentence is
    about (:func:`named_by_sentence`).
    """
    uses: dict[str, dict[str, int]] = {}
    written: set[tuple[str, str]] = set()
    out: list[PromptFields] = []
    for item_id, fields in pending:
        if scorer is None or fields.task not in PERSONALIZED_TASKS or not fields.interests:
            out.append(fields)
            continue
        sentences = split_sentences(quote_data(fields.body))
        if len(sentences) < 2:
            out.append(fields)
            continue
        named = opening_terms(fields)
        terms = (named or list(fields.interests)) if focus == "opening" else list(fields.interests)
        scores = scorer(sentences, terms)[0]
        given = uses.setdefault(item_id, {sentences[0]: 1})
        pairs = [_bigrams(x) for x in sentences]
        values = [
            scores[i]
            - weight * given.get(sentences[i], 0)
            - batch_weight * (len(pairs[i] & written) / len(pairs[i]) if pairs[i] else 0.0)
            for i in range(len(sentences))
        ]
        eligible = range(len(sentences))
        if focus == "named" and named:
            # only sentences about what the opening names, and among them the one closest to the reader
            eligible = sorted(set().union(*(upper_half(sentences, t, scorer) for t in named)))
        best = max(eligible, key=lambda i: (values[i], -i))
        given[sentences[best]] = given.get(sentences[best], 0) + 1
        written.update(pairs[best])
        rest = sorted((i for i in range(len(sentences)) if i != best), key=lambda i: (-scores[i], i))
        chosen = replace(fields, body=" ".join(sentences[i] for i in [best, *rest]))
        out.append(named_by_sentence(chosen, sentences, best, scorer) if focus == "sentence" else chosen)
    return out
