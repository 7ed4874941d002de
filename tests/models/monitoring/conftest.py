"""Small synthetic marts for the monitoring tests, with knobs for the shifts the reports must see.

The world: items have a category and a creator group; users have a group, a region and a favourite category.
Each day a user asks for Poisson(1) feeds; a feed shows ``slate`` items drawn with per-category weights; a user
clicks an item of their favourite category far more often, less so further down the slate. The ``last_day_*``
knobs make the last day different (a category floods the feeds, clicks drop), which the drift report must flag.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.monitoring.common import relevant_pairs
from models.settings import MonitoringSettings

CATEGORIES = ("news", "sports", "music", "food")
USER_GROUPS = ("18-34", "35-54", "55+")
START = pd.Timestamp("2026-10-01")


def make_world(
    n_users: int = 250,
    n_items: int = 80,
    n_days: int = 8,
    test_days: int = 2,
    slate: int = 6,
    seed: int = 0,
    last_day_category_weights: tuple[float, ...] | None = None,
    last_day_click_scale: float = 1.0,
) -> dict[str, pd.DataFrame]:
    """``interactions``, ``user_features`` and ``item_features`` frames with the contract's key columns."""
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{i:03d}" for i in range(n_items)])
    item_cat = np.arange(n_items) % len(CATEGORIES)
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"title {i}" for i in range(n_items)],
            "category": [CATEGORIES[c] for c in item_cat],
            "creator_id": [f"c{i % 16}" for i in range(n_items)],
            # creators 0-9 of every 16 are large, so 10/16 = 62.5 % of the catalog is "large"
            "creator_group": ["large" if i % 16 < 10 else "independent" for i in range(n_items)],
        }
    )
    user_ids = np.array([f"u{u:04d}" for u in range(n_users)])
    fav = rng.integers(0, len(CATEGORIES), n_users)
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "user_group": rng.choice(USER_GROUPS, n_users),
            "region": rng.choice(["north", "south"], n_users),
            "top_category": [CATEGORIES[c] for c in fav],
        }
    )
    frames = []
    for day in range(n_days):
        last = day == n_days - 1
        # category weights are shares of feed slots (uniform unless the last day is shifted)
        cat_weight = np.full(len(CATEGORIES), 1 / len(CATEGORIES))
        if last and last_day_category_weights is not None:
            cat_weight = np.asarray(last_day_category_weights, dtype=float)
        click_scale = last_day_click_scale if last else 1.0
        item_p = cat_weight[item_cat] / np.bincount(item_cat)[item_cat]
        item_p /= item_p.sum()
        n_requests = rng.poisson(1.0, n_users)
        req_user = np.repeat(np.arange(n_users), n_requests)
        n_req = len(req_user)
        shown = np.stack([rng.choice(n_items, slate, replace=False, p=item_p) for _ in range(n_req)])
        position = np.tile(np.arange(slate), n_req)
        user_idx = np.repeat(req_user, slate)
        item_idx = shown.ravel()
        likes = item_cat[item_idx] == fav[user_idx]
        p_click = np.where(likes, 0.45, 0.06) * click_scale / (1 + 0.25 * position)
        clicked = (rng.random(len(p_click)) < p_click).astype(int)
        dwell = np.where(
            clicked == 1,
            np.where(likes, rng.uniform(30, 90, len(likes)), rng.uniform(3, 15, len(likes))),
            0.0,
        )
        ts = (
            START
            + pd.Timedelta(days=day)
            + pd.to_timedelta(rng.integers(6 * 3600, 23 * 3600, n_req), unit="s")
        )
        frames.append(
            pd.DataFrame(
                {
                    "request_id": np.repeat([f"d{day}-r{r}" for r in range(n_req)], slate),
                    "user_id": user_ids[user_idx],
                    "item_id": item_ids[item_idx],
                    "event_ts": np.repeat(ts.to_numpy(), slate),
                    "position": position,
                    "clicked": clicked,
                    "dwell_seconds": dwell,
                }
            )
        )
    inter = pd.concat(frames, ignore_index=True)
    inter["event_date"] = inter["event_ts"].dt.normalize()
    inter["rating"] = np.nan
    test_start = START + pd.Timedelta(days=n_days - test_days)
    inter["split"] = np.where(inter["event_ts"] >= test_start, "test", "train")
    return {"interactions": inter, "user_features": users, "item_features": items}


