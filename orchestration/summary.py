"""Prints what `make run` produced: time per stage, the warehouse, its marts, the evaluation, reports and models.

Stage times come from the Dagster instance under ``DAGSTER_HOME`` (the runs `make run` launched): the step
stats of the latest ``data_refresh`` and ``recgen_all`` runs, grouped by the asset group of each step's assets
(a check's step counts in its asset's group).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
import duckdb
import pandas as pd
from dagster._core.execution.stats import StepEventStatus
from dagster._core.storage.dagster_run import RunsFilter

from models.progress import format_seconds
from models.settings import get_settings

SUMMARY_JOBS = ("data_refresh", "recgen_all")


@dataclass
class StageTime:
    """One stage (asset group) of one run: its steps, wall time (first start to last end) and summed step time."""

    stage: str
    steps: list[str] = field(default_factory=list)
    start: float = float("inf")
    end: float = float("-inf")
    step_seconds: float = 0.0
    unfinished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        return max(self.end - self.start, 0.0)

    def describe(self) -> str:
        """E.g. ``models        3m02s wall, 4m10s of steps (6 steps)``."""
        open_steps = f"; not finished: {', '.join(self.unfinished)}" if self.unfinished else ""
        open_steps += f"; failed: {', '.join(self.failed)}" if self.failed else ""
        return (
            f"{self.stage:<28} {format_seconds(self.wall_seconds):>7} wall, "
            f"{format_seconds(self.step_seconds):>7} of steps ({len(self.steps)} step{'s' if len(self.steps) != 1 else ''}{open_steps})"
        )


def step_stages(defs: dg.Definitions) -> dict[str, str]:
    """Step key (op name) -> stage: the asset group(s) of its assets, or of the assets its checks target."""
    graph = defs.resolve_asset_graph()
    group_of = {key: graph.get(key).group_name for key in graph.get_all_asset_keys()}
    stages: dict[str, str] = {}
    for assets_def in graph.assets_defs:
        if not assets_def.is_executable:
            continue
        keys = set(assets_def.keys) or {check.asset_key for check in assets_def.check_keys}
        groups = sorted({group_of.get(key) or "default" for key in keys})
        if groups:
            stages[assets_def.node_def.name] = "+".join(groups)
    return stages


def stage_times(instance: dg.DagsterInstance, run_id: str, stages: Mapping[str, str]) -> list[StageTime]:
    """The run's steps grouped by stage, in the order the stages started (unknown steps are their own stage)."""
    out: dict[str, StageTime] = {}
    now = time.time()  # the end of steps still running
    for stats in instance.get_run_step_stats(run_id):
        name = stages.get(stats.step_key, stats.step_key)
        stage = out.setdefault(name, StageTime(name))
        stage.steps.append(stats.step_key)
        if stats.end_time is None:
            stage.unfinished.append(stats.step_key)
        if stats.status == StepEventStatus.FAILURE:
            stage.failed.append(stats.step_key)
        if stats.start_time is None:
            continue
        end = stats.end_time if stats.end_time is not None else now
        stage.start = min(stage.start, stats.start_time)
        stage.end = max(stage.end, end)
        stage.step_seconds += end - stats.start_time
    return sorted(out.values(), key=lambda s: s.start)


def latest_runs(instance: dg.DagsterInstance, jobs: Iterable[str] = SUMMARY_JOBS) -> list[dg.DagsterRun]:
    """The latest run of each job that has one, oldest first."""
    runs = [run for job in jobs for run in instance.get_runs(RunsFilter(job_name=job), limit=1)]
    stats = {run.run_id: instance.get_run_stats(run.run_id) for run in runs}
    return sorted(runs, key=lambda r: stats[r.run_id].start_time or 0.0)


