"""Text values handed to Evidently are made safe for the HTML pages it writes.

Evidently writes a report's data as JSON inside a ``<script>`` block of the page and does not escape ``</`` in
it: a category (or id) named ``</script><script>...`` closes the block and runs as script in the browser of
whoever opens the report (found by the hostile catalog of ``tests/integration/test_injection.py``). Such values
are HTML-escaped before Evidently sees them: an injective map, so counts, distributions and drift tests are the
same, and the charts show the entities as the original characters.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import pandas as pd


def html_safe(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A copy of ``frame`` whose string values in ``columns`` are HTML-escaped (``<`` becomes ``&lt;``)."""
    out = frame.copy()
    for column in columns:
        if column in out.columns:
            out[column] = out[column].map(lambda v: html.escape(v, quote=False) if isinstance(v, str) else v)
    return out
