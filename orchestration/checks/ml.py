"""Asset check on the evaluation: the full stack must beat the best baseline on test NDCG@10.

No ``from __future__ import annotations`` here: Dagster reads the context annotation at definition time.
"""

import dagster as dg

from models.data.warehouse import table_exists
from models.training import BASELINE_NAMES, best_baseline
from orchestration.assets.ml import evaluation
from orchestration.resources import RecgenResource


@dg.asset_check(
    asset=evaluation,
    name="full_stack_beats_baselines",
    blocking=True,
    description="Test NDCG@10 of the full stack is above that of every baseline (popularity, item-kNN, BPR)",
)
def full_stack_beats_baselines(recgen: RecgenResource) -> dg.AssetCheckResult:
    with recgen.connect() as con:
        if not table_exists(con, "ml.evaluation"):
            return dg.AssetCheckResult(passed=False, description="ml.evaluation does not exist")
        table = con.execute(
            'select model, "ndcg@10", "recall@20" from ml.evaluation where split = \'test\''
        ).df()
    models = set(table["model"])
    if "full_stack" not in models or not models & set(BASELINE_NAMES):
        return dg.AssetCheckResult(
            passed=False, description=f"ml.evaluation lacks models: has {sorted(models)}"
        )
    full = float(table.set_index("model").loc["full_stack", "ndcg@10"])
    name, value = best_baseline(table, "ndcg@10")
    passed = full > value
    verdict = "beats" if passed else "does NOT beat"
    return dg.AssetCheckResult(
        passed=passed,
        description=f"full_stack test NDCG@10 {full:.4f} {verdict} the best baseline {name} ({value:.4f})",
        metadata={
            "full_stack_ndcg@10": full,
            "best_baseline": name,
            "best_baseline_ndcg@10": value,
            "margin": full - value,
        },
    )


ml_checks = [full_stack_beats_baselines]