def stage_lines(
    instance: dg.DagsterInstance, runs: Sequence[dg.DagsterRun], stages: Mapping[str, str]
) -> list[str]:
    """The printed block: per run its status and wall time, then one line per stage."""
    lines = []
    for run in runs:
        stats = instance.get_run_stats(run.run_id)
        start = stats.start_time or time.time()
        wall = (stats.end_time or time.time()) - start
        lines.append(
            f"    {run.job_name} run {run.run_id[:8]} "
            + (
                f"{run.status.value.lower()} in {format_seconds(wall)}"
                if stats.end_time
                else f"{run.status.value.lower()}, running for {format_seconds(wall)}"
            )
            + (f" (partition {run.tags['dagster/partition']})" if "dagster/partition" in run.tags else "")
        )
        lines.extend(f"      {stage.describe()}" for stage in stage_times(instance, run.run_id, stages))
        lines.extend(check_lines(instance, run.run_id))
    return lines


def check_lines(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """How the run's asset checks came out: the count that passed, then each failed one with its severity.

    A failed check of WARN severity (the full stack tying the best baseline) or a non-blocking one (the copy's
    quality figures) does not fail the run, so this is where a reader of `make run` sees it.
    """
    from dagster import DagsterEventType

    evaluations = [
        record.dagster_event.asset_check_evaluation_data
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if record.dagster_event is not None
    ]
    if not evaluations:
        return []
    failed = [e for e in evaluations if not e.passed]
    lines = [f"      checks: {len(evaluations) - len(failed)} of {len(evaluations)} passed"]
    for e in failed:
        description = (e.description or "").splitlines()[0][:160] if e.description else ""
        lines.append(f"      FAILED check {e.check_name} ({e.severity.value}): {description}")
    return lines


def print_stage_times() -> None:
    """Time per stage of the latest `make run` runs under DAGSTER_HOME (nothing when there are none)."""
    if not os.environ.get("DAGSTER_HOME"):  # not under `make`: no instance to read
        return
    with dg.DagsterInstance.get() as instance:
        runs = latest_runs(instance)
        if not runs:
            return
        from orchestration.definitions import defs  # the asset graph: which group each step belongs to

        print(
            "\n  time per stage (asset group; wall = first step start to last step end, from the Dagster instance)"
        )
        for line in stage_lines(instance, runs, step_stages(defs)):
            print(line)


def latest_day() -> str:
    """The last day with events in marts.interactions (the partition `make run` generates copy for)."""
    con = duckdb.connect(str(get_settings().database), read_only=True)
    try:
        return str(con.execute("select max(event_date) from marts.interactions").fetchone()[0])
    finally:
        con.close()


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if pd.isna(std) or std == 0 else f"{mean:.4f} ± {std:.4f}"


def evaluation_table(frame: pd.DataFrame) -> str:
    """reports/evaluation.csv as the few columns a reader compares first (the CSV has them all)."""
    lines = [f"    {'model':<20}{'ndcg@10':<20}{'recall@20':<20}{'mrr@10':<10}{'fit s':>8}"]
    for r in frame.to_dict("records"):
        lines.append(
            f"    {r['model']:<20}{_mean_std(r['ndcg@10'], r.get('ndcg@10_std')):<20}"
            f"{_mean_std(r['recall@20'], r.get('recall@20_std')):<20}{r.get('mrr@10', float('nan')):<10.4f}"
            f"{r.get('fit_seconds', float('nan')):>8.1f}"
        )
        if pd.notna(r.get("delta_ndcg@10")):
            lines.append(
                f"    {'':<20}ndcg@10 minus the best baseline {r['delta_ndcg@10']:+.4f}, paired 95% interval "
                f"{r['delta_ci_low']:+.4f} .. {r['delta_ci_high']:+.4f}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the paths and headline figures of the last materialization."""
    if "--latest-day" in sys.argv:
        print(latest_day())
        return
    settings = get_settings()
    db = settings.database.resolve()
    print("\nrecgen outputs (settings: RECGEN_* environment, see models/settings.py)")
    print_stage_times()
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
        print(f"\n  evaluation {evaluation.resolve()}")
        print(evaluation_table(pd.read_csv(evaluation)))
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
