"""Prompt-constrained decoding: word tries built from the prompt; numbers cannot be cut or spliced."""

from __future__ import annotations

from models.generation.constraints import TokenKinds, WordTrie, split_words
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
