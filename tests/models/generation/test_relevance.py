"""Facts by relevance: readers of one item get the sentence closest to them, spread when relevance is close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from models.generation.prompts import PromptFields
from models.generation.relevance import by_relevance, spread_over_readers
from models.generation.text import split_sentences

BODY = (
    "The derby drew 5,812 fans in Milan. Riverside Rovers plans a new youth program. "
    "Early results show a 27.1 percent change in the derby. Critics argue the stadium needs more scrutiny."
)


def _scorer(sentences: Sequence[str], terms: Sequence[str]) -> list[list[float]]:
    """Relevance by shared words, plus a tiny preference for the third sentence (close, not equal)."""
    words = {w.lower() for t in terms for w in t.split()}
    return [
        [
            len(words & {w.lower().strip(".,") for w in s.split()}) + 0.01 * (i == 2)
            for i, s in enumerate(sentences)
        ]
    ]


def _blurb(*interests: str) -> PromptFields:
    return PromptFields(
        "blurb", "casual", "Derby day", BODY, interests=interests, weights=(1.0,) * len(interests)
    )


def _first(fields: PromptFields) -> str:
    return split_sentences(fields.body)[0]


def test_readers_of_one_item_get_different_sentences_when_relevance_is_close() -> None:
    readers = [("i1", _blurb("football")) for _ in range(3)]  # no sentence names football: all tie
    alike = spread_over_readers(readers, _scorer, weight=0.0)
    assert len({_first(f) for f in alike}) == 1  # without the spread every reader gets the same sentence
    spread = spread_over_readers(readers, _scorer, weight=0.05)
    assert len({_first(f) for f in spread}) == 3
    # the lead sentence (the summary's) starts as given once, so none of the three readers gets it first
    assert _first(spread[0]) == split_sentences(BODY)[2]
    assert split_sentences(BODY)[0] not in {_first(f) for f in spread}
    # every reader still gets the whole body, reordered
    assert all(sorted(split_sentences(f.body)) == sorted(split_sentences(BODY)) for f in spread)


def test_a_clearly_more_relevant_sentence_wins_over_the_spread() -> None:
    readers = [("i1", _blurb("stadium scrutiny")) for _ in range(3)]
    spread = spread_over_readers(readers, _scorer, weight=0.05)
    assert {_first(f) for f in spread} == {"Critics argue the stadium needs more scrutiny."}
    # other items do not share the counts, and with weight 0 the order is by_relevance's
    other = spread_over_readers([("i2", _blurb("football")), ("i3", _blurb("football"))], _scorer, 0.05)
    assert _first(other[0]) == _first(other[1])
    assert spread_over_readers(readers[:1], _scorer, 0.0)[0] == by_relevance(readers[0][1], _scorer)


def test_a_phrasing_repeated_across_items_is_not_chosen_for_every_blurb() -> None:
    shared = "The project, led by Ana Ruiz, focuses on the derby and the stadium."

    def body(own: str) -> str:
        return f"{own} {shared.replace('Ana Ruiz', 'Bo Lin')} Fans say the derby matters."

    readers = [
        (f"i{k}", replace(_blurb("derby stadium"), body=body(f"Match {k} opens the season.")))
        for k in range(2)
    ]
    plain = spread_over_readers(readers, _scorer, weight=0.0)
    assert all(_first(f).startswith("The project") for f in plain)  # the most relevant sentence, twice
    spread = spread_over_readers(readers, _scorer, weight=0.0, batch_weight=5.0)
    assert _first(spread[0]).startswith("The project") and not _first(spread[1]).startswith("The project")


def _food_item_for_a_politics_reader() -> PromptFields:
    """A food item with a politics sentence; its reader likes politics and food, and the opening names food."""
    return PromptFields(
        "blurb",
        "casual",
        "Market day",
        "The food market opens early. The senate debates politics today.",
        interests=("politics", "senate", "food"),
        weights=(1.0, 1.0, 1.0),
        fit="food",
        shared=("food",),
    )


def test_opening_focus_picks_the_sentence_about_what_the_opening_names() -> None:
    fields = _food_item_for_a_politics_reader()
    # on the whole profile the politics sentence is more relevant (two shared words against one) ...
    assert (
        _first(spread_over_readers([("i1", fields)], _scorer, 0.0)[0]) == "The senate debates politics today."
    )
    # ... but the opening names food ("Into food?"), so with focus="opening" the food sentence follows it
    opened = spread_over_readers([("i1", fields)], _scorer, 0.0, focus="opening")
    assert _first(opened[0]) == "The food market opens early."
    # a reader whose opening names nothing is scored on the profile either way
    plain = replace(fields, fit=None, shared=())
    assert _first(spread_over_readers([("i1", plain)], _scorer, 0.0, focus="opening")[0]).startswith(
        "The senate"
    )


def test_sentence_focus_keeps_in_the_opening_only_what_the_chosen_sentence_is_about() -> None:
    fields = _food_item_for_a_politics_reader()
    # the politics sentence is chosen on the profile, and the opening no longer names food before it
    politics = spread_over_readers([("i1", fields)], _scorer, 0.0, focus="sentence")[0]
    assert _first(politics) == "The senate debates politics today."
    assert politics.fit is None and politics.shared == ()
    # a reader who gets the food sentence keeps "food" in the opening
    foodie = replace(fields, interests=("food", "market"))
    kept = spread_over_readers([("i1", foodie)], _scorer, 0.0, focus="sentence")[0]
    assert _first(kept) == "The food market opens early."
    assert kept.fit == "food" and kept.shared == ("food",)


def test_named_focus_picks_among_the_sentences_about_the_opening_the_one_closest_to_the_reader() -> None:
    body = (
        "The food market opens by the senate. The senate debates politics today. "
        "A bakery sells food and more food. Voters elect a new senate."
    )
    fields = PromptFields(
        "blurb",
        "casual",
        "Market day",
        body,
        interests=("politics", "senate", "debates", "food"),
        weights=(1.0,) * 4,
        fit="food",
        shared=("food",),
    )

    def first(focus: str) -> str:
        return _first(spread_over_readers([("i1", fields)], _scorer, 0.0, focus=focus)[0])

    assert first("profile") == "The senate debates politics today."  # the closest to the reader, not food
    assert first("opening") == "A bakery sells food and more food."  # the closest to "food" alone
    # about food (the upper half by relevance to it), and of those the closest to the whole profile
    assert first("named") == "The food market opens by the senate."
