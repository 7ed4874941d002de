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
    wordpiece: bool = False  # BERT-style vocabulary: "##" marks a continuation, punctuation joins its word

    @classmethod
    def of(cls, tokenizer: Any) -> TokenKinds:
        """Classify every token of ``tokenizer``'s vocabulary (byte-level BPE, SentencePiece or WordPiece)."""
        tokens = [str(t or "") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
        wordpiece = not any(t.startswith(SPACE_MARKERS) for t in tokens) and any(
            t.startswith("##") for t in tokens
        )
        if wordpiece:
            bare = [t.removeprefix("##") for t in tokens]
        else:
            bare = [t.lstrip("".join(SPACE_MARKERS)) for t in tokens]
        punctuation = [bool(b) and not any(c.isalnum() for c in b) for b in bare]
        if wordpiece:
            starts = [not t.startswith("##") and not p for t, p in zip(tokens, punctuation, strict=True)]
        else:
            starts = [not t or t.startswith(SPACE_MARKERS) for t in tokens]
        return cls(
            starts_word=starts,
            punctuation=punctuation,
            digits=[b.isdigit() for b in bare],
            wordpiece=wordpiece,
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


# Markers of a context at the start of an opening or of a sentence (token ids are never negative).
_OPENING_START: tuple[int, ...] = (-1,)
_SENTENCE_START: tuple[int, ...] = (-2,)


@dataclass(frozen=True)
class CopySource:
    """What one output may be made of: template openings, then the item's sentences, copied in order.

    ``openings`` are the phrasings' heads ("Into food?", "Great news!"); ``sentences`` the facts the prompt
    shows. An output is an opening (unless ``may_start_with_sentence``) followed by one to ``max_sentences``
    sentences; within a sentence each word must follow the ``context`` words before it somewhere in the
    sources, so the model may splice two sentences only where they share ``context`` words.
    """

    openings: tuple[str, ...] = ()
    sentences: tuple[str, ...] = ()
    may_start_with_sentence: bool = True
    max_sentences: int = 2


State = frozenset[tuple[tuple[tuple[int, ...], ...], int]]  # (context words, sentences completed) pairs


class CopyAutomaton:
    """The word transitions one :class:`CopySource` allows, keyed by the last ``context`` words written.

    A state is a set of (context, sentences completed) pairs, because a written word may continue more than
    one place of the sources. EOS is allowed only right after the end of a source sentence, so every output
    ends in a complete sentence; after ``max_sentences`` sentences EOS is the only choice (sentence-boundary
    stopping). A (``context`` + 1)-word sequence is never written twice (no loops).
    """

    def __init__(self, source: CopySource, tokenizer: Any, kinds: TokenKinds, context: int = 2) -> None:
        self.context = max(1, context)
        self.max_sentences = max(1, source.max_sentences)
        self.next: dict[tuple[tuple[int, ...], ...], set[tuple[int, ...]]] = {}
        self.opening_ends: set[tuple[tuple[int, ...], ...]] = set()
        self.sentence_ends: set[tuple[tuple[int, ...], ...]] = set()
        # how each word is written in the sources (an uncased WordPiece model decodes "lena fischer , 4 , 200")
        self.surface: dict[tuple[int, ...], tuple[str, bool]] = {}
        for text, marker, ends in (
            *((t, _OPENING_START, self.opening_ends) for t in source.openings),
            *((t, _SENTENCE_START, self.sentence_ends) for t in source.sentences),
        ):
            words = self._words_with_surface(" " + text.strip(), tokenizer, kinds)
            if not words:
                continue
            for p in range(len(words) + 1):
                ctx = self._context_at(words, p, marker)
                if p < len(words):
                    self.next.setdefault(ctx, set()).add(words[p])
                else:
                    ends.add(ctx)
        self.sentence_starts = self.next.get((_SENTENCE_START,), set())
        start: set[tuple[tuple[tuple[int, ...], ...], int]] = set()
        if source.openings:
            start.add(((_OPENING_START,), 0))
        if source.may_start_with_sentence or not source.openings:
            start.add(((_SENTENCE_START,), 0))
        self.start: State = frozenset(start)
        self._allowed: dict[State, tuple[set[tuple[int, ...]], bool]] = {}

    def _words_with_surface(self, text: str, tokenizer: Any, kinds: TokenKinds) -> list[tuple[int, ...]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        groups: list[list[int]] = []
        for i, token in enumerate(ids):
            if not groups or kinds.opens(token):
                groups.append([i])
            else:
                groups[-1].append(i)
        words = []
        for n, group in enumerate(groups):
            word = tuple(ids[i] for i in group)
            start, end = offsets[group[0]][0], offsets[group[-1]][1]
            written = (text[start:end], start > 0 and text[start - 1].isspace())
            # a word's form inside a sentence wins over its capitalized form at a sentence start
            if word not in self.surface or (n > 0 and self.surface[word][0] != written[0]):
                self.surface[word] = written
            words.append(word)
        return words

    def render(self, words: Sequence[tuple[int, ...]]) -> str | None:
        """The text of ``words`` as the sources write them (None when a word is not from the sources)."""
        out = ""
        for word in words:
            if word not in self.surface:
                return None
            text, space = self.surface[word]
            if not out or out.rstrip()[-1:] in ".!?:":
                text = text[:1].upper() + text[1:]
            out += (" " if space and out else "") + text
        return out

    def _context_at(
        self, words: Sequence[tuple[int, ...]], p: int, marker: tuple[int, ...]
    ) -> tuple[tuple[int, ...], ...]:
        if p < self.context:
            return (marker, *words[:p])
        return tuple(words[p - self.context : p])

    def _shift(self, ctx: tuple[tuple[int, ...], ...], word: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        out = (*ctx, word)
        return out[-self.context :] if len(out) > self.context else out

    def allowed(self, state: State) -> tuple[set[tuple[int, ...]], bool]:
        """(the words that may come next, whether EOS may) in ``state``."""
        if state in self._allowed:
            return self._allowed[state]
        words: set[tuple[int, ...]] = set()
        eos = False
        for ctx, done in state:
            if done >= self.max_sentences:
                eos = True
                continue
            words |= self.next.get(ctx, set())
            if ctx in self.opening_ends:
                words |= self.sentence_starts
            if ctx in self.sentence_ends:
                eos = True
                if done + 1 < self.max_sentences:
                    words |= self.sentence_starts
        self._allowed[state] = (words, eos)
        return words, eos

    def step(self, state: State, word: tuple[int, ...]) -> State:
        """The state after writing ``word`` in ``state`` (empty when the sources do not allow it)."""
        out: set[tuple[tuple[tuple[int, ...], ...], int]] = set()
        for ctx, done in state:
            if done >= self.max_sentences:
                continue
            if word in self.next.get(ctx, ()):
                out.add((self._shift(ctx, word), done))
            after_opening = ctx in self.opening_ends
            after_sentence = ctx in self.sentence_ends and done + 1 < self.max_sentences
            if (after_opening or after_sentence) and word in self.sentence_starts:
                out.add((self._shift((_SENTENCE_START,), word), done + int(after_sentence)))
        return frozenset(out)

    def finish(self, state: State) -> State:
        """``state`` with sentences that just ended counted (so a full output allows only EOS)."""
        return frozenset(
            (c, d + 1) if c in self.sentence_ends and d + 1 >= self.max_sentences else (c, d)
            for c, d in state
        )


class CopyProcessor:
    """A logits processor (transformers' ``LogitsProcessor`` protocol) running one :class:`CopyAutomaton` per row.

    At each step the row's generated tokens are split into complete words and the word in progress; the
    allowed tokens are those that continue the word in progress to an allowed word, and, when it already is
    one, the first tokens of the words allowed after it (and EOS where a sentence ends). ``offset`` is where
    generation starts in ``input_ids`` (see :class:`PromptWordsProcessor`).
    """

    def __init__(
        self, automata: list[CopyAutomaton], kinds: TokenKinds, offset: int, eos_id: int, pad_id: int | None
    ) -> None:
        self.automata = automata
        self.kinds = kinds
        self.offset = offset
        self.eos_id = eos_id
        self.pad_id = pad_id
        self._states: list[dict[tuple[tuple[int, ...], ...], State]] = [{} for _ in automata]
        self._tries: dict[int, dict[frozenset[tuple[int, ...]], WordTrie]] = {}

    def _state(self, row: int, words: list[tuple[int, ...]]) -> State:
        memo = self._states[row]
        key = tuple(words)
        if key in memo:
            return memo[key]
        automaton = self.automata[row]
        state = automaton.start if not words else automaton.step(self._state(row, words[:-1]), words[-1])
        memo[key] = state
        return state

    def _allowed_words(self, row: int, words: list[tuple[int, ...]]) -> tuple[set[tuple[int, ...]], bool]:
        automaton = self.automata[row]
        state = self._state(row, words)
        allowed, eos = automaton.allowed(automaton.finish(state))
        n = automaton.context
        if allowed and len(words) >= n:
            # no (context + 1)-word sequence twice: a copied cycle cannot loop
            seen = {tuple(words[i : i + n + 1]) for i in range(len(words) - n)}
            tail = tuple(words[-n:])
            fresh = {w for w in allowed if (*tail, w) not in seen}
            # a repeat is better than a sentence broken off: keep the choices when every one repeats
            allowed = fresh or (allowed if not eos else fresh)
        return allowed, eos

    def _row_tokens(self, row: int, generated: list[int]) -> tuple[set[int], bool]:
        words = split_words(generated, self.kinds) if generated else []
        done, partial = (words[:-1], words[-1]) if words else ([], ())
        allowed, eos = self._allowed_words(row, done)
        if not partial:
            return {w[0] for w in allowed}, eos
        tokens: set[int] = set()
        prefix = len(partial)
        complete = False
        for word in allowed:
            if word[:prefix] == partial:
                if len(word) > prefix:
                    tokens.add(word[prefix])
                else:
                    complete = True
        eos = False
        if complete:
            after, eos = self._allowed_words(row, [*done, partial])
            tokens |= {w[0] for w in after}
        return tokens, eos

    def render(self, row: int, ids: Sequence[int]) -> str | None:
        """Row ``row``'s generated ``ids`` (up to EOS) written as its sources write them."""
        ids = [t for t in ids if t not in (self.eos_id, self.pad_id)]
        return self.automata[row].render(split_words(ids, self.kinds))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        width = scores.shape[-1]
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        for row, generated in enumerate(input_ids[:, self.offset :].tolist()):
            if self.eos_id in generated:  # finished: transformers pads the rest
                mask[row, self.pad_id if self.pad_id is not None else self.eos_id] = True
                continue
            tokens, eos = self._row_tokens(row, generated)
            if eos or not tokens:
                tokens.add(self.eos_id)  # nothing allowed: end here (the guardrails judge the text)
            mask[row, [t for t in tokens if t < width]] = True
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
