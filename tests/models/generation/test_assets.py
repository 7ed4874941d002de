"""The generation assets end to end on a handmade warehouse: train + register, then one day's copy, twice."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from models.generation.generator import DecodingConfig, Generation
from orchestration.assets.generation import content_generator, generated_content
from orchestration.checks.generation import generated_content_guardrails
from orchestration.resources import RecgenResource
from tests.models.generation.warehouse import DAY, build_warehouse

TINY_ENV = {
    "RECGEN_GENERATION__TRAIN_STEPS": "5",
    "RECGEN_GENERATION__TRAIN_BATCH_SIZE": "4",
    "RECGEN_GENERATION__N_LAYER": "1",
    "RECGEN_GENERATION__N_EMBD": "32",
    "RECGEN_GENERATION__N_HEAD": "2",
    "RECGEN_GENERATION__VOCAB_SIZE": "300",
    "RECGEN_GENERATION__MAX_NEW_TOKENS": "8",
    "RECGEN_GENERATION__TOP_N_ITEMS": "2",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RECGEN_HOME", str(home))
    monkeypatch.setenv("RECGEN_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RECGEN_DUCKDB_PATH", str(home / "recgen.duckdb"))
    for key, value in TINY_ENV.items():
        monkeypatch.setenv(key, value)
    build_warehouse(home / "recgen.duckdb")
    return home


@pytest.mark.slow
@pytest.mark.integration
def test_generator_then_daily_copy(home: Path, tmp_path: Path) -> None:
    resources = {"recgen": RecgenResource()}
    trained = dg.materialize([content_generator], resources=resources)
    assert trained.success
    meta = trained.asset_materializations_for_node("content_generator")[0].metadata
    assert meta["reused"].value is False and meta["loss_after"].value < meta["loss_before"].value
    assert (Path(meta["path"].value) / "model" / "config.json").exists()

    everything = [content_generator, generated_content, generated_content_guardrails]
    day = DAY.isoformat()
    first = dg.materialize(everything, selection=[generated_content], partition_key=day, resources=resources)
    assert first.success
    checks = first.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    meta = first.asset_materializations_for_node("generated_content")[0].metadata
    # u1 and u2 have stored lists for DAY (top 2 each), u3 has none there; 2 tasks per pair
    assert meta["rows"].value == 2 * 2 * 2 and meta["recommendation_source"].value == "ml.recommendations"
    assert meta["n_cached_rows"].value == 0
    summary = json.loads((tmp_path / "reports" / "generation_summary.json").read_text())
    assert summary["n_items"] == 4 and summary["n_model_rows"] + summary["n_fallback_rows"] == 8

    again = dg.materialize(everything, selection=[generated_content], partition_key=day, resources=resources)
    meta = again.asset_materializations_for_node("generated_content")[0].metadata
    assert (
        meta["n_cached_rows"].value == 8 and meta["model_calls"].value == 0
    )  # everything came from the cache

    con = duckdb.connect(str(home / "recgen.duckdb"))
    assert con.execute("select count(*) from generation.generated_content").fetchone() == (8,)
    assert con.execute(
        "select count(*) from ml.registry where name = 'generator' and is_champion"
    ).fetchone() == (1,)

    # same catalog and settings: the registered version is reused, not retrained
    retrained = dg.materialize([content_generator], resources=resources)
    assert retrained.asset_materializations_for_node("content_generator")[0].metadata["reused"].value is True


class _Echo:
    """A stand-in generator whose every output is the same off-topic line, so every row falls back."""

    version = "echo|p2|greedy"
    prompt_format = "control"
    decoding = DecodingConfig()  # no copy decoding: the echo is what the rows get checked on
    heldout_items = frozenset({"i0004"})
    max_prompt_tokens = 10_000

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def version_for(self, generation_settings: object) -> str:
        return self.version

    def generate(self, prompts: list[str]) -> list[Generation]:
        self.calls += 1
        return [Generation(self.text, len(self.text.split()), 1.0) for _ in prompts]

    def stats(self) -> dict[str, float]:
        return {
            "model_calls": self.calls,
            "generated_tokens": 0,
            "generation_seconds": 0.0,
            "tokens_per_s": 0.0,
        }


@pytest.mark.integration
def test_quality_check_fails_when_the_model_always_falls_back(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.assets import generation as assets
    from orchestration.checks.generation import generated_content_quality

    resources = {"recgen": RecgenResource()}
    everything = [
        content_generator,
        generated_content,
        generated_content_guardrails,
        generated_content_quality,
    ]
    day = DAY.isoformat()

    def run(text: str) -> dict[str, dg.AssetCheckEvaluation]:
        monkeypatch.setattr(assets, "load_generator", lambda settings: _Echo(text))
        result = dg.materialize(
            everything,
            selection=[generated_content],
            partition_key=day,
            resources=resources,
            raise_on_error=False,
        )
        return {c.check_name: c for c in result.get_asset_check_evaluations()}

    # an invented name and number in every output: every row falls back, with the reason recorded
    checks = run("Zorblax Quentin wins 1987 prizes.")
    assert checks["generated_content_guardrails"].passed  # every fallback says why ...
    quality = checks["generated_content_quality"]
    assert not quality.passed  # ... but a partition of fallbacks is not copy the model wrote
    assert quality.metadata["fallback_rate"].value == 1.0 and quality.metadata["n_model_rows"].value == 0
    summary = json.loads((tmp_path / "reports" / "generation_summary.json").read_text())
    assert summary["n_model_rows"] == 0 and summary["fallback_rate"] == 1.0
    assert summary["fallback_reasons"]["ungrounded"] == summary["n_fallback_rows"] == 8
    # i0004 is the held-out item: u2's blurb and summary of the day, and the probe's (never published) blurbs
    # for the day's two users and one summary (the second user's is the first's)
    assert summary["heldout_probe_rows"] == 4
    assert summary["heldout_n_fallback_rows"] == 2 + 3
