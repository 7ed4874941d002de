"""PNG charts of the monitoring reports (matplotlib), written next to the HTML pages that embed them.

Each chart function takes the figures a report already computed, draws them with matplotlib's object API
(``Figure`` + Agg: no pyplot, no global backend, safe in Dagster's worker processes) and saves one small PNG.
Labels come from the data (group names, column names), so mathtext is turned off: a ``$`` in a group name is
drawn as a dollar sign, not parsed as a formula.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

DPI = 100
_STYLE = {"text.parse_math": False, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
COLORS = ("#3a6ea5", "#c0504d", "#9bbb59", "#8064a2", "#f79646", "#4bacc6", "#7f7f7f", "#000000")


@dataclass(frozen=True)
class Chart:
    """One saved chart: where it is and what it shows (the HTML caption and alt text)."""

    name: str
    path: Path
    caption: str

    def figure_html(self) -> str:
        """An ``<figure>`` with the PNG (a relative link: the PNG sits beside the page) and its caption."""
        caption = html.escape(self.caption)
        return (
            f'<figure class="chart"><img src="{html.escape(self.path.name, quote=True)}" '
            f'alt="{html.escape(self.caption, quote=True)}"><figcaption>{caption}</figcaption></figure>'
        )


def chart_path(html_path: Path, name: str) -> Path:
    """The PNG beside a report: ``reports/fairness/2026-10-08.html`` -> ``.../2026-10-08_<name>.png``."""
    return html_path.with_name(f"{html_path.stem}_{name}.png")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def exposure_chart(exposure: pd.DataFrame, k: int, path: Path) -> Path:
    """Grouped bars per creator group: share of top-k exposure against share of the catalog (and relevant)."""
    series = [("exposure_share", f"top-{k} exposure"), ("catalog_share", "catalog")]
    if "relevant_share" in exposure:
        series.append(("relevant_share", "relevant (test)"))
    groups = exposure["group"].astype(str).tolist()
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 0.9 + 0.55 * len(groups) * len(series) / 2))
        ax = fig.add_subplot()
        height = 0.8 / len(series)
        y = np.arange(len(groups))
        for i, (column, label) in enumerate(series):
            values = exposure[column].to_numpy(float)
            bars = ax.barh(
                y + (i - (len(series) - 1) / 2) * height, values, height, label=label, color=COLORS[i]
            )
            ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
        ax.set_yticks(y, groups)
        ax.invert_yaxis()
        ax.set_xlabel("share")
        ax.set_xlim(0, min(1.0, max(float(exposure[[c for c, _ in series]].to_numpy().max()) * 1.25, 0.05)))
        ax.set_title(f"Exposure share vs catalog share per creator group (top-{k})")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(series), frameon=False)
        return _save(fig, path)


def tradeoff_chart(rows: pd.DataFrame, k: int, path: Path) -> Path:
    """The re-ranking trade-off: NDCG@k lost against the share of the exposure gap closed, one point per strength.

    ``rows`` is :func:`models.monitoring.fairness_report.mitigation_frame` (strength, ndcg_lost, gap_closed_pct).
    """
    rows = rows.sort_values("strength")
    x = rows["gap_closed_pct"].to_numpy(float)
    y = rows["ndcg_lost"].to_numpy(float)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        ax.plot(x, y, "-o", color=COLORS[0])
        # strength 0 is the model's own order: nothing lost, nothing closed (the reference point)
        ax.plot([0], [0], "s", color="#999")
        ax.annotate("model's order", (0, 0), textcoords="offset points", xytext=(5, -12), fontsize=7)
        for strength, xi, yi in zip(rows["strength"], x, y, strict=True):
            ax.annotate(
                f"strength {strength:g}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=7
            )
        ax.axhline(0, color="#999", linewidth=0.8)
        ax.set_xlabel("exposure gap closed (%)")
        ax.set_ylabel(f"NDCG@{k} lost")
        ax.set_title("Exposure-aware re-ranking: what closing the exposure gap costs")
        ax.margins(x=0.15, y=0.2)
        return _save(fig, path)


def ndcg_by_group_chart(quality: Mapping[str, pd.DataFrame], k: int, path: Path) -> Path:
    """NDCG@k per user group, one panel per attribute, with 95 % confidence intervals as error bars."""
    attributes = list(quality)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3.4 * max(len(attributes), 1), 3.4), layout="constrained")
        axes = fig.subplots(1, max(len(attributes), 1), squeeze=False)[0]
        for ax, attribute in zip(axes, attributes, strict=False):
            table = quality[attribute].dropna(subset=[f"ndcg@{k}"])
            x = np.arange(len(table))
            err = table.get(f"ndcg@{k}_ci95", pd.Series(np.nan, index=table.index)).fillna(0.0)
            ax.bar(x, table[f"ndcg@{k}"], yerr=err, capsize=3, color=COLORS[0], alpha=0.85)
            labels = [
                f"{g}\nn={n}" for g, n in zip(table["group"].astype(str), table["n_users"], strict=True)
            ]
            ax.set_xticks(x, labels, fontsize=7)
            ax.set_title(f"by {attribute}")
            ax.set_ylabel(f"NDCG@{k}")
        fig.suptitle(f"NDCG@{k} per user group (error bars: 95 % CI of the mean)")
        return _save(fig, path)


def metric_curves_chart(curves: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """Metric@1..k curves (NDCG, precision, recall, hit rate ...) of one model, one line per metric."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        for i, (name, values) in enumerate(curves.items()):
            ax.plot(
                np.arange(1, len(values) + 1),
                values,
                "-o",
                markersize=3,
                label=name,
                color=COLORS[i % len(COLORS)],
            )
        ax.set_xlabel("k (list length)")
        ax.set_ylabel("value @k")
        ax.set_title(title)
        ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _save(fig, path)


