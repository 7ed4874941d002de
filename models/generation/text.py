"""Small text helpers shared by prompts, guardrails, training and evaluation (no model code)."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
# Titles and company suffixes that end with a full stop inside a sentence ("Dr. Priya Raman", "Table Co. said").
ABBREVIATIONS: frozenset[str] = frozenset(
    re.findall(
        r"\S+", "Dr Mr Mrs Ms Prof Rep Sen Gov Gen Sgt Capt Lt Col St Mt Jr Sr Co Corp Inc Ltd Bros No vs etc"
    )
)


# Initialisms written with full stops ("L.A. Confidential", "G.I. Jane", "the U.S. Senate") and a person's
# initial ("John F. Kennedy"): single letters each followed by a full stop (one capital, or two or more
# letters). A part ending in one continues into the next part; a sentence that really ends on one ("... moved
# to the U.S. It grew.") is then read as one longer sentence, which copies and checks the same words, where
# splitting would cut a title in two.
_INITIALISM = re.compile(r"^[\"'(\[]?(?:[A-Z]\.|(?:[A-Za-z]\.){2,})$")


def _ends_in_abbreviation(part: str) -> bool:
    last = part.rsplit(None, 1)[-1]
    return part.endswith(".") and (last.rstrip(".") in ABBREVIATIONS or bool(_INITIALISM.match(last)))


def _joined_abbreviations(parts: list[str]) -> list[str]:
    # "Dr." + "Priya Raman spoke." -> one sentence; a part ending in an abbreviation continues into the next
    out: list[str] = []
    for part in parts:
        if out and _ends_in_abbreviation(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# A URL ends before trailing sentence punctuation, so "see www.x.org." keeps its full stop.
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)
# A phone number: optional +country code, then digit groups separated by spaces, dots, dashes or
# parentheses, 9 to 15 digits in all. Years ("2025"), counts ("4,200") and decimals ("3.5") have fewer digits.
PHONE = re.compile(r"(?<![\w.,])\+?\(?\d[\d\s().-]{7,}\d(?![\w])")
PII_PLACEHOLDERS = {"email": "[email]", "phone": "[phone]", "url": "[url]"}


def _phone_sub(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    return PII_PLACEHOLDERS["phone"] if 9 <= digits <= 15 else match.group(0)


def scrub_pii(text: str) -> str:
    """Replace e-mail addresses, URLs and phone numbers with placeholders ([email], [url], [phone])."""
    text = EMAIL.sub(PII_PLACEHOLDERS["email"], text)
    text = URL.sub(PII_PLACEHOLDERS["url"], text)
    return PHONE.sub(_phone_sub, text)


def split_sentences(text: str | None) -> list[str]:
    """Sentences of ``text`` (split after . ! ? before a capital or digit), stripped, empty ones dropped."""
    if not text:
        return []
    parts = [s.strip() for s in _SENTENCE_END.split(" ".join(str(text).split())) if s.strip()]
    return _joined_abbreviations(parts)


def truncate_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``."""
    return " ".join(text.split()[:max_words])


def lead_sentences(body: str | None, n: int = 2, max_words: int = 40) -> str:
    """The first ``n`` sentences of ``body``, cut to ``max_words``: the reference summary."""
    out: list[str] = []
    for sentence in split_sentences(body)[:n]:
        if out and len(" ".join([*out, sentence]).split()) > max_words:
            break
        out.append(sentence)
    return truncate_words(" ".join(out), max_words)


def words_of(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, with inner apostrophes and hyphens)."""
    return [w.lower() for w in _WORD.findall(text)]


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of ``text`` in order (of :func:`words_of`; none when it has fewer than n words)."""
    words = words_of(text)
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A verb lexicon for the well-formedness check (no POS tagger ships offline: NLTK's and spaCy's models are
# downloads). Base forms; inflections (-s, -es, -ed, -ing, a final e dropped) are folded in :func:`is_verb`.
VERBS: frozenset[str] = _wordlist(
    """accept acquire add affect agree aim allow announce appear apply argue arrive ask attract back bake
    become begin believe benchmark bet book borrow bring build buy call campaign celebrate change chart
    cheer clinch close compare compete complete confirm consider continue cook cost count cover create
    cruise cut debate decide defeat deliver demand describe design detect develop diagnose discover
    dominate draw drive drop earn ease embrace end endorse enter equalize escape examine expand expect
    explain explore face fall feel ferment find finish focus follow forecast gain get give go grill grow
    head headline heal hedge help hike hire hit hold hope host improve include increase introduce invest
    join keep know land launch lead learn leave legislate lend lift like link look lose love make map
    mark matter mean measure meet miss move name need negotiate note observe offer open open-source
    outline patch pay plan plate play point predict prepare present prescribe prevent promise propose
    protect prove publish push put qualify question raise rally ratify reach read rebound recommend
    record recover reduce release remain reopen replicate report reshape resign respond rest return
    reveal review revive rise roast roll run save say score screen season see sell send sequence secure
    serve set share ship show sign signal slow slump sprint stand start stay stop study suggest support
    survey survive take talk taste tell test think track trade train travel treat trend try turn unveil
    update upgrade use veto visit vote wait walk wander want warn watch weigh welcome win work write"""
)
AUXILIARIES: frozenset[str] = _wordlist(
    """is are was were be been being am has have had do does did will would can could may might must shall
    should said says drew grew led made took won saw came gave found told felt left kept brought began ran
    wrote held stood met paid sent built spent lost fell rose sold bought thought knew shown became
    struck"""
)


def is_verb(word: str) -> bool:
    """Whether ``word`` is a verb form of the lexicon (an auxiliary, an irregular form, or an inflection)."""
    w = word.lower()
    if w in AUXILIARIES or w in VERBS:
        return True
    for suffix in ("ies", "ied"):
        if w.endswith(suffix) and w[: -len(suffix)] + "y" in VERBS:
            return True
    for suffix in ("es", "s", "ed", "d", "ing"):
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if (
                stem in VERBS
                or stem + "e" in VERBS
                or (len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in VERBS)
            ):
                return True
    return False
