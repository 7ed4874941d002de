"""Asset check on the evaluation: the full stack must beat the best baseline on test NDCG@10, by an interval.

Blocking: when it fails, nothing downstream of ``evaluation`` runs, ``full_stack_champion`` included, so the
champion (what ``bentoml serve`` loads) stays where it was.
No ``from __future__ import annotations`` here: Dagster reads the context annotation at definition time.
"""

import math

import dagster as dg

from models.evaluation import BASELINE_NAMES, full_stack_wins
from orchestration.assets.ml import evaluation, read_test_table
from orchestration.resources import RecgenResource


@dg.asset_check(
    asset=evaluation,
    name="full_stack_beats_baselines",
    blocking=True,
    description="The paired bootstrap 95% interval over test users of NDCG@10 full_stack minus the best baseline "
    "(popularity, recency popularity, item-kNN, EASE, BPR; mean over seeds) lies above 0",
)
def full_stack_beats_baselines(recgen: RecgenResource) -> dg.AssetCheckResult:
    with recgen.connect() as con:
        table = read_test_table(con)
    if table.empty:
        return dg.AssetCheckResult(passed=False, description="ml.evaluation does not exist")
    models = set(table["model"])
    if "full_stack" not in models or not models & set(BASELINE_NAMES):
        return dg.AssetCheckResult(
            passed=False, description=f"ml.evaluation lacks models: has {sorted(models)}"
        )
    full = table.set_index("model").loc["full_stack"]
    passed, message = full_stack_wins(table)
    low, high = float(full["delta_ci_low"]), float(full["delta_ci_high"])
    return dg.AssetCheckResult(
        passed=passed,
        description=message,
        metadata={
            "full_stack_ndcg@10": float(full["ndcg@10"]),
            "delta_ndcg@10": float(full["delta_ndcg@10"]),
            "delta_ci_low": low if math.isfinite(low) else None,
            "delta_ci_high": high if math.isfinite(high) else None,
            "n_seeds": int(full["n_seeds"]),
        },
    )


ml_checks = [full_stack_beats_baselines]
