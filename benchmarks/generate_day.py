"""The pipeline day's copy figures, recomputed with other generation settings (nothing is written back).

Reads what the ``generated_content`` asset reads for one day partition (the day's active users, their
stored recommendations and profiles, the catalog, the champion generator) from a copy of the warehouse, writes
the day's blurbs and summaries through ``service.generate_content`` (an empty in-memory cache, so the cache hits
are only the day's own repeated segments, as on a first run of the day) and prints the figures of
``evaluation.evaluate``: the same numbers ``reports/generation_summary.json`` gets, for settings the asset has
not run with. Usage (after ``make run``):

    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/generate_day.py --day 2026-10-21 --json /tmp/day.json
    .venv/bin/python benchmarks/generate_day.py --set reader_diversity=0.2 --json /tmp/day.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402

from models.generation import daily  # noqa: E402
from models.generation.artifacts import load_generator  # noqa: E402
from models.generation.evaluation import evaluate, sample_rows  # noqa: E402
from models.generation.service import build_requests, generate_content, items_by_id  # noqa: E402
from models.settings import get_settings  # noqa: E402
from models.torch_utils import limit_cpu_threads  # noqa: E402

KEYS = (
    "n_model_rows",
    "n_fallback_rows",
    "n_cached_rows",
    "fallback_rate",
    "faithfulness",
    "well_formed_share",
    "distinct_2",
    "distinct_2_at_100",
    "distinct_2_copy_ceiling",
    "distinct_2_same_item",
    "personalization_lift",
    "opening_agreement",
    "style_accuracy",
    "heldout_fallback_rate",
    "heldout_faithfulness",
    "heldout_distinct_2",
    "heldout_personalization_lift",
    "tokens_per_s",
    "p95_latency_ms",
)


def parse_override(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--day", help="the partition (default: the day of reports/generation_summary.json)")
    parser.add_argument("--set", action="append", default=[], help="generation setting override, key=value")
    parser.add_argument("--json", type=Path, help="write figures and every row here")
    args = parser.parse_args()
    settings = get_settings()
    limit_cpu_threads(settings.torch_threads)
    gen = settings.generation.model_copy(update=dict(parse_override(s) for s in args.set))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "recgen.duckdb"
        shutil.copy(settings.database, db)
        con = duckdb.connect(str(db), read_only=True)
        summary = settings.reports_dir / "generation_summary.json"
        day = dt.date.fromisoformat(args.day or json.loads(summary.read_text())["day"])
        users = daily.active_users(con, day, gen.max_users)
        items = daily.read_items(con)
        recs = daily.stored_recommendations(con, users, day, gen.top_n_items)
        stored = daily.stored_profiles(con, users)
        marts = daily.profiles_from_marts(con, users, day)
        recommender = None
        if recs is None:
            from models.recommender import Recommender

            recommender = Recommender.load(settings)  # what the generated_content asset falls back to
        profiles, profile_source, recs, rec_source = daily.choose_inputs(
            users, recs, stored, marts, recommender, gen.top_n_items,
            lambda p: daily.popular_recommendations(con, p, gen.top_n_items),
        )  # fmt: skip
        con.close()
    print(f"profiles from {profile_source}, recommendations from {rec_source}")
    generator = load_generator(settings)
    item_texts = items_by_id(items)
    requests = build_requests(
        recs[["user_id", "item_id"]].itertuples(index=False), item_texts, profiles, gen.tasks
    )
    started = time.perf_counter()
    before = generator.stats()
    work = duckdb.connect()
    rows = generate_content(requests, generator, work, gen)
    after = generator.stats()
    stats = {
        k: after[k] - before[k]
        for k in ("model_calls", "generated_tokens", "generation_seconds")
        if k in after
    }
    stats["tokens_per_s"] = (
        stats["generated_tokens"] / stats["generation_seconds"] if stats["generation_seconds"] else 0.0
    )
    probe_requests = daily.heldout_probe(
        requests, item_texts, profiles, generator.heldout_items, gen.heldout_probe_users, gen.heldout_probe_items,
        gen.tasks,
    )  # fmt: skip
    probe = generate_content(probe_requests, generator, None, gen) if probe_requests else []
    from models.encoders import TextEncoder

    encoder = TextEncoder(
        gen.lift_encoder or settings.encoder.model_name_or_path, batch_size=64, max_length=128
    )
    figures = evaluate(
        rows, item_texts, profiles, stats, heldout_items=generator.heldout_items, embed=encoder.encode,
        heldout_probe=probe,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    print(
        f"day {day}: {len(users)} users, {len({r.item_id for r in rows})} items, {len(rows)} rows, {seconds:.0f} s"
    )
    print("overrides:", dict(parse_override(s) for s in args.set) or "none")
    for key in KEYS:
        value = figures.get(key)
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    print("  fallback_reasons:", figures.get("fallback_reasons"))
    for r in sample_rows(rows, per_style=2):
        print(f"  [{r.style}/{r.task} {r.item_id} {r.user_id}] {r.text}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "day": str(day),
            "overrides": dict(parse_override(s) for s in args.set),
            "figures": figures,
            "rows": pd.DataFrame([r.to_dict() for r in rows]).to_dict("records"),
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str))


if __name__ == "__main__":
    main()
