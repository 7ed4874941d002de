"""generate_content: the cache prevents regeneration, re-runs fill only gaps, every row is publishable."""

from __future__ import annotations

import dataclasses

import duckdb
import pandas as pd
import pytest

from models.generation import cache
from models.generation.generator import OUTPUT_SETTINGS, DecodingConfig, Generator
from models.generation.guardrails import GuardrailConfig, check_output
from models.generation.samples import sample_profile
from models.generation.service import (
    GenerationRequest,
    ItemText,
    build_requests,
    generate_content,
    items_by_id,
    request_fields,
)
from models.generation.train import TrainResult
from models.settings import GenerationSettings
from tests.models.generation.conftest import TINY


def _requests(catalog: pd.DataFrame, item_ids: list[str]) -> list[GenerationRequest]:
    profiles = {
        "u1": sample_profile("u1", ["sports", "travel"], "casual"),
        "u2": sample_profile("u2", ["music"], "formal"),
    }
    pairs = [(u, i) for u in profiles for i in item_ids]
    return build_requests(pairs, items_by_id(catalog), profiles, ["blurb", "summary"])


def test_cache_prevents_a_second_generation(generator: Generator, catalog: pd.DataFrame) -> None:
    con = duckdb.connect()
    requests = _requests(catalog, ["i0000", "i0001", "i0002"])
    first = generate_content(requests, generator, con, TINY)
    calls, tokens = generator.n_model_calls, generator.n_generated_tokens
    # 2 users x 3 items x (blurb per segment + one summary per item): 6 blurbs + 3 summaries generated,
    # the second user's summaries are the first user's (summaries do not depend on the profile)
    assert sum(not r.cached for r in first) == 9 and calls == 2  # 9 prompts in batches of 8
    assert cache.cache_size(con, generator.version_for(TINY)) == 9
    second = generate_content(requests, generator, con, TINY)
    assert (generator.n_model_calls, generator.n_generated_tokens) == (calls, tokens)
    assert all(r.cached for r in second)
    assert [r.text for r in second] == [r.text for r in first]


def test_rerun_generates_only_what_is_missing(generator: Generator, catalog: pd.DataFrame) -> None:
    con = duckdb.connect()
    generate_content(_requests(catalog, ["i0000"]), generator, con, TINY)
    calls = generator.n_model_calls
    rows = generate_content(_requests(catalog, ["i0000", "i0003"]), generator, con, TINY)
    fresh = [r for r in rows if not r.cached]
    # only item i0003 is new: one summary and one blurb per segment (two users, two segments)
    assert {r.item_id for r in fresh} == {"i0003"} and len(fresh) == 3
    assert generator.n_model_calls == calls + 1


def test_same_prompt_shares_edited_item_does_not(generator: Generator, catalog: pd.DataFrame) -> None:
    con = duckdb.connect()
    item = items_by_id(catalog)["i0005"]
    a = sample_profile("a", ["sports", "travel"], "casual")
    b = dataclasses.replace(a, user_id="b", n_events=99)  # another user whose prompt shows the same profile
    assert (
        request_fields(GenerationRequest("a", item, a))[1]
        == request_fields(GenerationRequest("b", item, b))[1]
    )
    rows = generate_content(
        [GenerationRequest("a", item, a), GenerationRequest("b", item, b)], generator, con, TINY
    )
    assert [r.cached for r in rows] == [False, True] and rows[0].text == rows[1].text
    edited = dataclasses.replace(item, body=item.body + " Tickets sold out.", content_hash="edited")
    (row,) = generate_content([GenerationRequest("a", edited, a)], generator, con, TINY)
    assert not row.cached


def test_every_row_is_grounded_or_has_a_reason(generator: Generator, catalog: pd.DataFrame) -> None:
    requests = _requests(catalog, ["i0006", "i0007"])
    rows = generate_content(requests, generator, None, TINY)
    config = GuardrailConfig.from_settings(TINY)
    for request, row in zip(requests, rows, strict=True):
        assert (row.user_id, row.item_id, row.task) == (request.user_id, request.item.item_id, request.task)
        assert row.passed_guardrails == (row.fallback_reason is None)
        # what is published passes the checks against the item alone, whether the model or the fallback wrote it
        check = check_output(row.text, row.task, request.item.sources, (), config)
        assert check.passed, (row.text, check.reasons)
        assert row.model_version == generator.version_for(TINY) and row.n_tokens >= 1


COPYING = TINY.model_copy(update={"max_new_tokens": 64})


