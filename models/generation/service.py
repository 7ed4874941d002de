"""Personalized copy for (user, item, task) requests: cache first, then batched generation behind guardrails.

For each request the cache key is (item content hash, profile segment, task, style, generator version);
only personalized tasks (blurbs) key on the segment and read the profile, and then only through the segment
(style + top two categories), so two users of one segment may share a cached text. Keys missing from the cache
(and duplicates within the batch, generated once) are turned into prompts, generated in batches, checked by
the guardrails (a rejected output falls back to the item's own sentences with the reason recorded), stored, and
returned in request order.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import duckdb
import pandas as pd

from models.generation import cache
from models.generation.constraints import CopySource
from models.generation.generator import Generation, Generator
from models.generation.guardrails import (
    DOUBLED,
    GuardrailConfig,
    check_output,
    extractive_fallback,
    strip_opening,
)
from models.generation.prompts import (
    INTEREST_PHRASINGS,
    NO_SEGMENT,
    PERSONALIZED_TASKS,
    STYLE_PHRASINGS,
    TASKS,
    PromptFields,
    build_prompt,
    fact_text,
    fit_reason,
    opening_interest,
    quote_data,
    resolve_style,
)
from models.generation.relevance import scorer_for, spread_over_readers
from models.generation.text import split_sentences, truncate_words, words_of
from models.interests import InterestProfile
from models.settings import GenerationSettings

NO_SPLICE = 10_000  # a copy context no sentence reaches: every sentence is copied whole


def content_hash(title: str, body: str) -> str:
    """md5(title || newline || body), the same hash dbt writes into marts.item_features."""
    return hashlib.md5(f"{title}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class ItemText:
    """The parts of an item that generation reads."""

    item_id: str
    title: str
    body: str
    category: str = ""
    tags: tuple[str, ...] = ()
    content_hash: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ItemText:
        """From a marts.item_features row (tags as 'a|b'); the hash is computed when absent."""
        title, body = str(row.get("title") or ""), str(row.get("body") or "")
        tags = tuple(t for t in str(row.get("tags") or "").split("|") if t)
        digest = row.get("content_hash")
        return cls(
            item_id=str(row["item_id"]),
            title=title,
            body=body,
            category=str(row.get("category") or ""),
            tags=tags,
            content_hash=str(digest) if isinstance(digest, str) and digest else content_hash(title, body),
        )

    @property
    def terms(self) -> list[str]:
        """Category and tags."""
        return [t for t in (self.category, *self.tags) if t]

    @property
    def sources(self) -> list[str]:
        """Every text an output about this item may draw on."""
        return [self.title, self.body, *self.terms]


def items_by_id(items: pd.DataFrame) -> dict[str, ItemText]:
    """ItemText per item id from an items DataFrame (columns of marts.item_features)."""
    return {str(r["item_id"]): ItemText.from_row(r) for r in items.to_dict("records")}


@dataclass(frozen=True)
class GenerationRequest:
    """Copy wanted for one user and item: a task and (for styled tasks) a style; None = the user's style."""

    user_id: str
    item: ItemText
    profile: InterestProfile
    task: str = "blurb"
    style: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")


