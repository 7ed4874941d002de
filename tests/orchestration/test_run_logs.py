"""The instance settings of orchestration/dagster.yaml route ``models.*`` Python loggers into each run's log.

An asset calls a training-style loop in models/ (``EpochProgress``, which logs through ``models.progress``);
with the repo's ``python_logs`` settings its epoch lines are events of the run (what the UI and `make run`
show); without them they are not, so the routing is what puts them there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import yaml

from models.progress import EpochProgress

DAGSTER_YAML = Path(__file__).resolve().parents[2] / "orchestration" / "dagster.yaml"


@dg.asset
def looped() -> None:
    with EpochProgress("toy", total=2) as progress:
        progress.step(loss=0.5, valid_ndcg=0.1)
        progress.step(loss=0.25, valid_ndcg=0.2)


def run_messages(overrides: dict) -> list[tuple[int, str]]:
    """(level, message) of every plain log event of one materialization of ``looped``."""
    with dg.instance_for_test(overrides=overrides) as instance:
        result = dg.materialize([looped], instance=instance)
        assert result.success
        return [
            (e.level, e.user_message) for e in instance.all_logs(result.run_id) if e.dagster_event is None
        ]


def test_dagster_yaml_routes_models_loggers_into_the_run_log() -> None:
    settings = yaml.safe_load(DAGSTER_YAML.read_text())
    assert settings["python_logs"]["managed_python_loggers"] == ["models"]
    logged = run_messages({"python_logs": settings["python_logs"]})
    messages = [m for _, m in logged]
    lines = [m for m in messages if m.startswith("toy epoch ")]
    assert {level for level, m in logged if m in lines} == {logging.INFO}
    assert len(lines) == 2, messages
    assert lines[1].startswith("toy epoch 2/2: loss=0.25 valid_ndcg=0.2 | ") and "left)" in lines[1]
    assert any(m.startswith("toy: 2/2 epochs in ") for m in messages)  # the closing line


def test_without_the_setting_the_lines_stay_out_of_the_run_log() -> None:
    messages = [m for _, m in run_messages({})]
    assert not any("toy epoch" in m for m in messages), messages
