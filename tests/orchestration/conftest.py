"""Fixtures for running the real Dagster graph on a tiny simulated dataset in a temporary home."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small enough to build in seconds, large enough that every split and mart has rows.
TINY_DATASET = {
    "RECGEN_SIMULATOR__N_USERS": "120",
    "RECGEN_SIMULATOR__N_ITEMS": "80",
    "RECGEN_SIMULATOR__N_DAYS": "8",
    "RECGEN_QUALITY__MIN_USERS": "10",
    "RECGEN_QUALITY__MIN_ITEMS": "10",
    "RECGEN_QUALITY__MIN_EVENTS": "100",
}


@pytest.fixture
def recgen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh RECGEN_HOME with the tiny dataset configured through the environment, as users would."""
    home = tmp_path / "home"
    monkeypatch.setenv("RECGEN_HOME", str(home))
    monkeypatch.setenv("RECGEN_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RECGEN_DUCKDB_PATH", str(home / "recgen.duckdb"))
    for key, value in TINY_DATASET.items():
        monkeypatch.setenv(key, value)
    return home