@pytest.fixture(scope="session")
def world() -> dict[str, pd.DataFrame]:
    """The default world without a shift."""
    return make_world()


@pytest.fixture
def monitoring_settings() -> MonitoringSettings:
    """Default thresholds, with group sizes the tiny tests reach."""
    return MonitoringSettings(min_group_users=5)


def chromium_dump_dom(path: Path, tmp_path: Path, chromium: str) -> str:
    """The DOM of ``path`` after headless Chromium ran its scripts (virtual time lets the JS finish)."""
    import subprocess

    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Chromium logs the page's console as "...:CONSOLE:<line>] message"; uncaught exceptions say so
    console_errors = [
        line
        for line in result.stderr.splitlines()
        if "CONSOLE" in line and re.search("uncaught|error", line, re.IGNORECASE)
    ]
    assert not console_errors, "\n".join(console_errors)
    return result.stdout


def visible_text(dom: str) -> str:
    """The text a reader sees: the DOM without script and style contents (Evidently ships its data as JSON)."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = 0
            self.parts: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.hidden += tag in ("script", "style")

        def handle_endtag(self, tag: str) -> None:
            self.hidden -= tag in ("script", "style")

        def handle_data(self, data: str) -> None:
            if not self.hidden and data.strip():
                self.parts.append(data.strip())

    parser = _Text()
    parser.feed(dom)
    return "\n".join(parser.parts)


def make_recs(
    world: dict[str, pd.DataFrame],
    n_candidates: int = 30,
    group_quality: dict[str, float] | None = None,
    independent_penalty: float = 0.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scored candidate lists (user_id, item_id, rank, score) for test users, and their relevant items.

    A relevant item's score gets ``group_quality[user_group]`` added (how well the model serves that group);
    items of independent creators lose ``independent_penalty`` (a creator-biased model).
    """
    rng = np.random.default_rng(seed)
    inter, users, items = world["interactions"], world["user_features"], world["item_features"]
    relevant = relevant_pairs(inter, "test")
    quality = group_quality or {}
    group_of = users.set_index("user_id")["user_group"]
    independent = items.set_index("item_id")["creator_group"].eq("independent")
    item_ids = items["item_id"].to_numpy()
    rows = []
    for user, rel in relevant.groupby("user_id")["item_id"]:
        others = rng.choice(item_ids[~np.isin(item_ids, rel.to_numpy())], n_candidates, replace=False)
        candidates = np.concatenate([rel.to_numpy(), others])
        score = rng.normal(0, 1, len(candidates))
        score[: len(rel)] += quality.get(group_of[user], 2.0)
        score -= independent_penalty * independent.loc[candidates].to_numpy()
        order = np.argsort(-score)[:n_candidates]
        rows.append(
            pd.DataFrame(
                {
                    "user_id": user,
                    "item_id": candidates[order],
                    "rank": np.arange(1, len(order) + 1),
                    "score": score[order],
                }
            )
        )
    return pd.concat(rows, ignore_index=True), relevant.reset_index(drop=True)


_IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const seen = [...document.images].map((i) => [i.getAttribute("src"), i.naturalWidth, i.naturalHeight]);
  const out = document.createElement("pre");
  out.id = "recgen-image-probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


def chromium_image_sizes(path: Path, tmp_path: Path, chromium: str) -> dict[str, tuple[int, int]]:
    """Every ``<img>`` of the page as Chromium loaded it: src -> (naturalWidth, naturalHeight); 0 = not loaded.

    The page is copied beside itself (relative image links resolve the same) with a script that, on the load
    event, writes the images' natural sizes into the DOM that ``--dump-dom`` prints.
    """
    probe = path.with_name(f"probe-{path.name}")
    text = path.read_text(encoding="utf-8")
    at = text.lower().rfind("</body>")
    probe.write_text(
        text[:at] + _IMAGE_PROBE + text[at:] if at >= 0 else text + _IMAGE_PROBE, encoding="utf-8"
    )
    try:
        dom = chromium_dump_dom(probe, tmp_path, chromium)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="recgen-image-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, "the image probe did not run (no load event?)"
    return {src: (width, height) for src, width, height in json.loads(html.unescape(found.group(1)))}
