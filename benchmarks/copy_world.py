"""A small pipeline world with the default generator, for ``benchmarks/serve.py --copy``.

The real Dagster assets (the integration tests' build: every asset the bento needs, then one day of
``generated_content``) on a small simulator world, with the model quality gate off (one evaluation seed, one
epoch) and every ``generation.*`` setting left at its default, so the served generator is the default one.
Copy latency depends on the generator, not on the catalog's size. Usage:

    nice -n 10 .venv/bin/python benchmarks/copy_world.py                 # -> data/copyworld
    RECGEN_HOME=data/copyworld RECGEN_DUCKDB_PATH=data/copyworld/recgen.duckdb RECGEN_TORCH_THREADS=1 \\
        nice -n 10 .venv/bin/python benchmarks/serve.py --copy --content-requests 100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import BUILD  # noqa: E402  (the integration tests' asset build)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "copyworld")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--days", type=int, default=10)
    args = parser.parse_args()
    home = args.home.resolve()
    (home / ".dagster_home").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "RECGEN_HOME": str(home),
        "RECGEN_DUCKDB_PATH": str(home / "recgen.duckdb"),
        "RECGEN_REPORTS_DIR": str(home / "reports"),
        "RECGEN_SIMULATOR__N_USERS": str(args.users),
        "RECGEN_SIMULATOR__N_ITEMS": str(args.items),
        "RECGEN_SIMULATOR__N_DAYS": str(args.days),
        "RECGEN_PROFILE__EPOCHS": "1",
        "RECGEN_RANKER__EPOCHS": "1",
        "RECGEN_EVALUATION__BPR_EPOCHS": "2",
        "RECGEN_EVALUATION__GATE_PROMOTION": "false",
        "RECGEN_EVALUATION__SEEDS": "[42]",
        "RECGEN_TORCH_THREADS": os.environ.get("RECGEN_TORCH_THREADS", "1"),
        "DAGSTER_HOME": str(home / ".dagster_home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "GX_ANALYTICS_ENABLED": "false",
    }
    subprocess.run([sys.executable, "-c", BUILD], env=env, cwd=ROOT, check=True)
    print(f"built {home}")


if __name__ == "__main__":
    main()
