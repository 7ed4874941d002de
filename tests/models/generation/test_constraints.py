"""Prompt-constrained decoding: word tries built from the prompt; numbers cannot be cut or spliced."""

from __future__ import annotations

from models.generation.constraints import CopyAutomaton, CopySource, State, TokenKinds, WordTrie, split_words
from models.generation.generator import Generator
from models.generation.prompts import template_words
from models.generation.text import words_of
from tests.models.generation.conftest import decoding


def test_words_and_number_integrity(generator: Generator) -> None:
    tok = generator.tokenizer
    kinds = TokenKinds.of(tok)
    ids = tok(" About 42,090 people came to Oaxaca.", add_special_tokens=False)["input_ids"]
    words = split_words(ids, kinds)
    # the decoded words are the text's words, split where a space-marked token opens one
    assert [tok.decode(list(w)) for w in words] == [
        " About",
        " 42,090",
        " people",
        " came",
        " to",
        " Oaxaca.",
    ]
    eos = tok.eos_token_id
    trie = WordTrie(words, kinds, [eos])
    number = next(w for w in words if tok.decode(list(w)) == " 42,090")
    # inside the number only its own next token may follow: neither a new word nor EOS (no "42" or "42,0")
    for cut in range(1, len(number)):
        new_word, nxt = trie.allowed(list(number[:cut]), kinds)
        assert not new_word and nxt == [number[cut]]
    new_word, nxt = trie.allowed(list(number), kinds)
    assert new_word and nxt == []
    # "Oaxaca" may end before its full stop, or go on to it
    place = words[-1]
    new_word, nxt = trie.allowed(list(place[:-1]), kinds)
    assert new_word and nxt == [place[-1]]
    assert eos in trie.starts and all(w[0] in trie.starts for w in words)


def test_constrained_output_words_all_come_from_the_prompt(tiny_model, catalog) -> None:  # noqa: ANN001
    from tests.models.generation.test_generator import _prompts

    # hot seeded sampling spreads the tiny model's choices over the whole vocabulary
    hot = {"do_sample": True, "temperature": 3.0, "top_p": 1.0, "seed": 2}
    prompts = _prompts(catalog, 6)
    templates = template_words()

    def foreign_words(gen: Generator) -> list[set[str]]:
        out = []
        for prompt, generated in zip(prompts, gen.generate(prompts), strict=True):
            words = words_of(generated.text)
            if not generated.finished:
                words = words[:-1]  # the token budget may cut the last word (the service trims such a tail)
            out.append(set(words) - set(words_of(prompt)) - templates)
        return out

    constrained = Generator.load(tiny_model.path, decoding(**hot), device="cpu")
    assert not any(foreign_words(constrained))
    # the same sampling without the constraint does write words its prompt lacks (so the check can fail)
    free = Generator.load(tiny_model.path, decoding(constrain_to_prompt=False, **hot), device="cpu")
    assert any(foreign_words(free))


def _words(tok, text: str) -> list[tuple[int, ...]]:  # noqa: ANN001 - a tokenizer
    kinds = TokenKinds.of(tok)
    return split_words(tok(" " + text, add_special_tokens=False)["input_ids"], kinds)


FACTS = (
    "About 4,200 people followed the final in Oaxaca.",
    "Lena Fischer wins the final after a bold 2024 season.",
)


def _walk(automaton: CopyAutomaton, words: list[tuple[int, ...]]) -> State:
    state = automaton.start
    for word in words:
        state = automaton.step(state, word)
    return state


def test_copy_automaton_allows_an_opening_then_whole_sentences_only(generator: Generator) -> None:
    tok = generator.tokenizer
    kinds = TokenKinds.of(tok)
    source = CopySource(("Into tennis?",), FACTS, may_start_with_sentence=False, max_sentences=1)
    automaton = CopyAutomaton(source, tok, kinds, context=2)
    opening, first, second = _words(tok, "Into tennis?"), _words(tok, FACTS[0]), _words(tok, FACTS[1])
    # the start allows only the opening: no fact sentence without it, and no EOS
    allowed, eos = automaton.allowed(automaton.start)
    assert allowed == {opening[0]} and not eos
    # after the opening: the first word of either sentence, still no EOS
    allowed, eos = automaton.allowed(_walk(automaton, opening))
    assert allowed == {first[0], second[0]} and not eos
    # inside a sentence the next word is the sources' next word: "about" is followed by its own number only
    allowed, eos = automaton.allowed(_walk(automaton, opening + first[:1]))
    assert allowed == {first[1]} and not eos
    # a word the sources never put there ends the walk (empty state: nothing allowed, EOS forced)
    assert _walk(automaton, [*opening, first[0], second[2]]) == frozenset()
    # EOS only at the end of a sentence; with max_sentences=1 it is then the only choice
    allowed, eos = automaton.allowed(automaton.finish(_walk(automaton, opening + first)))
    assert eos and allowed == set()
    allowed, eos = automaton.allowed(_walk(automaton, opening + first[:-1]))
    assert not eos


