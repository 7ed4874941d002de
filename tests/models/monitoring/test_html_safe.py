"""Values handed to Evidently cannot close the <script> block its pages embed them in."""

from __future__ import annotations

import pandas as pd

from models.monitoring.html_safe import html_safe


def test_string_values_are_escaped_injectively_and_others_kept():
    frame = pd.DataFrame({"category": ["</script><script>alert(1)</script>", "a & b", None], "n": [1, 2, 3]})
    out = html_safe(frame, ["category", "missing"])
    assert out["category"].tolist()[:2] == [
        "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;",
        "a &amp; b",
    ]
    assert out["category"].isna().tolist() == [False, False, True] and out["n"].tolist() == [1, 2, 3]
    assert frame["category"][0].startswith("</script>")  # the caller's frame is left as it was
    assert out["category"].nunique() == frame["category"].nunique()  # distinct values stay distinct


def test_drift_categories_are_escaped_before_evidently_sees_them():
    """The drift report hands Evidently escaped category values (the page embeds them in a script block)."""
    from models.monitoring.drift import _as_evidently_types

    frame = pd.DataFrame({"impression_category": ["<script>x</script>", "news"], "user_ctr": [0.1, 0.2]})
    out = _as_evidently_types(frame, ["impression_category", "user_ctr"])
    assert out["impression_category"].tolist() == ["&lt;script&gt;x&lt;/script&gt;", "news"]