@dataclass(frozen=True)
class GeneratedContent:
    """One published text and how it was made."""

    user_id: str
    item_id: str
    task: str
    style: str
    text: str
    passed_guardrails: bool
    fallback_reason: str | None
    model_version: str
    latency_ms: float
    n_tokens: int
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain fields (for DataFrames and JSON)."""
        return asdict(self)


PROMPT_CATEGORIES, PROMPT_TAGS, PROMPT_KEYWORDS = 2, 2, 2
# A blurb's opening names up to this many of the reader's shown interests that the item carries (fit first).
OPENING_INTERESTS = 3


def profile_terms(profile: InterestProfile) -> tuple[tuple[str, float], ...]:
    """The readable profile a personalized prompt shows: top categories, tags and keywords with their weights."""
    out: dict[str, float] = {}
    for pairs, k in (
        (profile.top_categories, PROMPT_CATEGORIES),
        (profile.top_tags, PROMPT_TAGS),
        (profile.keywords, PROMPT_KEYWORDS),
    ):
        for term, weight in pairs[:k]:
            out.setdefault(str(term), round(float(weight), 2))
    return tuple(out.items())


def segment_interests(profile: InterestProfile) -> tuple[str, ...]:
    """The interest terms a personalized prompt names, strongest kind first (categories, tags, keywords)."""
    return tuple(t for t, _ in profile_terms(profile))


def item_fit(profile: InterestProfile, item: ItemText) -> str | None:
    """Why ``item`` fits ``profile`` (the explanation's reason): a shared category, else tag, else keyword.

    A keyword the item's text has only inside a longer name ("civic" of "Civic Reform Party") is no reason.
    """
    text = f"{item.title} {item.body}"
    return fit_reason(
        [c for c, _ in profile.top_categories],
        [t for t, _ in profile.top_tags],
        [k for k, _ in profile.keywords if words_of(k) and _written_as(words_of(k), text) is not None],
        item.category,
        item.tags,
        text,
    )


def shared_interests(terms: Sequence[str], fit: str | None, item: ItemText, limit: int) -> tuple[str, ...]:
    """The reader's ``terms`` (as the prompt shows them) that ``item`` carries, ``fit`` first, at most ``limit``.

    A term is carried when it is the item's category or one of its tags, or when its words occur in the item's
    title or body (a keyword), then written as the item writes it ("oaxaca" -> "Oaxaca"). A term that would
    double a word of one named before it ("street-food, food") is left out.
    """
    if not fit or limit < 1:
        return ()
    own = {t.lower() for t in item.terms}
    text = f"{item.title} {item.body}"
    words = set(words_of(text))
    out: list[str] = []
    for term in dict.fromkeys([fit, *terms]):
        term_words = words_of(term)
        if term.lower() in own:
            written = term
        elif term_words and set(term_words) <= words:
            written = _written_as(term_words, text)
            if written is None:
                continue
        else:
            continue
        if any(set(term_words) & set(words_of(t)) or DOUBLED.search(f"{t}, {written}") for t in out):
            continue
        out.append(written)
        if len(out) >= limit:
            break
    return tuple(out)


_CAPITALIZED = re.compile(r"[A-Z][\w'.-]*")


def _written_as(term_words: Sequence[str], text: str) -> str | None:
    """How ``text`` writes the keyword ``term_words``, or None where it only occurs inside a longer name.

    "Washington" alone is an interest the item carries; "civic" read from "Civic Reform Party" or "air" from
    "Horizon Air" is part of an organisation's name, and "Into Civic?" would not read as an interest.
    """
    pattern = r"(?<![\w-])" + r"\s+".join(re.escape(w) for w in term_words) + r"(?![\w-])"
    for found in re.finditer(pattern, text, flags=re.IGNORECASE):
        if _CAPITALIZED.fullmatch(found.group(0).split()[0]):
            before = text[: found.start()].split()[-1:]
            after = text[found.end() :].split()[:1]
            # a capitalized neighbour (not a sentence's first word) makes the match part of a longer name
            neighbour_before = (
                bool(before) and bool(_CAPITALIZED.match(before[0])) and before[0][-1] not in ".!?:"
            )
            neighbour_after = bool(after) and bool(_CAPITALIZED.match(after[0]))
            if neighbour_before or neighbour_after:
                continue
        return found.group(0)
    return None


def request_fields(request: GenerationRequest) -> tuple[PromptFields, str]:
    """The prompt fields and cache segment of a request.

    A personalized task's segment is everything of the profile its prompt shows (style, terms and weights,
    and why the item fits), so two users share a cached text exactly when they would get the same prompt.
    """
    personalized = request.task in PERSONALIZED_TASKS
    style = resolve_style(request.task, request.style, request.profile.preferred_style)
    terms = profile_terms(request.profile) if personalized else ()
    fit = item_fit(request.profile, request.item) if personalized else None
    shown = tuple(t for t, _ in terms)
    fields = PromptFields(
        task=request.task,
        style=style,
        title=request.item.title,
        body=request.item.body,
        interests=shown,
        weights=tuple(w for _, w in terms),
        fit=fit,
        shared=shared_interests(shown, fit, request.item, OPENING_INTERESTS) if personalized else (),
    )
    if not personalized:
        return fields, NO_SEGMENT
    weighted = "|".join(f"{t}={w:.2f}" for t, w in terms)
    digest = hashlib.md5(f"{weighted}#{fit}".encode()).hexdigest()[:12]
    return fields, f"{style}:{digest}"


def fit_prompt(fields: PromptFields, generator: Generator, max_fact_words: int) -> str:
    """The prompt for ``fields`` with as many fact words (and title words) as the model's context allows."""
    return fitted_prompt(fields, generator, max_fact_words)[0]


