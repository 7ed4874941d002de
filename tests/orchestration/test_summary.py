"""The run summary's time per stage: read from a real Dagster instance's step stats, grouped by asset group."""

from __future__ import annotations

import time

import dagster as dg

from orchestration.summary import latest_runs, stage_lines, stage_times, step_stages


@dg.asset(group_name="ingest")
def landed() -> int:
    time.sleep(0.3)
    return 1


@dg.asset(group_name="models")
def trained(landed: int) -> int:
    time.sleep(0.2)
    return landed + 1


@dg.asset_check(asset=trained)
def trained_is_positive(trained: int) -> dg.AssetCheckResult:
    time.sleep(0.1)
    return dg.AssetCheckResult(passed=trained > 0)


DEFS = dg.Definitions(
    assets=[landed, trained],
    asset_checks=[trained_is_positive],
    jobs=[dg.define_asset_job("recgen_all", selection="*")],
)


def test_stage_times_group_steps_by_asset_group() -> None:
    stages = step_stages(DEFS)  # a check's op is named <asset>_<check>
    assert stages == {"landed": "ingest", "trained": "models", "trained_trained_is_positive": "models"}
    with dg.instance_for_test() as instance:
        result = DEFS.get_job_def("recgen_all").execute_in_process(instance=instance)
        assert result.success
        (run,) = latest_runs(instance)
        assert run.run_id == result.run_id
        by_stage = {s.stage: s for s in stage_times(instance, run.run_id, stages)}
        assert list(by_stage) == ["ingest", "models"]  # in the order they started
        assert sorted(by_stage["models"].steps) == ["trained", "trained_trained_is_positive"]
        assert by_stage["ingest"].wall_seconds >= 0.3 and by_stage["models"].step_seconds >= 0.3
        assert by_stage["ingest"].end <= by_stage["models"].start  # trained waited for landed
        assert not by_stage["models"].unfinished
        lines = stage_lines(instance, [run], stages)
    assert lines[0].startswith(f"    recgen_all run {run.run_id[:8]} success in ")
    assert "models" in lines[2] and "(2 steps)" in lines[2] and "(1 step)" in lines[1]


def test_a_step_without_a_group_is_its_own_stage() -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize([landed], instance=instance)
        (stage,) = stage_times(instance, result.run_id, {})
        # no run of the summary's jobs (this one is an ad-hoc materialization): nothing to print
        assert latest_runs(instance) == []
    assert stage.stage == "landed" and stage.steps == ["landed"]


@dg.asset(group_name="models")
def broken() -> None:
    raise ValueError("no data")


def test_a_failed_step_is_named() -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success
        (stage,) = stage_times(instance, result.run_id, {"broken": "models"})
    assert stage.failed == ["broken"] and "failed: broken" in stage.describe()


def test_the_evaluation_table_shows_mean_and_spread_and_the_full_stacks_interval() -> None:
    import pandas as pd

    from orchestration.summary import evaluation_table

    frame = pd.DataFrame(
        [
            {"model": "itemknn", "ndcg@10": 0.0847, "ndcg@10_std": 0.0, "recall@20": 0.2088, "recall@20_std": 0.0,
             "mrr@10": 0.095, "fit_seconds": 0.11},
            {"model": "full_stack", "ndcg@10": 0.0974, "ndcg@10_std": 0.0025, "recall@20": 0.2393,
             "recall@20_std": 0.0038, "mrr@10": 0.1095, "fit_seconds": 86.9, "delta_ndcg@10": 0.0127,
             "delta_ci_low": 0.0041, "delta_ci_high": 0.0212},
        ]
    )  # fmt: skip
    lines = evaluation_table(frame).splitlines()
    assert lines[1].split() == ["itemknn", "0.0847", "0.2088", "0.0950", "0.1"]
    assert lines[2].split() == [
        "full_stack",
        "0.0974",
        "±",
        "0.0025",
        "0.2393",
        "±",
        "0.0038",
        "0.1095",
        "86.9",
    ]
    assert "+0.0127" in lines[3] and "+0.0041 .. +0.0212" in lines[3]
