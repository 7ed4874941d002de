"""The HTML reports open in a real headless Chromium: scripts run without errors, the sections render and the
PNG charts beside each page load (naturalWidth > 0).

Evidently draws its pages with JavaScript from JSON embedded in the file, so the figures exist in the raw file
either way; the DOM Chromium dumps after the scripts ran (script and style contents removed) shows whether
the page actually rendered. Needs Debian's ``chromium`` package (``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from models.monitoring.charts import Chart, metric_bars_chart
from models.monitoring.drift import run_drift_report
from models.monitoring.fairness_report import SECTION_TITLES, run_fairness_report
from models.monitoring.quality import run_quality_report
from models.settings import MonitoringSettings
from tests.models.monitoring.conftest import (
    chromium_dump_dom,
    chromium_image_sizes,
    make_recs,
    make_world,
    visible_text,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian package 'chromium' is not installed"),
]


def assert_charts_load(page: Path, charts: list[Chart], names: set[str], tmp_path: Path) -> None:
    """The page's images are exactly the charts, each a file beside the page that Chromium decoded."""
    assert {c.name for c in charts} == names
    assert all(c.path.parent == page.parent and c.path.stat().st_size > 1000 for c in charts)
    sizes = chromium_image_sizes(page, tmp_path, CHROMIUM)
    assert set(sizes) == {c.path.name for c in charts}, sizes
    for src, (width, height) in sizes.items():
        assert width > 100 and height > 100, (src, width, height)


def test_drift_report_renders(tmp_path: Path) -> None:
    world = make_world(n_users=400, n_items=120, n_days=5, seed=5, last_day_click_scale=0.4)
    path = tmp_path / "drift" / "2026-10-05.html"
    result = run_drift_report(
        world["interactions"],
        world["user_features"],
        world["item_features"],
        MonitoringSettings(),
        html_path=path,
    )
    text = visible_text(chromium_dump_dom(path, tmp_path, CHROMIUM))

    for title in ("Dataset Drift", "Data Drift Summary", "Share of Drifted Columns"):
        assert title in text
    n_drifted = len(result.drifted_columns)
    # Evidently's own summary line must agree with the result we store
    assert f"({n_drifted} out of {len(result.columns)})" in text
    for column in result.columns:
        assert column.column in text
    assert_charts_load(path, result.charts, {"columns"}, tmp_path)


def test_quality_report_renders(world, tmp_path: Path) -> None:
    recs, relevant = make_recs(world, seed=6)
    inter = world["interactions"]
    path = tmp_path / "quality.html"
    result = run_quality_report(
        recs, relevant, inter[inter["split"] == "train"], world["item_features"], 10, path
    )
    text = visible_text(chromium_dump_dom(path, tmp_path, CHROMIUM))

    for title in ("NDCG (top-10)", "Precision (top-10)", "Recall (top-10)", "MAP (top-10)", "MRR (top-10)"):
        assert title in text
    for title in ("Hit Rate (top-10)", "Personalization (top-10)", "Diversity (top-10)", "Novelty (top-10)"):
        assert title in text
    assert "Serendipity (top-10)" in text
    # the NDCG counter shows our figure rounded to 3 places
    assert f"{result.metrics['ndcg@10']:.3f}" in text
    assert_charts_load(path, result.charts, {"metrics_at_k", "metrics"}, tmp_path)


def test_fairness_report_renders(world, tmp_path: Path) -> None:
    recs, relevant = make_recs(world, group_quality={"55+": 0.0}, independent_penalty=1.5, seed=7)
    path = tmp_path / "fairness" / "2026-10-08.html"
    report = run_fairness_report(
        recs, relevant, world["user_features"], world["item_features"], MonitoringSettings(min_group_users=5),
        html_path=path,
    )  # fmt: skip
    text = visible_text(chromium_dump_dom(path, tmp_path, CHROMIUM))
    for title in SECTION_TITLES:
        assert title in text
    assert "FAIL" in text and report.result.message() in re.sub(r"\s+", " ", text)
    assert f"{report.result.gini:.4f}" in text

    assert report.evidently_html_path is not None
    evidently_text = visible_text(chromium_dump_dom(report.evidently_html_path, tmp_path, CHROMIUM))
    assert "Item bias by 'creator_group'" in evidently_text and "Item bias by 'category'" in evidently_text
    assert_charts_load(path, report.charts, {"exposure", "ndcg_by_group", "rerank_tradeoff"}, tmp_path)


def test_the_render_check_catches_script_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><h1>ok</h1><script>notDefinedAnywhere();</script></body></html>")
    with pytest.raises(AssertionError, match="notDefinedAnywhere"):
        chromium_dump_dom(page, tmp_path, CHROMIUM)


def test_the_image_check_catches_a_missing_picture(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    good = tmp_path / "good.png"
    metric_bars_chart({"a": 0.5}, good, "one bar")
    page.write_text('<html><body><img src="good.png"><img src="missing.png"></body></html>')
    sizes = chromium_image_sizes(page, tmp_path, CHROMIUM)
    assert sizes["missing.png"] == (0, 0)
    assert sizes["good.png"][0] > 100
