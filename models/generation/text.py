"""Small text helpers shared by prompts, guardrails, training and evaluation (no model code)."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
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
    return [s.strip() for s in _SENTENCE_END.split(" ".join(str(text).split())) if s.strip()]


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
