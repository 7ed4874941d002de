"""Run the copy checks of generated_content on the stored latest day (no re-materialization), recorded in the
instance under DAGSTER_HOME: DAGSTER_HOME=$PWD/.dagster_home .venv/bin/python benchmarks/generate_check.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402

from orchestration.assets.generation import generated_content  # noqa: E402
from orchestration.checks.generation import generated_content_guardrails, generated_content_quality  # noqa: E402
from orchestration.resources import RecgenResource  # noqa: E402

result = dg.materialize(
    [generated_content, generated_content_guardrails, generated_content_quality],
    selection=dg.AssetSelection.checks(generated_content_guardrails, generated_content_quality),
    resources={"recgen": RecgenResource()},
    instance=dg.DagsterInstance.get(),
    raise_on_error=False,
)
for c in result.get_asset_check_evaluations():
    print(c.check_name, "PASSED" if c.passed else "FAILED", c.description)
    print({k: getattr(v, "value", v) for k, v in c.metadata.items() if k != "samples_per_style"})