def copy_source(fields: PromptFields, fact_words: int, variant: int | None = None) -> CopySource:
    """What a constrained output for ``fields`` may copy: the task's template openings and the shown facts.

    Blurbs open with a phrasing of their style naming why the item fits (``fields.fit``), or a plain
    phrasing of the style when nothing fits, then one fact sentence; style transfer opens with a phrasing of
    the style; summaries are one or two fact sentences; titles the title. ``variant`` picks one phrasing of
    the style (so a feed does not open every blurb alike); None leaves the choice among all to the model.
    """
    sentences = tuple(split_sentences(fact_text(fields.body, fact_words)))
    if fields.task == "title":
        return CopySource((), (quote_data(fields.title),), True, 1)
    if fields.task == "summary":
        return CopySource((), sentences or (quote_data(fields.title),), True, 2)
    if fields.task == "blurb" and fields.fit:
        phrasings = INTEREST_PHRASINGS[fields.style]
    else:
        phrasings = STYLE_PHRASINGS[fields.style]
    fit = opening_interest(fields)
    heads = [p.split("{text}")[0].strip().replace("{interest}", fit) for p in phrasings]
    if variant is not None:
        heads = [heads[variant % len(heads)]]
    openings = tuple(dict.fromkeys(h for h in heads if h))
    return CopySource(openings, sentences, any(not h for h in heads), 1)


def phrasing_variant(key: cache.CacheKey) -> int:
    """A stable number per (item, segment, task, style): which of the style's phrasings opens the copy."""
    return int(
        hashlib.md5(f"{key.content_hash}|{key.segment}|{key.task}|{key.style}".encode()).hexdigest()[:8], 16
    )


def fitted_prompt(fields: PromptFields, generator: Generator, max_fact_words: int) -> tuple[str, int]:
    """:func:`fit_prompt` and the number of fact words the prompt shows."""
    words = max_fact_words
    prompt = build_prompt(fields, generator.prompt_format, words)
    while generator.count_tokens(prompt) > generator.max_prompt_tokens and words > 5:
        words //= 2
        prompt = build_prompt(fields, generator.prompt_format, words)
    title_words = len(fields.title.split())
    while generator.count_tokens(prompt) > generator.max_prompt_tokens and title_words > 1:
        # a title longer than the context (a broken or hostile item) would overflow the model's positions
        title_words //= 2
        short = replace(fields, title=truncate_words(fields.title, title_words))
        prompt = build_prompt(short, generator.prompt_format, words)
    return prompt, words


@dataclass(frozen=True)
class Checked:
    """A model output after the guardrails: the text to publish and, when it was replaced, why."""

    text: str
    passed: bool
    reason: str | None


def trim_unfinished(text: str) -> str:
    """Cut a text the token budget stopped mid-way back to its last complete sentence (if it has one)."""
    sentences = split_sentences(text)
    while sentences and sentences[-1][-1:] not in ".!?":
        sentences.pop()
    return " ".join(sentences) if sentences else text


def trim_repetition(text: str, n: int = 3) -> str:
    """Cut a text where it starts repeating itself (the first word n-gram seen before), at a sentence end if any."""
    words = text.split()
    seen: set[tuple[str, ...]] = set()
    for j in range(len(words) - n + 1):
        gram = tuple(w.lower().strip(".,:;!?") for w in words[j : j + n])
        if gram in seen:
            head = " ".join(words[:j])
            return trim_unfinished(head) if head[-1:] not in ".!?" else head
        seen.add(gram)
    return text


def finalize_text(
    raw: str, fields: PromptFields, item: ItemText, settings: GenerationSettings, finished: bool = True
) -> Checked:
    """Run the guardrails on a raw model output; a rejected one is replaced by the item's own sentences."""
    # A small model stops by running out of budget or by looping: keep what it wrote before either happened.
    # Only what follows the template opening can loop: an opening naming the reader's interests ("From the world
    # of crime and thriller:") is often repeated by the item's own sentence ("... a 1995 crime and thriller film.").
    opening, rest = strip_opening(raw)
    raw = f"{opening} {trim_repetition(rest)}" if opening else trim_repetition(raw)
    if not finished:
        raw = trim_unfinished(raw)
    # Only the item's own facts ground an output: an interest the item does not carry is not a fact about it.
    result = check_output(raw, fields.task, item.sources, (), GuardrailConfig.from_settings(settings))
    if result.passed:
        return Checked(result.text, True, None)
    fallback = extractive_fallback(fields, settings.max_words, item.terms, settings.blocklist)
    return Checked(fallback, False, result.reason)