def metric_bars_chart(values: Mapping[str, float], path: Path, title: str) -> Path:
    """Horizontal bars of named figures (the quality report's metrics at k)."""
    names = list(values)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 0.6 + 0.3 * len(names)))
        ax = fig.add_subplot()
        bars = ax.barh(np.arange(len(names)), [values[n] for n in names], color=COLORS[0])
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=7)
        ax.set_yticks(np.arange(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.margins(x=0.15)
        return _save(fig, path)


def model_comparison_chart(table: pd.DataFrame, metrics: Sequence[str], path: Path, title: str) -> Path:
    """Grouped bars: each model of the offline evaluation (rows of ``table``) on each metric column."""
    models = table["model"].astype(str).tolist()
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        width = 0.8 / max(len(models), 1)
        x = np.arange(len(metrics))
        for i, model in enumerate(models):
            values = table.iloc[i][list(metrics)].to_numpy(float)
            offset = (i - (len(models) - 1) / 2) * width
            ax.bar(x + offset, values, width, label=model, color=COLORS[i % len(COLORS)])
        ax.set_xticks(x, list(metrics))
        ax.set_ylabel("held-out value")
        ax.set_title(title)
        ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _save(fig, path)


def drift_chart(columns: pd.DataFrame, path: Path, title: str) -> Path:
    """Per column: the drift test's score against its threshold, drifted columns in red."""
    columns = columns.reset_index(drop=True)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 0.8 + 0.28 * len(columns)))
        ax = fig.add_subplot()
        y = np.arange(len(columns))
        colors = [COLORS[1] if d else COLORS[0] for d in columns["drifted"]]
        ax.barh(y, columns["score"].to_numpy(float), color=colors)
        ax.scatter(
            columns["threshold"].to_numpy(float), y, marker="|", s=200, color="#222", label="threshold"
        )
        ax.set_yticks(y, [f"{c} ({s})" for c, s in zip(columns["column"], columns["stattest"], strict=True)])
        ax.invert_yaxis()
        ax.set_xlabel("drift score (red: drifted)")
        ax.set_title(title)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _save(fig, path)


_FIGURE_CSS = (
    "<style>figure.chart{margin:1em 0;} figure.chart img{max-width:100%;border:1px solid #e4e4e4;}"
    " figure.chart figcaption{color:#555;font-size:.9em;}</style>"
)


def figures_section(charts: Sequence[Chart], heading: str = "Charts") -> str:
    """A ``<section>`` holding the charts' figures (the styles inline, for pages we did not write)."""
    parts = "".join(c.figure_html() for c in charts)
    return (
        f'<section class="recgen-charts" style="font-family:sans-serif;margin:1em 2em">{_FIGURE_CSS}'
        f"<h2>{html.escape(heading)}</h2>{parts}</section>"
    )


def embed_in_page(path: Path, charts: Sequence[Chart], heading: str = "Charts") -> Path:
    """Insert the charts' section at the top of an HTML page we did not write (Evidently's), after ``<body>``."""
    if not charts:
        return path
    text = path.read_text(encoding="utf-8")
    match = re.search(r"<body[^>]*>", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{path}: no <body> tag to put the charts in")
    section = figures_section(charts, heading)
    path.write_text(text[: match.end()] + section + text[match.end() :], encoding="utf-8")
    return path
