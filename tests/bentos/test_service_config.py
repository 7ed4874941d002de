"""The service's traffic config comes from settings, and the new response field leaves old answers valid."""

from __future__ import annotations

from bentos.schemas import RecommendResponse
from bentos.service import RecgenService, _traffic
from models.settings import get_settings


def test_traffic_config_takes_the_concurrency_limit_from_settings():
    settings = get_settings()
    assert RecgenService.config["traffic"] == {
        "timeout": settings.serving.request_timeout_s,
        "max_concurrency": settings.serving.max_concurrency,
    }
    limited = get_settings(serving={"max_concurrency": 5, "request_timeout_s": 7})
    assert _traffic(limited) == {"timeout": 7, "max_concurrency": 5}
    # None: no limit, the key is left out (BentoML wants a positive integer there)
    assert _traffic(get_settings(serving={"max_concurrency": None, "request_timeout_s": 9})) == {"timeout": 9}


def test_recommend_response_without_the_rerank_field_is_still_valid():
    old = {
        "request_id": "r",
        "user_id": "u1",
        "items": [],
        "profile": {
            "segment": "s",
            "interests": [],
            "preferred_style": "concise",
            "n_events": 0,
            "cold_start": True,
        },
        "explanation": "e",
        "model_version": "full_stack:v1",
        "latency_ms": 1.0,
    }
    assert RecommendResponse.model_validate(old).fairness_rerank_strength is None
