"""Prompt-constrained decoding: every word the model writes is a word of its prompt or of the templates.

A small model trained in a minute copies imperfectly: it splices digits of two numbers or half of one name onto
another. Constraining decoding to the prompt's words makes those inventions impossible: each row gets a trie of
the token sequences of its prompt's words (plus the template words and punctuation); while a word is being
written only tokens that continue some prompt word are allowed, and a new word (or EOS) may start only where
the current one may end (its end, or before trailing punctuation, never inside a number). Words are split on
the tokenizer's own boundaries: a token opens a word when it carries the space marker (``Ġ`` for byte-level
BPE, ``▁`` for SentencePiece). The guardrails still check the output: order and sense are not constrained,
only the vocabulary of words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

SPACE_MARKERS = ("Ġ", "▁")


@dataclass(frozen=True)
class TokenKinds:
    """Per token id: does it open a word (space marker), is it punctuation, is it all digits."""

    starts_word: list[bool]
    punctuation: list[bool]
    digits: list[bool]

    @classmethod
    def of(cls, tokenizer: Any) -> TokenKinds:
        """Classify every token of ``tokenizer``'s vocabulary."""
        tokens = [str(t or "") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
        bare = [t.lstrip("".join(SPACE_MARKERS)) for t in tokens]
        return cls(
            starts_word=[not t or t.startswith(SPACE_MARKERS) for t in tokens],
            punctuation=[bool(b) and not any(c.isalnum() for c in b) for b in bare],
            digits=[b.isdigit() for b in bare],
        )

    def opens(self, token: int) -> bool:
        return token >= len(self.starts_word) or self.starts_word[token]


def split_words(ids: Sequence[int], kinds: TokenKinds) -> list[tuple[int, ...]]:
    """Token ids grouped into words: a word runs from a space-marked token up to the next one."""
    words: list[list[int]] = []
    for token in ids:
        if not words or kinds.opens(token):
            words.append([token])
        else:
            words[-1].append(token)
    return [tuple(w) for w in words]


def _ends(word: tuple[int, ...], kinds: TokenKinds) -> list[int]:
    # Where a word may stop: at its end, or before trailing punctuation ("Oaxaca" of "Oaxaca."), but never
    # inside a number ("42" of "42,090" or "3" of "3.5"), so no number can be cut into a smaller one.
    out = [len(word)]
    punct, digits = kinds.punctuation, kinds.digits

    def is_digit(i: int) -> bool:
        return 0 <= i < len(word) and word[i] < len(digits) and digits[word[i]]

    for i in range(1, len(word)):
        if word[i] < len(punct) and punct[word[i]] and not (is_digit(i - 1) and is_digit(i + 1)):
            out.append(i)
    return out


class WordTrie:
    """The allowed words of one prompt as token sequences, with the next tokens allowed after any prefix."""

    def __init__(self, words: Iterable[tuple[int, ...]], kinds: TokenKinds, end_ids: Iterable[int]) -> None:
        self.children: dict[tuple[int, ...], set[int]] = {}
        self.complete: set[tuple[int, ...]] = set()
        firsts: set[int] = set()
        for word in words:
            if not word:
                continue
            firsts.add(word[0])
            for end in _ends(word, kinds):
                self.complete.add(word[:end])
            for i in range(1, len(word)):
                self.children.setdefault(word[:i], set()).add(word[i])
        # A new word must open with a space-marked token (or be punctuation): no gluing "the" + "F" into "theF".
        openers = {
            t for t in firsts if kinds.opens(t) or (t < len(kinds.punctuation) and kinds.punctuation[t])
        }
        self.starts = sorted(openers | set(end_ids))

    def allowed(self, generated: Sequence[int], kinds: TokenKinds) -> tuple[bool, list[int]]:
        """(may a new word or EOS come next, tokens that continue the current word) after ``generated``."""
        i = len(generated)
        while i > 0:
            i -= 1
            if kinds.opens(generated[i]):
                break
        partial = tuple(generated[i:])
        if not partial:
            return True, []
        nxt = self.children.get(partial)
        if nxt is None:
            return True, []  # a complete word (or one the prompt never had): only a new word may follow
        # a complete word may also be the prefix of a longer one ("Oaxaca" of "Oaxaca."): allow both
        return partial in self.complete, list(nxt)


class PromptWordsProcessor:
    """A logits processor (transformers' ``LogitsProcessor`` protocol) applying one :class:`WordTrie` per row.

    ``offset`` is where generation starts in ``input_ids``: the padded prompt width for decoder-only models,
    1 (the decoder start token) for seq2seq models. Rows keep their order through generation.
    """

    def __init__(
        self, tries: list[WordTrie], kinds: TokenKinds, offset: int, eos_id: int | None = None
    ) -> None:
        self.tries = tries
        self.eos_id = eos_id
        self.kinds = kinds
        self.offset = offset
        self._start_masks: torch.Tensor | None = None

    def _starts(self, width: int, device: torch.device) -> torch.Tensor:
        # The "new word" mask of each row, built once: most steps start a word, so this is the common case.
        if self._start_masks is None or self._start_masks.shape[1] != width:
            masks = torch.zeros(len(self.tries), width, dtype=torch.bool)
            for row, trie in enumerate(self.tries):
                masks[row, [t for t in trie.starts if t < width]] = True
            self._start_masks = masks.to(device)
        return self._start_masks

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        width = scores.shape[-1]
        starts = self._starts(width, scores.device)
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        generated = input_ids[:, self.offset :].tolist()
        for row, trie in enumerate(self.tries):
            new_word, continuations = trie.allowed(generated[row], self.kinds)
            if new_word:
                mask[row] = starts[row]
            if continuations:
                mask[row, [t for t in continuations if t < width]] = True
        floor = torch.finfo(scores.dtype).min
        out = scores.masked_fill(~mask, floor)
        if self.eos_id is not None:
            # Another processor (no-repeat n-grams) may have banned every allowed token: end the text there
            # rather than let the argmax pick a masked token.
            stuck = ~(out > floor).any(dim=-1)
            if stuck.any():
                out[stuck, self.eos_id] = 0.0
        return out


def template_words(tokenizer: Any, kinds: TokenKinds, texts: Iterable[str]) -> set[tuple[int, ...]]:
    """Token words of template texts, tokenized with a leading space as they appear inside an answer."""
    words: set[tuple[int, ...]] = set()
    for text in texts:
        words.update(split_words(tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"], kinds))
        if not any(c.isalnum() for c in text):  # bare punctuation also follows a word directly
            words.update(split_words(tokenizer(text.strip(), add_special_tokens=False)["input_ids"], kinds))
    return words