def _written(
    pending: list[tuple[cache.CacheKey, PromptFields, ItemText]],
    generator: Generator,
    settings: GenerationSettings,
) -> dict[cache.CacheKey, cache.CacheEntry]:
    """Generate, check and (when rejected) replace the text of every pending key."""
    # A personalized prompt shows the item's sentences most relevant to the reader first (as in training).
    # Readers of one item get different sentences where their relevance is close (generation.reader_diversity).
    scorer = scorer_for(settings.target_scorer) if settings.fact_order == "relevance" else None
    ordered = spread_over_readers(
        [(item.item_id, fields) for _, fields, item in pending],
        scorer,
        settings.reader_diversity,
        settings.batch_diversity,
        settings.sentence_focus,
    )
    pending = [(key, fields, item) for (key, _, item), fields in zip(pending, ordered, strict=True)]
    fitted = [fitted_prompt(fields, generator, settings.max_fact_words) for _, fields, _ in pending]
    prompts = [p for p, _ in fitted]
    copying = generator.decoding.constrain_to_prompt and generator.decoding.copy_context > 0
    sources = None
    if copying:
        sources = [
            copy_source(fields, n, phrasing_variant(key) if settings.vary_phrasing else None)
            for (key, fields, _), (_, n) in zip(pending, fitted, strict=True)
        ]
        outputs = generator.generate(prompts, sources=sources)
    else:
        outputs = generator.generate(prompts)
    checked = []
    for (_, fields, item), out in zip(pending, outputs, strict=True):
        started = time.perf_counter()
        result = finalize_text(out.text, fields, item, settings, out.finished)
        checked.append((result, out, (time.perf_counter() - started) * 1000.0))
    rejected = [i for i, (result, _, _) in enumerate(checked) if not result.passed]
    if copying and sources is not None and rejected and settings.second_attempt:
        # A second attempt for rejected rows, copying whole sentences (no splice between two of them): still
        # the model's choice of opening and sentences, so a row that passes now is a model row.
        again = generator.generate(
            [prompts[i] for i in rejected], sources=[sources[i] for i in rejected], copy_context=NO_SPLICE
        )
        generator.n_second_attempts += len(rejected)
        for i, out in zip(rejected, again, strict=True):
            _, fields, item = pending[i]
            started = time.perf_counter()
            result = finalize_text(out.text, fields, item, settings, out.finished)
            if result.passed:
                first = checked[i][1]
                took = checked[i][2] + (time.perf_counter() - started) * 1000.0
                merged = Generation(
                    out.text, first.n_tokens + out.n_tokens, first.latency_ms + out.latency_ms
                )
                checked[i] = (result, merged, took)
    written: dict[cache.CacheKey, cache.CacheEntry] = {}
    for (key, _, _), (result, out, took) in zip(pending, checked, strict=True):
        written[key] = cache.CacheEntry(
            key, result.text, result.passed, result.reason, out.n_tokens, out.latency_ms + took
        )
    return written


def generate_content(
    requests: Sequence[GenerationRequest],
    generator: Generator,
    cache_con: duckdb.DuckDBPyConnection | None = None,
    settings: GenerationSettings | None = None,
) -> list[GeneratedContent]:
    """Copy for every request, in order: cached texts where present, the rest generated in batches."""
    settings = settings or GenerationSettings()
    # every setting that changes the published text is part of the key (decoding, output settings, model)
    version = generator.version_for(settings)
    keyed: list[tuple[cache.CacheKey, PromptFields, GenerationRequest]] = []
    for request in requests:
        fields, segment = request_fields(request)
        key = cache.CacheKey(request.item.content_hash, segment, fields.task, fields.style, version)
        keyed.append((key, fields, request))
    started = time.perf_counter()
    found = cache.lookup(cache_con, (k for k, _, _ in keyed)) if cache_con is not None else {}
    lookup_ms = (time.perf_counter() - started) * 1000.0
    pending: dict[cache.CacheKey, tuple[cache.CacheKey, PromptFields, ItemText]] = {}
    for key, fields, request in keyed:
        if key not in found and key not in pending:
            pending[key] = (key, fields, request.item)
    written = _written(list(pending.values()), generator, settings) if pending else {}
    if cache_con is not None and written:
        cache.store(cache_con, written.values())
    out: list[GeneratedContent] = []
    first_use: set[cache.CacheKey] = set()
    for key, fields, request in keyed:
        fresh = key in written and key not in first_use
        entry = written[key] if key in written else found[key]
        first_use.add(key)
        out.append(
            GeneratedContent(
                user_id=request.user_id,
                item_id=request.item.item_id,
                task=fields.task,
                style=fields.style,
                text=entry.text,
                passed_guardrails=entry.passed_guardrails,
                fallback_reason=entry.fallback_reason,
                model_version=version,
                # A request served from the cache (or from a duplicate in this batch) waited only for the lookup.
                latency_ms=entry.latency_ms if fresh else lookup_ms,
                n_tokens=entry.n_tokens,
                cached=not fresh,
            )
        )
    return out


def build_requests(
    pairs: Iterable[tuple[str, str]],
    items: Mapping[str, ItemText],
    profiles: Mapping[str, InterestProfile],
    tasks: Sequence[str] = ("blurb",),
) -> list[GenerationRequest]:
    """One request per (user, item) pair and task; pairs with an unknown item or user are skipped."""
    out = []
    for user_id, item_id in pairs:
        item, profile = items.get(str(item_id)), profiles.get(str(user_id))
        if item is None or profile is None:
            continue
        out.extend(GenerationRequest(str(user_id), item, profile, task) for task in tasks)
    return out
