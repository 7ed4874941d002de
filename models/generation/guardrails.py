"""Checks every generated text must pass before it is published, and the extractive fallback when it fails.

Order: scrub PII (always, never a reason to reject), then reject on emptiness, length (in words, and in
content words: an output of only template and function words says nothing), repeated n-grams, blocklisted
phrases, and ungrounded terms. Grounding: every number, every capitalized name and (optionally) every content
word of the output must occur in the item's text or the user's interests (words the templates themselves add
and common function words are allowed); a number must keep a word that follows it in the sources ("42.7
percent", not "42.7 months"), and a multi-word name must occur as written ("Lorenzo Bianchi", not "Lorenzo
Tanaka"). A rejected output is replaced by
:func:`prompts.reference_output`, built from the item's own sentences, with the reasons recorded.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from models.generation.prompts import (
    PromptFields,
    quote_data,
    reference_output,
    template_openings,
    template_words,
)
from models.generation.text import (
    PII_PLACEHOLDERS,
    is_verb,
    scrub_pii,
    split_sentences,
    word_ngrams,
    words_of,
)

# Function words and generic connectives any fluent sentence may use without a source.
STOPWORDS: frozenset[str] = frozenset(
    words_of(
        """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each even ever few for from further had has
    have having he her here hers him his how i if in into is it its itself just like may me might more most
    much must my new no nor not now of off on once one only or other our out over own per read same she
    should since so some still such than that the their them then there these they this those through to
    too under until up very was we were what when where which while who whom why will with within without
    would yet you your yours"""
    )
)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
CAPITALIZED = re.compile(r"\b[A-Z][A-Za-z'-]*\b")


@dataclass(frozen=True)
class GuardrailResult:
    """A checked output: the scrubbed text, whether it passed, and why not."""

    text: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    ungrounded: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        """All reasons in one string (None when it passed)."""
        return "; ".join(self.reasons) if self.reasons else None


@dataclass(frozen=True)
class GuardrailConfig:
    """Limits the checks apply (from GenerationSettings)."""

    max_words: int = 60
    min_words: int = 3
    max_repeated_ngrams: int = 2
    ngram: int = 3
    blocklist: tuple[str, ...] = ()
    content_words: bool = True
    min_content_words: int = 4
    min_sentence_words: int = 4

    @classmethod
    def from_settings(cls, settings: object) -> GuardrailConfig:
        """Read the limits from a ``GenerationSettings``."""
        return cls(
            max_words=settings.max_words,  # type: ignore[attr-defined]
            min_words=settings.min_words,  # type: ignore[attr-defined]
            max_repeated_ngrams=settings.max_repeated_ngrams,  # type: ignore[attr-defined]
            blocklist=tuple(settings.blocklist),  # type: ignore[attr-defined]
            content_words=settings.grounding_content_words,  # type: ignore[attr-defined]
            min_content_words=settings.min_content_words,  # type: ignore[attr-defined]
            min_sentence_words=settings.min_sentence_words,  # type: ignore[attr-defined]
        )


def _stem(word: str) -> str:
    # Crude plural/tense folding so "runners" is grounded by "runner" and "opened" by "opens".
    word = word.lower().removesuffix("'s")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in NUMBER.findall(text)}


def allowed_words() -> set[str]:
    """Words an output may contain without a source: function words, template words, PII placeholders."""
    placeholders = {p.strip("[]") for p in PII_PLACEHOLDERS.values()}
    return set(STOPWORDS) | template_words() | placeholders


def ungrounded_terms(output: str, sources: Iterable[str], content_words: bool = True) -> list[str]:
    """Numbers, names and (optionally) content words of ``output`` found in none of ``sources``, in order."""
    source_text = " ".join(s for s in sources if s)
    source_stems = {_stem(w) for w in words_of(source_text)}
    source_numbers = _numbers(source_text)
    allowed = allowed_words()
    out: list[str] = []

    def flag(term: str) -> None:
        if term not in out:
            out.append(term)

    for number in NUMBER.findall(output):
        if number.replace(",", "") not in source_numbers:
            flag(number)
    names = {m.group(0) for m in CAPITALIZED.finditer(output)}
    for token in re.findall(r"[A-Za-z][A-Za-z'-]*", output):
        lower = token.lower()
        if lower in allowed or _stem(lower) in source_stems:
            continue
        # Names are always checked; other words only when they carry content (4+ letters).
        if token in names or (content_words and len(lower) >= 4):
            flag(token)
    return out


def _tokens(text: str) -> list[str]:
    # Words and numbers in order, punctuation dropped ("4,200" stays one number).
    return re.findall(r"\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z'-]*", text)


def _number_contexts(text: str) -> list[tuple[str, str, str, str]]:
    # (number as written, number without separators, word before, word after) within a clause ("" at its edges)
    out = []
    for clause in re.split(r"[;:!?]|\.(?!\d)|,(?!\d)", text):
        tokens = _tokens(clause)
        for i, token in enumerate(tokens):
            if token[0].isdigit():
                before = tokens[i - 1].lower() if i > 0 else ""
                after = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
                out.append((token, token.replace(",", ""), before, after))
    return out


def misplaced_numbers(output: str, sources: Iterable[str]) -> list[str]:
    """Numbers whose neighbours differ from every occurrence of the number in the sources ("42.7 months").

    A number that is grounded on its own can still be attached to the wrong thing: the word after it (its unit
    or noun) and the word before it must be ones the sources use around that number, and a number may end a
    clause only where the sources end one with it.
    """
    before: dict[str, set[str]] = {}
    after: dict[str, set[str]] = {}
    for source in sources:
        for _, key, prev, nxt in _number_contexts(source or ""):
            before.setdefault(key, set()).add(prev)
            after.setdefault(key, set()).add(nxt)
    out = []
    for written, key, prev, nxt in _number_contexts(output):
        if key not in after:
            continue  # an unknown number is reported by ungrounded_terms
        if nxt not in after[key]:
            out.append(f"{written} {nxt}".strip())
        elif prev not in before[key]:
            out.append(f"{prev} {written}".strip())
    return out


MALFORMED = re.compile(r"[,;:]\s*[,;:.!?]|[.!?]\s*[,;:]")


def broken_names(output: str, sources: Iterable[str], allowed: set[str]) -> list[str]:
    """Runs of two or more capitalized words in ``output`` that occur in none of the sources as written.

    Each name word may be grounded alone ("Lorenzo", "Tanaka") while the pair is invented ("Lorenzo Tanaka").
    Leading function or template words ("The", "For") are not part of a name.
    """
    text = " ".join(s for s in sources if s)
    source_runs = " " + " ".join(re.findall(r"[A-Za-z0-9'-]+|[^\sA-Za-z0-9'-]", text)) + " "
    out = []
    for run in re.findall(r"(?:\b[A-Z][A-Za-z'-]*(?:\s+|$))+", output):
        words = run.split()
        while words and words[0].lower() in allowed:
            words = words[1:]
        if len(words) >= 2 and f" {' '.join(words)} " not in source_runs:
            out.append(" ".join(words))
    return out


def content_words(text: str) -> int:
    """Words that are neither function words nor template words (what the output actually says)."""
    allowed = allowed_words()
    return sum(1 for w in words_of(text) if w not in allowed)


def repeated_ngrams(text: str, n: int = 3) -> int:
    """How many n-gram occurrences repeat an earlier one (0 for a text without repeats)."""
    counts = Counter(word_ngrams(text, n))
    return sum(c - 1 for c in counts.values() if c > 1)


def blocked_terms(text: str, blocklist: Sequence[str]) -> list[str]:
    """Blocklisted words or phrases that occur in ``text`` as whole words (case-insensitive)."""
    return [
        term for term in blocklist if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE)
    ]


# Words a complete sentence does not end on ("... a path to a better." is a fragment).
DANGLING: frozenset[str] = frozenset(
    words_of(
        """a an the of to in on at for with from by and or but nor that this these those its their his her our
    your as than into about over under between across through within after before while because if whose
    which who very more most said says would will could can may might must should is are was were be"""
    )
)
DOUBLED = re.compile(r"\b([A-Za-z0-9'-]+(?:\s+[A-Za-z0-9'-]+){0,3})[\s,]+\1\b", re.IGNORECASE)


_TERM = r"[A-Za-z0-9'-]+(?:[ -][A-Za-z0-9'-]+){0,3}"
# one interest, or a list of up to four ("food", "food and baking", "food, baking and Oaxaca")
_INTEREST = rf"{_TERM}(?:, {_TERM}){{0,2}}(?: and {_TERM})?"


def _opening_pattern(opening: str) -> re.Pattern[str]:
    # "For fans of {interest}:" -> a regex where the interest is one term of one to four words, or a list
    parts = [re.escape(p) for p in opening.split("{interest}")]
    return re.compile("^" + _INTEREST.join(parts) + r"\s*")


_OPENINGS: list[re.Pattern[str]] = []


def strip_opening(text: str) -> tuple[str, str]:
    """Split ``text`` into the template opening it starts with ("Great news!", "For fans of x:") and the rest."""
    if not _OPENINGS:
        _OPENINGS.extend(_opening_pattern(o) for o in template_openings())
    opening, rest = "", text
    found = True
    while found:  # a fallback may nest openings: "Quick read: For fans of x: ..."
        found = False
        for pattern in _OPENINGS:
            match = pattern.match(rest)
            if match and match.end() < len(rest):
                opening, rest = f"{opening} {match.group(0).strip()}".strip(), rest[match.end() :].strip()
                found = True
                break
    return opening, rest


# Words after which the next word modifies a noun ("the hiking trail"), so it is not read as a clause's verb.
DETERMINERS: frozenset[str] = frozenset(words_of("a an the this that these those its their his her our your"))


def _has_verb(words: Sequence[str], start: int = 0, stop: int | None = None) -> bool:
    # a verb among words[start:stop] that no determiner comes right before
    stop = len(words) if stop is None else stop
    return any(is_verb(words[i]) and (i == 0 or words[i - 1] not in DETERMINERS) for i in range(start, stop))


def _grams(sources: Iterable[str], n: int) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for source in sources:
        for sentence in split_sentences(source or ""):
            w = words_of(sentence)
            out.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return out


def spliced_sentences(text: str, sources: Sequence[str], max_shared: int = 3) -> list[str]:
    """Sentences of ``text`` that run two source sentences together at shared function words only.

    Copy decoding may pass from one source sentence to another where both have the same words; where those
    words are only function words ("and the") the rest belongs to another sentence's grammar: "... focuses
    on the passport and the hedge fund need more scrutiny." A join is where the output's words a, s_1..s_k, b
    occur in no single source sentence while a, s_1..s_k and s_1..s_k, b each do (k <= ``max_shared``, every
    s_i a function word); the sentence is reported when a verb comes both before and after the join (two
    clauses glued together; "The passport and the hedge fund need more scrutiny." has one). A sentence copied
    whole, however many "and the" it has, has no join.
    """
    grams = {n: _grams(sources, n) for n in range(2, max_shared + 3)}
    out = []
    for sentence in split_sentences(strip_opening(text)[1]):
        words = words_of(sentence)
        joined = ""
        for k in range(1, max_shared + 1):
            whole, part = grams[k + 2], grams[k + 1]
            for i in range(1, len(words) - k):
                shared = words[i : i + k]
                if not all(w in STOPWORDS for w in shared) or tuple(words[i - 1 : i + k + 1]) in whole:
                    continue
                sides = tuple(words[i - 1 : i + k]) in part and tuple(words[i : i + k + 1]) in part
                if sides and _has_verb(words, 0, i) and _has_verb(words, i + k):
                    joined = " ".join(shared)
                    break
            if joined:
                break
        if joined:
            short = sentence if len(sentence) <= 40 else sentence[:37] + "..."
            out.append(f"spliced at {joined!r} {short!r}")
    return out


def sentence_problems(
    text: str, task: str, min_sentence_words: int = 4, sources: Sequence[str] = ()
) -> list[str]:
    """Why ``text`` is not made of complete sentences (empty when it is).

    After the template opening, every sentence must start with a capital letter or digit, end with ``.``, ``!``
    or ``?``, have at least ``min_sentence_words`` words with a verb among them (a lexicon, see
    ``text.is_verb``), and not end on a function word; no word or phrase may be doubled ("National Assembly
    National Assembly") and no sentence repeated. Titles are checked for doubled phrases and dangling ends only.
    With the item's ``sources``, a doubled phrase that they write themselves ("Liar Liar") is allowed, and no
    sentence may run two of their sentences together at function words (:func:`spliced_sentences`).
    """
    problems: list[str] = []
    # a repetition the item's own text writes ("Liar Liar", "New York, New York") is the item's, not a fault
    written = None  # the sources' words, read only when the output doubles something
    for doubled in DOUBLED.finditer(text):
        if written is None:
            written = f" {' '.join(' '.join(words_of(src)) for src in sources if src)} "
        if f" {' '.join(words_of(doubled.group(0)))} " not in written:
            problems.append(f"doubled phrase {doubled.group(1)!r}")
            break
    if task == "title":
        last = words_of(text)[-1:] if words_of(text) else []
        if last and last[0] in DANGLING:
            problems.append(f"dangling end {last[0]!r}")
        return problems
    _, rest = strip_opening(text)
    sentences = split_sentences(rest)
    if not sentences:
        return [*problems, "no sentence after the opening"]
    seen: set[str] = set()
    for sentence in sentences:
        words = words_of(sentence)
        head = sentence.lstrip("\"'([")
        short = sentence if len(sentence) <= 40 else sentence[:37] + "..."
        if not head[:1].isupper() and not head[:1].isdigit():
            problems.append(f"lower-case start {short!r}")
        if sentence[-1:] not in ".!?":
            problems.append(f"no terminal punctuation {short!r}")
        if len(words) < min_sentence_words:
            problems.append(f"fragment {short!r}")
        elif not any(is_verb(w) for w in words):
            problems.append(f"no verb {short!r}")
        if words and words[-1] in DANGLING:
            problems.append(f"dangling end {short!r}")
        key = " ".join(words)
        if key in seen:
            problems.append(f"repeated sentence {short!r}")
        seen.add(key)
    if sources:
        problems.extend(spliced_sentences(text, sources))
    return problems


def _claims(text: str) -> set[str]:
    # names (capitalized words not at a sentence start unless a run) and numbers of one sentence
    names = {m.group(0) for m in CAPITALIZED.finditer(text) if m.group(0).lower() not in allowed_words()}
    return names | {n.replace(",", "") for n in NUMBER.findall(text)}


def mixed_claims(output: str, sources: Iterable[str]) -> list[str]:
    """Output sentences whose names and numbers never occur together in one source sentence.

    Each fact can be right on its own while the sentence pairs a person with another sentence's figure
    ("Chef Lorenzo Bianchi expects 48,448 users" when the item gives that figure to someone else).
    """
    source_sets = [_claims(s) for src in sources if src for s in split_sentences(src)]
    out = []
    for sentence in split_sentences(strip_opening(output)[1]):
        claims = _claims(sentence)
        if len(claims) >= 2 and not any(claims <= known for known in source_sets):
            out.append(sentence if len(sentence) <= 40 else sentence[:37] + "...")
    return out


def unsupported_claims(text: str, sources: Sequence[str], content_words: bool = True) -> list[str]:
    """Every number, name and content claim of ``text`` that the ``sources`` do not support (empty = faithful).

    Unknown numbers, names and content words; numbers with the wrong neighbours; multi-word names not written
    so in the sources; sentences combining names and numbers no source sentence combines.
    """
    invented = ungrounded_terms(text, sources, content_words)
    # a name made of invented words is already reported word by word
    names = [n for n in broken_names(text, sources, allowed_words()) if not set(n.split()) & set(invented)]
    invented += misplaced_numbers(text, sources) + names
    # combinations are judged only when every part is supported on its own
    return invented or mixed_claims(text, sources)


def check_output(
    text: str,
    task: str,
    item_texts: Sequence[str],
    profile_terms: Sequence[str],
    config: GuardrailConfig,
) -> GuardrailResult:
    """Scrub PII from ``text`` and check length, repetition, blocklist and grounding against the sources."""
    scrubbed = " ".join(scrub_pii(text).split())
    n_words = len(scrubbed.split())
    reasons: list[str] = []
    min_words = 1 if task == "title" else config.min_words
    if n_words == 0:
        reasons.append("empty")
    elif n_words < min_words:
        reasons.append(f"too_short: {n_words} words < {min_words}")
    n_content = content_words(scrubbed)
    min_content = 1 if task == "title" else config.min_content_words
    if n_words and n_content < min_content:
        reasons.append(f"no_content: {n_content} content words < {min_content}")
    if n_words > config.max_words:
        reasons.append(f"too_long: {n_words} words > {config.max_words}")
    repeats = repeated_ngrams(scrubbed, config.ngram)
    if repeats > config.max_repeated_ngrams:
        reasons.append(f"repetition: {repeats} repeated {config.ngram}-grams")
    malformed = MALFORMED.search(scrubbed)
    if malformed:
        reasons.append(f"malformed: {malformed.group(0)!r}")
    if n_words:
        problems = sentence_problems(scrubbed, task, config.min_sentence_words, item_texts)
        if problems:
            reasons.append("not_well_formed: " + " / ".join(problems[:3]))
    blocked = blocked_terms(scrubbed, config.blocklist)
    if blocked:
        reasons.append("blocklist: " + ", ".join(blocked))
    sources = [*item_texts, *profile_terms]
    invented = unsupported_claims(scrubbed, sources, config.content_words)
    if invented:
        reasons.append("ungrounded: " + ", ".join(invented[:10]))
    return GuardrailResult(text=scrubbed, passed=not reasons, reasons=reasons, ungrounded=invented)


def extractive_fallback(
    fields: PromptFields, max_words: int, item_terms: Sequence[str] = (), blocklist: Sequence[str] = ()
) -> str:
    """The grounded replacement for a rejected output: the item's own best sentences for the task.

    Sentences (and a title) holding a ``blocklist`` phrase are left out: the fallback quotes the item, and an
    item may carry the very phrases the blocklist keeps out of published copy.
    """
    if blocklist:
        kept = [s for s in split_sentences(quote_data(fields.body)) if not blocked_terms(s, blocklist)]
        title = "" if blocked_terms(fields.title, blocklist) else fields.title
        fields = replace(fields, title=title, body=" ".join(kept))
    return scrub_pii(reference_output(fields, max_words=max_words, item_terms=item_terms))
