"""The report charts: real PNGs beside the page, labels from the data drawn literally, captions escaped."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

from models.monitoring.charts import Chart, chart_path, embed_in_page, exposure_chart, figures_section
from models.monitoring.fairness import evaluate_fairness
from models.monitoring.fairness_report import fairness_charts, fairness_html
from models.monitoring.quality import QualityResult, quality_charts
from tests.models.monitoring.conftest import make_recs


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_chart_path_sits_beside_the_page() -> None:
    assert chart_path(Path("/r/fairness/2026-10-08.html"), "exposure") == Path(
        "/r/fairness/2026-10-08_exposure.png"
    )


def test_group_names_with_markup_and_dollars_are_drawn_and_escaped(tmp_path: Path) -> None:
    exposure = pd.DataFrame(
        {
            "group": ["<script>alert(1)</script>", "$big$ studios"],
            "exposure_share": [0.2, 0.8],
            "catalog_share": [0.5, 0.5],
        }
    )
    # labels come from the data: markup and "$" (mathtext is off) are drawn as text
    path = exposure_chart(exposure, 10, tmp_path / "x_exposure.png")
    width, height = png_size(path)
    assert 300 < width < 1200 and 150 < height < 900  # small enough to embed, big enough to read
    chart = Chart("exposure", path, 'creator "<b>" groups & more')
    section = figures_section([chart])
    assert "<b>" not in section and "&lt;b&gt;" in section and "&amp; more" in section
    assert 'src="x_exposure.png"' in section


def test_fairness_page_embeds_its_charts_and_escapes_group_names(world, tmp_path: Path) -> None:
    recs, relevant = make_recs(world, seed=2)
    users = world["user_features"].copy()
    users["user_group"] = users["user_group"].replace({"55+": "<script>x()</script>"})
    result = evaluate_fairness(recs, relevant, users, world["item_features"], 10, 0.1, 0.1, 5)
    page = tmp_path / "2026-10-08.html"
    charts = fairness_charts(result, page)
    assert [c.name for c in charts] == ["exposure", "ndcg_by_group"]  # no re-ranking sweep ran: no curve
    text = fairness_html(result, None, None, charts)
    assert "<script>" not in text and "&lt;script&gt;x()&lt;/script&gt;" in text
    for chart in charts:
        assert f'<img src="{chart.path.name}"' in text and chart.path.exists()


def test_embed_in_page_puts_the_charts_after_body(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text('<html><head></head><body class="x"><div id="root"></div></body></html>')
    embed_in_page(page, [Chart("c", tmp_path / "p_c.png", "a chart")])
    text = page.read_text()
    assert text.index('<body class="x">') < text.index('<img src="p_c.png"') < text.index('<div id="root">')
    page.write_text("<html>no body</html>")
    with pytest.raises(ValueError, match="no <body> tag"):
        embed_in_page(page, [Chart("c", tmp_path / "p_c.png", "a chart")])


def test_quality_charts_compare_the_evaluated_models_when_given(tmp_path: Path) -> None:
    result = QualityResult(k=3, metrics={"ndcg@3": 0.5, "novelty": 4.2}, curves={"ndcg@3": [0.2, 0.4, 0.5]})
    evaluation = pd.DataFrame(
        {"model": ["popularity", "full_stack"], "ndcg@10": [0.07, 0.09], "recall@20": [0.18, 0.22]}
    )
    charts = quality_charts(result, tmp_path / "q.html", evaluation)
    assert [c.name for c in charts] == ["metrics_at_k", "metrics", "models"]
    assert all(png_size(c.path)[0] > 300 for c in charts)
    # no evaluation table, no comparison chart
    assert [c.name for c in quality_charts(result, tmp_path / "r.html")] == ["metrics_at_k", "metrics"]
