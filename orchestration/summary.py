"""Prints what `make run` produced: the warehouse, its marts, the evaluation table, reports and models."""

from __future__ import annotations

import json
import sys

import duckdb

from models.settings import get_settings


def latest_day() -> str:
    """The last day with events in marts.interactions (the partition `make run` generates copy for)."""
    con = duckdb.connect(str(get_settings().database), read_only=True)
    try:
        return str(con.execute("select max(event_date) from marts.interactions").fetchone()[0])
    finally:
        con.close()


def main() -> None:
    """Print the paths and headline figures of the last materialization."""
    if "--latest-day" in sys.argv:
        print(latest_day())
        return
    settings = get_settings()
    db = settings.database.resolve()
    print("\nrecgen outputs (settings: RECGEN_* environment, see models/settings.py)")
    print(f"  warehouse  {db}")
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = con.execute(
            "select schema_name, table_name, estimated_size from duckdb_tables() "
            "where schema_name in ('raw', 'marts', 'ml', 'generation', 'monitoring') order by 1, 2"
        ).fetchall()
        for schema, name, size in tables:
            print(f"    {schema}.{name:<28} ~{size} rows")
    finally:
        con.close()
    evaluation = settings.reports_dir / "evaluation.csv"
    if evaluation.exists():
        print(f"\n  evaluation {evaluation.resolve()}\n")
        print(evaluation.read_text())
    generation = settings.reports_dir / "generation_summary.json"
    if generation.exists():
        print(f"  generation {generation.resolve()}")
        print("    " + json.dumps(json.loads(generation.read_text())))
    for kind in ("drift", "quality", "fairness"):
        # The fairness report keeps Evidently's item-bias page beside it; name the main page.
        reports = sorted(
            p for p in (settings.reports_dir / kind).glob("*.html") if not p.stem.endswith("_evidently")
        )
        if reports:
            print(f"  {kind:<10} {reports[-1].resolve()}")
    if settings.artifacts_dir.exists():
        print(f"  models     {settings.artifacts_dir.resolve()}")
        for model_dir in sorted(p for p in settings.artifacts_dir.iterdir() if p.is_dir()):
            versions = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
            if versions:
                print(f"    {model_dir.name:<16} latest {versions[-1]}")


if __name__ == "__main__":
    main()