def test_copy_automaton_splices_only_at_shared_context(generator: Generator) -> None:
    tok = generator.tokenizer
    kinds = TokenKinds.of(tok)
    first, second = _words(tok, FACTS[0]), _words(tok, FACTS[1])
    at_final = first.index(_words(tok, "the final")[0]) + 2  # after "followed the final"
    # with one word of context "the" and "final" are shared, so a splice may follow "final" with "after"
    loose = CopyAutomaton(CopySource((), FACTS, True, 2), tok, kinds, context=1)
    allowed, _ = loose.allowed(_walk(loose, first[:at_final]))
    assert second[second.index(_words(tok, "the final")[1]) + 1] in allowed
    # with two words of context "the final" is shared too, so the splice is still allowed there ...
    tight = CopyAutomaton(CopySource((), FACTS, True, 2), tok, kinds, context=2)
    allowed, _ = tight.allowed(_walk(tight, first[:at_final]))
    assert len(allowed) == 2
    # ... but a number keeps its neighbours: after "about" only 4,200 (never the 2024 of the other sentence)
    allowed, _ = tight.allowed(_walk(tight, first[:1]))
    assert allowed == {first[1]}


def test_copy_decoding_ends_every_output_on_a_copied_sentence(tiny_model, catalog) -> None:  # noqa: ANN001
    from models.generation.guardrails import misplaced_numbers, sentence_problems, ungrounded_terms
    from models.generation.service import copy_source, fitted_prompt, items_by_id, request_fields
    from tests.models.generation.test_service import _requests

    hot = {"do_sample": True, "temperature": 3.0, "top_p": 1.0, "seed": 2, "max_new_tokens": 96}
    requests = _requests(catalog, ["i0000", "i0001", "i0002"])
    fields = [request_fields(r)[0] for r in requests]
    copying = Generator.load(tiny_model.path, decoding(copy_context=2, **hot), device="cpu")
    fitted = [fitted_prompt(f, copying, 40) for f in fields]
    prompts = [p for p, _ in fitted]
    sources = [copy_source(f, n) for f, (_, n) in zip(fields, fitted, strict=True)]
    items = items_by_id(catalog)

    def problems(gen: Generator, with_sources: bool) -> list[list[str]]:
        outs = gen.generate(prompts, sources=sources if with_sources else None)
        # a text the token budget cut is trimmed to its last sentence by the service: judge finished ones
        assert sum(o.finished for o in outs) >= len(outs) // 2
        return [
            sentence_problems(o.text, f.task)
            + ungrounded_terms(o.text, items[r.item.item_id].sources)
            + misplaced_numbers(o.text, items[r.item.item_id].sources)
            for o, f, r in zip(outs, fields, requests, strict=True)
            if o.finished
        ]

    # a 30-step model sampled hot still writes only complete sentences under copy decoding, with no invented
    # word and every number beside its own neighbours (a splice may still pair facts of two sentences: the
    # guardrails' mixed-claims check and the service's second attempt handle that, see test_service.py)
    assert not any(problems(copying, True))
    # the same sampling with only the prompt's vocabulary allowed writes broken or unfaithful text
    words_only = Generator.load(tiny_model.path, decoding(copy_context=0, **hot), device="cpu")
    assert any(problems(words_only, False))


def test_wordpiece_copy_is_written_as_the_sources_write_it() -> None:
    from transformers import AutoTokenizer

    from models.settings import packaged_encoder_path

    # the packaged MiniLM's uncased WordPiece vocabulary (the BERT2BERT candidate's): it decodes lower-case
    # text with "4, 200" for 4,200; copied words are rendered from the sources instead
    tok = AutoTokenizer.from_pretrained(packaged_encoder_path())
    kinds = TokenKinds.of(tok)
    assert kinds.wordpiece
    automaton = CopyAutomaton(CopySource(("Into tennis?",), FACTS, False, 1), tok, kinds, context=2)
    opening = automaton._words_with_surface(" Into tennis?", tok, kinds)
    sentence = automaton._words_with_surface(" " + FACTS[1], tok, kinds)
    state = _walk(automaton, opening + sentence)
    assert automaton.allowed(automaton.finish(state))[1]  # a complete output: EOS allowed
    assert automaton.render(opening + sentence) == "Into tennis? " + FACTS[1]
    ids = [t for w in opening + sentence for t in w]
    assert tok.decode(ids) != "Into tennis? " + FACTS[1]  # what plain decoding gives instead