def _copying(tiny_dir, **overrides: object) -> Generator:  # noqa: ANN001 - a Path
    from tests.models.generation.conftest import decoding

    fields: dict[str, object] = {"copy_context": 2, "max_new_tokens": 64, **overrides}
    return Generator.load(tiny_dir, decoding(**fields), device="cpu")


def test_copy_decoding_turns_fallbacks_into_model_rows(tiny_dir, catalog: pd.DataFrame) -> None:  # noqa: ANN001
    from models.generation.evaluation import fallback_rate

    requests = _requests(catalog, ["i0003", "i0004", "i0008", "i0009"])
    copying = _copying(tiny_dir)
    rows = generate_content(requests, copying, None, COPYING)
    words_only = _copying(tiny_dir, copy_context=0)
    baseline = generate_content(requests, words_only, None, COPYING)
    # a 30-step model restricted to its prompt's words falls back often; copying sentences it rarely does
    assert fallback_rate(rows) <= 0.25 < fallback_rate(baseline)
    # without the no-splice second attempt at least as many rows fall back, and every retry is counted
    single = _copying(tiny_dir)
    once = generate_content(requests, single, None, COPYING.model_copy(update={"second_attempt": False}))
    assert fallback_rate(once) >= fallback_rate(rows) and single.n_second_attempts == 0
    assert copying.n_second_attempts == sum(not r.passed_guardrails for r in once if not r.cached)


def test_readers_get_the_sentence_closest_to_them_and_their_fit_named(
    tiny_dir, catalog: pd.DataFrame
) -> None:  # noqa: ANN001
    from models.generation.evaluation import mentions_any
    from models.generation.relevance import by_relevance, overlap_scorer
    from models.generation.text import split_sentences

    item = items_by_id(catalog)["i0000"]
    sentences = split_sentences(item.body)
    # two readers of the same item whose interests match different sentences of it
    a = sample_profile("a", [item.category], "casual")
    a = dataclasses.replace(a, top_tags=[(item.tags[0], 1.0)])  # in the second sentence ("new to <tag0>")
    b = dataclasses.replace(a, user_id="b", top_tags=[(item.tags[1], 1.0)])  # in the last ("Fans of <tag1>")
    first = {}
    for reader in (a, b):
        fields, _ = request_fields(GenerationRequest(reader.user_id, item, reader))
        first[reader.user_id] = split_sentences(by_relevance(fields, overlap_scorer).body)[0]
    assert first["a"] == sentences[1] and first["b"] == sentences[-1]
    # the copy names why the item fits the reader (the category they share) in every model-written blurb
    rows = generate_content(
        [GenerationRequest(r.user_id, item, r) for r in (a, b)], _copying(tiny_dir), None, COPYING
    )
    model = [r for r in rows if r.passed_guardrails]
    assert model and all(mentions_any(r.text, [item.category]) for r in model)


def test_a_blurb_opening_names_the_readers_own_interests_that_the_item_carries() -> None:
    from models.generation.evaluation import style_of
    from models.generation.guardrails import strip_opening
    from models.generation.service import copy_source
    from models.interests import InterestProfile

    item = ItemText(
        "i000",
        "Chef Hiro Tanaka serves a crispy harvest",
        "Rustic Oven Bakery plans to bring its barbecue program to Oaxaca in 2031. The brunch grew by 58.6 "
        "percent over the past 9 months.",
        "food",
        ("cooking", "street-food"),
        "h0",
    )
    # two food readers of the same item: one also follows street-food and brunch, the other cooking and Oaxaca
    a = InterestProfile("a", [("food", 0.7), ("travel", 0.3)], [("street-food", 0.6), ("vegan", 0.4)],
                        [("brunch", 0.5), ("opera", 0.5)], "casual", 20)  # fmt: skip
    b = InterestProfile("b", [("food", 1.0)], [("cooking", 1.0)], [("oaxaca", 0.6), ("barbecue", 0.4)],
                        "formal", 20)  # fmt: skip
    fa, _ = request_fields(GenerationRequest("a", item, a))
    fb, _ = request_fields(GenerationRequest("b", item, b))
    # the fit first, then the reader's other shown interests the item carries (its tags, words of its text as it
    # writes them), at most three; never one it does not carry ("travel", "vegan", "opera")
    assert fa.shared == ("food", "street-food", "brunch")
    assert fb.shared == ("food", "cooking", "Oaxaca")
    heads = {r: copy_source(f, 40, variant=0).openings for r, f in (("a", fa), ("b", fb))}
    assert heads == {
        "a": ("Into food, street-food and brunch?",),
        "b": ("Of interest to readers of food, cooking and Oaxaca:",),
    }
    # the guardrails read such an opening as an opening: the sentence after it is checked, the style read back
    for (reader, (head,)), fields in zip(heads.items(), (fa, fb), strict=True):
        text = f"{head} The brunch grew by 58.6 percent over the past 9 months."
        assert strip_opening(text)[0] == head and style_of(text) == fields.style, reader
        assert check_output(text, "blurb", item.sources, (), GuardrailConfig()).passed, text
    # a reader without a fit gets no interest named; summaries name none
    c = InterestProfile("c", [("music", 1.0)], [], [], "casual", 5)
    assert request_fields(GenerationRequest("c", item, c))[0].shared == ()
    assert request_fields(GenerationRequest("a", item, a, "summary"))[0].shared == ()


