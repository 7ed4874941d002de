"""Asset check on the evaluation: the full stack must beat the best baseline on test NDCG@10, by an interval.

The paired bootstrap 95% interval of full_stack minus the best baseline decides:
- above 0 (a win): the check passes;
- below 0 (a loss): the check fails with ERROR severity and, being blocking, stops everything downstream of
  ``evaluation`` (``full_stack_champion``, the reports, the copy, the bento): the champion stays where it was;
- containing 0 (a tie: the test users cannot tell the two apart): the check fails with WARN severity, which
  Dagster does not block on; ``full_stack_champion`` then makes it champion only if the registry has none
  (so a fresh checkout's reports, copy and service have a model) and never replaces a champion with it.
No ``from __future__ import annotations`` here: Dagster reads the context annotation at definition time.
"""

import math

import dagster as dg

from models.evaluation import BASELINE_NAMES, full_stack_verdict
from orchestration.assets.ml import evaluation, read_test_table
from orchestration.resources import RecgenResource


@dg.asset_check(
    asset=evaluation,
    name="full_stack_beats_baselines",
    blocking=True,
    description="The paired bootstrap 95% interval over test users of NDCG@10 full_stack minus the best baseline "
    "(popularity, recency popularity, item-kNN, EASE, BPR; mean over seeds) lies above 0. Below 0 it fails and "
    "blocks; an interval holding 0 (a tie) fails with WARN severity and does not block",
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
    verdict, message = full_stack_verdict(table)
    low, high = float(full["delta_ci_low"]), float(full["delta_ci_high"])
    return dg.AssetCheckResult(
        passed=verdict == "win",
        severity=dg.AssetCheckSeverity.WARN if verdict == "tie" else dg.AssetCheckSeverity.ERROR,
        description=message,
        metadata={
            "verdict": verdict,
            "full_stack_ndcg@10": float(full["ndcg@10"]),
            "delta_ndcg@10": float(full["delta_ndcg@10"]),
            "delta_ci_low": low if math.isfinite(low) else None,
            "delta_ci_high": high if math.isfinite(high) else None,
            "n_seeds": int(full["n_seeds"]),
        },
    )


ml_checks = [full_stack_beats_baselines]
