"""Generation figures against hand-computed values; faithfulness and the check's thresholds can fail."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.generation.evaluation import (
    SUMMARY_KEYS,
    check_failures,
    distinct_2,
    distinct_2_at,
    distinct_n,
    evaluate,
    faithfulness,
    fallback_rate,
    fallback_reasons,
    lcs_length,
    opening_agreement,
    personalization_lift,
    quality_figures,
    rouge_l,
    style_of,
    write_summary,
)
from models.generation.prompts import INTEREST_PHRASINGS, STYLE_PHRASINGS
from models.generation.samples import sample_profile
from models.generation.service import GeneratedContent, ItemText
from models.settings import GenerationSettings

ITEMS = {
    "i1": ItemText(
        "i1",
        "Lena Fischer wins the Lisbon marathon",
        "Lena Fischer wins the Lisbon marathon after a bold 2025 season. About 4,200 runners followed the race.",
        "sports",
    ),
    "i2": ItemText(
        "i2",
        "Aiko Tanaka opens a Kyoto bakery",
        "Aiko Tanaka opens a Kyoto bakery after a quiet 2021 season. About 650 people tasted the bread.",
        "food",
    ),
}


def _row(
    user: str,
    item: str,
    task: str,
    text: str,
    passed: bool = True,
    reason: str | None = None,
    cached: bool = False,
    latency: float = 10.0,
    style: str = "concise",
) -> GeneratedContent:
    return GeneratedContent(user, item, task, style, text, passed, reason, "v", latency, 5, cached)


def test_lcs_and_rouge_l() -> None:
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3  # a c d
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    assert rouge_l("the cat", "The cat sat down.") == pytest.approx(2 / 3)
    assert rouge_l("", "anything") == 0.0


def test_distinct_2() -> None:
    # bigrams: (a b) (b c) | (a b) (b d) -> 3 unique of 4
    assert distinct_2(["a b c", "A b d"]) == pytest.approx(0.75)
    assert distinct_2(["one"]) == 0.0


def test_fallbacks_and_cache_hits_are_counted_apart_from_quality() -> None:
    rows = [
        _row("u1", "i1", "summary", "About 4,200 runners followed the race."),
        _row("u1", "i2", "summary", "Aiko Tanaka opens a Kyoto bakery.", False, "ungrounded: Zorblax"),
        _row("u2", "i1", "summary", "Lena Fischer wins.", False, "repetition: 3; not_well_formed: fragment"),
        _row("u2", "i2", "summary", "Aiko Tanaka opens a Kyoto bakery.", cached=True),
    ]
    # fresh rows only: 2 of 3 fell back; the cached row is neither a model nor a fallback row
    assert fallback_rate(rows) == pytest.approx(2 / 3)
    assert fallback_reasons(rows) == {"ungrounded": 1, "repetition": 1, "not_well_formed": 1}
    figures = evaluate(rows, ITEMS, {}, {"tokens_per_s": 50.0})
    assert (figures["n_model_rows"], figures["n_fallback_rows"], figures["n_cached_rows"]) == (1, 2, 1)
    # quality over the one model row: its text is the only one distinct-2 sees (5 bigrams, all distinct)
    assert figures["distinct_2"] == 1.0 and figures["faithfulness"] == 1.0
    assert figures["raw_faithfulness"] == pytest.approx(2 / 3)  # one fresh output was ungrounded
    assert figures["well_formed_share"] == pytest.approx(2 / 3)
    assert figures["p95_latency_ms"] == 10.0


def test_swapping_two_items_facts_drops_faithfulness() -> None:
    rows = [
        _row("u1", "i1", "summary", "About 4,200 runners followed the race."),
        _row("u1", "i2", "summary", "About 650 people tasted the bread."),
    ]
    assert faithfulness(rows, ITEMS) == 1.0
    swapped = {"i1": ITEMS["i2"], "i2": ITEMS["i1"]}
    assert faithfulness(rows, swapped) == 0.0


def test_heldout_figures_cover_only_heldout_items() -> None:
    rows = [
        _row("u1", "i1", "summary", "About 4,200 runners followed the race."),
        _row("u1", "i2", "summary", "Aiko Tanaka opens a Kyoto bakery.", False, "ungrounded: x"),
    ]
    figures = evaluate(rows, ITEMS, {}, heldout_items={"i2"})
    assert figures["heldout_fallback_rate"] == 1.0 and figures["seen_fallback_rate"] == 0.0
    assert figures["heldout_n_model_rows"] == 0 and math.isnan(figures["heldout_faithfulness"])


def test_personalization_lift_rewards_copy_closer_to_its_own_user() -> None:
    vectors = {
        "sports": [1.0, 0.0],
        "food": [0.0, 1.0],
        "A sports text.": [0.9, 0.1],
        "A food text.": [0.2, 0.8],
    }

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([vectors[t] for t in texts])

    profiles = {"u1": sample_profile("u1", ["sports"]), "u2": sample_profile("u2", ["food"])}
    profiles = {u: type(p)(u, p.top_categories) for u, p in profiles.items()}  # categories only
    rows = [_row("u1", "i1", "blurb", "A sports text."), _row("u2", "i1", "blurb", "A food text.")]
    lift, same_item = personalization_lift(rows, profiles, embed)
    # u1: 0.9 - 0.1 = 0.8; u2: 0.8 - 0.2 = 0.6; both compared with a user who got the same item
    assert lift == pytest.approx(0.7) and same_item == 2
    swapped = [_row("u1", "i1", "blurb", "A food text."), _row("u2", "i1", "blurb", "A sports text.")]
    assert personalization_lift(swapped, profiles, embed)[0] == pytest.approx(-0.7)


def test_opening_agreement_reads_whether_the_sentence_is_about_the_category_its_opening_names() -> None:
    def embed(texts: list[str]) -> np.ndarray:
        # a two-topic encoder: sports words on one axis, food words on the other
        def vec(t: str) -> list[float]:
            low = t.lower()
            v = [
                float(sum(w in low for w in ("sports", "race", "runners"))),
                float(sum(w in low for w in ("food", "bread", "bakery"))),
            ]
            return [x / (np.hypot(*v) or 1.0) for x in v]

        return np.array([vec(t) for t in texts])

    rows = [
        _row("u1", "i1", "blurb", "For fans of sports: About 4,200 runners followed the race."),  # agrees
        _row("u2", "i1", "blurb", "For fans of food: About 4,200 runners followed the race."),  # names food
        _row("u3", "i2", "blurb", "Great news! About 650 people tasted the bread."),  # names nothing
        _row("u1", "i2", "summary", "For fans of food: About 650 people tasted the bread."),  # not a blurb
    ]
    share, n = opening_agreement(rows, ITEMS, embed)
    assert (share, n) == (0.5, 2)
    assert opening_agreement(rows[1:2], ITEMS, embed) == (0.0, 1)
    assert math.isnan(opening_agreement(rows, ITEMS, None)[0])
    assert math.isnan(opening_agreement(rows[2:], ITEMS, embed)[0])
    # a sentence that writes the named category agrees, whatever its nearest topic ("sports" is nearest here)
    movie = [
        _row("u4", "i1", "blurb", "For fans of food: The race for runners is a 1997 food and sports film.")
    ]
    assert opening_agreement(movie, ITEMS, embed) == (1.0, 1)


def test_distinct_2_at_a_fixed_size_does_not_fall_as_the_corpus_grows() -> None:
    texts = [f"Reader {k} gets story {k} today." for k in range(10)]  # each text alone has no repeated pair
    # all of them: the corpus figure itself, the same in every draw
    assert distinct_2_at(texts, 10) == (pytest.approx(distinct_n(texts, 2)), pytest.approx(0.0))
    # one text at a time: every draw is a text without repeats
    assert distinct_2_at(texts, 1)[0] == pytest.approx(1.0)
    # ten copies of the corpus: corpus distinct-2 falls tenfold, one text at a time still reads 1.0
    grown = texts * 10
    assert distinct_n(grown, 2) == pytest.approx(distinct_n(texts, 2) / 10)
    assert distinct_2_at(grown, 1)[0] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in distinct_2_at(texts, 11))


def test_style_rules_tell_the_four_styles_apart() -> None:
    assert style_of("Great news! About 4,200 runners followed the race.") == "enthusiastic"
    assert style_of("Quick read: About 4,200 runners followed the race.") == "casual"
    assert style_of("Of interest to readers of sports: About 4,200 runners followed the race.") == "formal"
    assert style_of("About 4,200 runners followed the race.") == "concise"


@pytest.mark.parametrize("interest", ["travel", "food and baking", "politics, Washington and trade"])
def test_every_phrasing_is_read_back_as_its_own_style(interest: str) -> None:
    # "On the subject of travel:" (formal) also matches "On {interest}:" (concise): the longer template wins
    for table in (STYLE_PHRASINGS, INTEREST_PHRASINGS):
        for style, phrasings in table.items():
            for template in phrasings:
                text = template.format(interest=interest, text="About 4,200 runners followed the race.")
                assert style_of(text) == style, text


def test_check_fails_on_each_threshold() -> None:
    settings = GenerationSettings()
    good = {"fallback_rate": 0.05, "faithfulness": 1.0, "distinct_2": 0.6}
    assert check_failures(good, settings) == []
    assert check_failures({**good, "fallback_rate": 0.2}, settings)[0].startswith("fallback rate")
    assert check_failures({**good, "faithfulness": 0.95}, settings)[0].startswith("faithfulness")
    assert check_failures({**good, "distinct_2": 0.1}, settings)[0].startswith("distinct-2")
    assert len(check_failures({**good, "faithfulness": float("nan")}, settings)) == 1


def test_summary_file(tmp_path: Path) -> None:
    rows = [_row("u1", "i1", "summary", "About 4,200 runners followed the race.", latency=100.0)]
    figures = evaluate(rows, ITEMS, {}, {"tokens_per_s": 50.0, "model_calls": 1, "generated_tokens": 5})
    path = write_summary(figures, tmp_path / "reports" / "generation_summary.json")
    data = json.loads(path.read_text())
    assert list(data)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert data["personalization_lift"] is None and data["tokens_per_s"] == 50.0
    assert "heldout_fallback_rate" in data and data["n_model_rows"] == 1


def test_copy_ceiling_bounds_the_distinct_2_of_copied_rows() -> None:
    copied = [_row(f"u{k}", "i1", "summary", "About 4,200 runners followed the race.") for k in range(4)]
    figures = quality_figures(copied, ITEMS, {})
    # four copies of one item's sentence: distinct-2 a quarter; the item's whole text bounds it
    assert figures["distinct_2"] == pytest.approx(0.25)
    assert figures["distinct_2"] <= figures["distinct_2_copy_ceiling"] < 1.0
    invented = [_row("u1", "i1", "summary", "Zorblax Quentin wins nine shiny prizes today.")]
    # nothing of it is copied: its bigrams count on top of the item's own, and the ceiling stops at 1 (a
    # distinct-2 cannot pass it; on a day of few rows per item the items' text could hold more than is written)
    assert quality_figures(invented, ITEMS, {})["distinct_2_copy_ceiling"] == 1.0


def test_distinct_2_same_item_reads_readers_of_one_item_apart_from_repeats_across_items() -> None:
    same = "About 4,200 runners followed the race."
    # three readers of i1 get the same sentence behind different openings; i2 has a single reader
    rows = [
        _row("u1", "i1", "blurb", f"Heads up: {same}"),
        _row("u2", "i1", "blurb", f"In brief: {same}"),
        _row("u3", "i1", "blurb", same),
        _row("u1", "i2", "blurb", "Zorblax Quentin wins nine shiny prizes today."),
    ]
    figures = quality_figures(rows, ITEMS, {})
    # i1's rows: 8 + 8 + 6 word pairs ("4,200" is two words), distinct: the sentence's 6, and 2 per opening
    # ("heads up", "up about"; "in brief", "brief about"); i2's row is left out
    assert figures["distinct_2_same_item"] == pytest.approx(10 / 22)
    # one reader per item: no pair of readers to compare
    assert math.isnan(quality_figures(rows[3:], ITEMS, {})["distinct_2_same_item"])
    # every reader of i1 reading something else raises it to 1
    varied = [
        _row(f"u{k}", "i1", "blurb", t)
        for k, t in enumerate(["Runners met at dawn.", "The race ended late."])
    ]
    assert quality_figures(varied, ITEMS, {})["distinct_2_same_item"] == 1.0
