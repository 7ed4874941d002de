"""Suite-wide set-up: offline model loading, no telemetry, and dbt's manifest for dagster-dbt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DBT_DIR = ROOT / "dbt_project"

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
}.items():
    os.environ.setdefault(key, value)


def pytest_sessionstart(session: object) -> None:
    """dagster-dbt builds its assets from target/manifest.json: parse the project if it is missing."""
    manifest = DBT_DIR / "target" / "manifest.json"
    if (DBT_DIR / "dbt_project.yml").exists() and not manifest.exists():
        dbt = Path(sys.prefix) / "bin" / "dbt"
        subprocess.run(
            [str(dbt), "parse", "--quiet", "--profiles-dir", ".", "--project-dir", "."],
            cwd=DBT_DIR,
            check=True,
        )