def test_a_word_of_a_longer_name_is_not_named_as_the_readers_interest() -> None:
    from models.interests import InterestProfile

    item = ItemText(
        "i001",
        "Inside the municipal treaty reshaping Canberra",
        "Civic Reform Party legislates a municipal treaty in Canberra this Monday. Figures from Horizon Air "
        "covering 2,200 cases point to steady gains in the senate.",
        "politics",
        ("elections",),
        "h1",
    )
    # keywords read from the item's names ("civic", "party", "air") and one it writes on its own ("canberra")
    reader = InterestProfile("r", [("food", 1.0)], [], [("civic", 0.3), ("party", 0.3), ("air", 0.2),
                                                        ("canberra", 0.2)], "casual", 12)  # fmt: skip
    fields, _ = request_fields(GenerationRequest("r", item, reader))
    assert fields.shared == ("Canberra",)
    # when a name's word would be the only reason, the blurb names no reason at all
    only_names = InterestProfile("s", [("food", 1.0)], [], [("civic", 0.5), ("air", 0.5)], "casual", 12)
    fields, _ = request_fields(GenerationRequest("s", item, only_names))
    assert fields.fit is None and fields.shared == ()


# What does not change a published text once the model is given: training knobs (part of the model version,
# ``train.lm_version``), which requests are made, batching, and the check's thresholds.
NOT_OUTPUT_SETTINGS = {
    "model_name_or_path", "fine_tune", "use_lora", "lora_r", "tasks", "batch_size", "top_n_items", "max_users",
    "train_steps", "train_batch_size", "learning_rate", "fine_tune_learning_rate", "vocab_size", "n_layer",
    "n_embd", "n_head", "n_positions", "heldout_share", "example_rounds", "train_on_corpus",
    "max_fallback_rate", "min_faithfulness", "min_distinct_2", "lift_encoder", "heldout_probe_users",
    "heldout_probe_items",
}  # fmt: skip
DECODING_SETTINGS = {
    "max_new_tokens", "do_sample", "temperature", "top_p", "constrain_to_prompt", "no_repeat_ngram_size",
    "copy_context",
}  # fmt: skip


def test_every_generation_setting_is_in_the_cache_key_or_named_as_not_changing_the_text() -> None:
    fields = set(GenerationSettings.model_fields)
    unclassified = fields - NOT_OUTPUT_SETTINGS - DECODING_SETTINGS - set(OUTPUT_SETTINGS)
    assert not unclassified, f"say whether these change the published text: {sorted(unclassified)}"


@pytest.mark.parametrize(
    "change",
    [
        {"second_attempt": False},
        {"fact_order": "original"},
        {"reader_diversity": 0.0},
        {"batch_diversity": 0.0},
        {"min_sentence_words": 6},
        {"blocklist": ("spam",)},
        {"copy_context": 3},
        {"max_new_tokens": 40},
    ],
)
def test_changing_an_output_setting_invalidates_the_cache(
    generator: Generator, tiny_model: TrainResult, catalog: pd.DataFrame, change: dict
) -> None:
    con = duckdb.connect()
    requests = _requests(catalog, ["i0003"])
    generate_content(requests, generator, con, TINY)
    other = TINY.model_copy(update=change)
    decoding_changed = set(change) & DECODING_SETTINGS
    if decoding_changed:  # decoding settings reach the key through the generator built from them
        from models.settings import Settings

        rebuilt = Generator.load(
            tiny_model.path, DecodingConfig.from_settings(Settings(generation=other)), device="cpu"
        )
        assert rebuilt.version_for(other) != generator.version_for(TINY)
        return
    assert generator.version_for(other) != generator.version_for(TINY)
    calls = generator.n_model_calls
    again = generate_content(requests, generator, con, other)
    assert generator.n_model_calls > calls and not any(r.cached for r in again[:1])
    # and the old settings still find their own texts
    calls = generator.n_model_calls
    assert all(r.cached for r in generate_content(requests, generator, con, TINY))
    assert generator.n_model_calls == calls
