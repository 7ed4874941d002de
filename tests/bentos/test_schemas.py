"""Request validation that does not depend on settings: the rules pydantic enforces before the service runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bentos.schemas import FeedbackEventIn, FeedbackRequest, GenerateRequest, RecommendRequest
from bentos.service import slate_explanation
from models.interests import InterestProfile


def _error(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


def test_recommend_needs_a_user_or_a_history():
    assert RecommendRequest(user_id="u1").k == 10
    assert RecommendRequest(history=["i1"]).user_id is None
    with pytest.raises(ValidationError) as exc:
        RecommendRequest()
    assert "user_id or history" in _error(exc)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "style": "loud"}, "style"),
        ({"user_id": "u1", "size": 3}, "size"),  # unknown fields are refused, not ignored
        ({"user_id": ""}, "user_id"),
        ({"user_id": "u" * 129}, "user_id"),
    ],
)
def test_recommend_rejects_bad_fields_by_name(data, field):
    with pytest.raises(ValidationError) as exc:
        RecommendRequest.model_validate(data)
    assert field in _error(exc)


def test_generate_needs_user_and_item():
    with pytest.raises(ValidationError) as exc:
        GenerateRequest.model_validate({"user_id": "u1"})
    assert "item_id" in _error(exc)
    assert GenerateRequest(user_id="u1", item_id="i1").task == "blurb"


def test_feedback_event_rules():
    base = {"user_id": "u1", "item_id": "i1"}
    assert FeedbackEventIn(event_type="click", **base).ts is None
    for data, field in [
        ({"event_type": "dwell"}, "dwell_seconds"),
        ({"event_type": "rating"}, "rating"),
        ({"event_type": "rating", "rating": 6}, "rating"),
        ({"event_type": "dwell", "dwell_seconds": -1}, "dwell_seconds"),
        ({"event_type": "click", "position": -1}, "position"),
        ({"event_type": "purchase"}, "event_type"),
    ]:
        with pytest.raises(ValidationError) as exc:
            FeedbackEventIn.model_validate({**base, **data})
        assert field in _error(exc), data


def test_feedback_refuses_future_events_but_allows_clock_skew():
    base = {"event_type": "click", "user_id": "u1", "item_id": "i1"}
    soon = datetime.now(UTC) + timedelta(minutes=1)  # within the 5 minute skew allowance
    assert FeedbackEventIn(**base, ts=soon).ts == soon
    with pytest.raises(ValidationError) as exc:
        FeedbackEventIn(**base, ts=datetime.now(UTC) + timedelta(hours=1))
    assert "future" in _error(exc)
    # a naive timestamp is read as UTC
    with pytest.raises(ValidationError):
        FeedbackEventIn(**base, ts=datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1))


def test_feedback_needs_at_least_one_event():
    with pytest.raises(ValidationError) as exc:
        FeedbackRequest(events=[])
    assert "events" in _error(exc)


def test_slate_explanation_reads_the_profile():
    warm = InterestProfile("u1", top_categories=[("science", 0.7), ("travel", 0.3)], n_events=9)
    assert slate_explanation(warm) == "Based on your interest in science and travel (9 recent engagements)."
    declared = InterestProfile("u2", top_categories=[("music", 1.0)], cold_start=True)
    assert "stated interests (music)" in slate_explanation(declared)
    assert "popular and fresh" in slate_explanation(InterestProfile("u3", cold_start=True))


def test_event_ids_must_be_1_to_128_printable_characters_and_errors_name_the_index():
    base = {"event_type": "click", "user_id": "u1", "item_id": "i1"}
    assert FeedbackEventIn(**base, event_id="app 1:x/~").event_id == "app 1:x/~"
    assert FeedbackEventIn(**base, event_id="x" * 128).event_id == "x" * 128
    for bad in ["", "x" * 129, "line\nbreak", "caf\u00e9", "\x00"]:
        with pytest.raises(ValidationError) as exc:
            FeedbackRequest.model_validate({"events": [base, {**base, "event_id": bad}]})
        errors = exc.value.errors()
        assert [e["loc"] for e in errors] == [("events", 1, "event_id")], errors
