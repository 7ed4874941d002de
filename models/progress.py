"""Progress lines for long loops: epoch, loss, validation metric, seconds and an estimate of the time left.

Training code in ``models/`` reports through Python logging (logger names under ``models.``); the Dagster
instance (``orchestration/dagster.yaml``: ``python_logs.managed_python_loggers``) routes those loggers into
the run's event log, so the same lines show in the Dagster UI, in ``make run``'s output and in the benchmarks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1m15s'``; ``4.04`` -> ``'4.0s'``; ``3725`` -> ``'1h02m'``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class EpochProgress:
    """Logs one line per epoch (or step block) of a loop of known length, with the time left.

    ``with EpochProgress("ranker", total=10, log=log) as progress: ... progress.step(loss=0.3, valid_ndcg=0.1)``
    writes ``ranker epoch 3/10: loss=0.3 valid_ndcg=0.1 | 4.1s (12.3s so far, ~28.7s left)``. The estimate is
    the mean time per finished step times the steps left, so early stopping only makes it pessimistic.
    """

    name: str
    total: int
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("models.progress"))
    unit: str = "epoch"
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    _last: float = field(default=0.0, init=False)
    _finished: bool = field(default=False, init=False)
    lines: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._last = self.started

    def __enter__(self) -> EpochProgress:
        self.log.info("%s: %d %ss", self.name, self.total, self.unit)
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.finish()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float:
        """Seconds left at the mean pace so far (NaN before the first step)."""
        if self.done == 0:
            return float("nan")
        return self.elapsed / self.done * max(self.total - self.done, 0)

    def step(self, figures: Mapping[str, object] | None = None, **more: object) -> str:
        """Record one finished step and log its line; returns the line (the benchmarks print it)."""
        now = time.perf_counter()
        step_seconds = now - self._last
        self._last = now
        self.done += 1
        values = {**(figures or {}), **more}
        shown = " ".join(f"{k}={_format_value(v)}" for k, v in values.items())
        line = (
            f"{self.name} {self.unit} {self.done}/{self.total}: {shown} | {format_seconds(step_seconds)} "
            f"({format_seconds(self.elapsed)} so far, ~{format_seconds(self.eta())} left)"
        )
        self.lines.append(line)
        self.log.info(line)
        return line

    def finish(self, reason: str = "") -> None:
        """Log the closing line (how many steps ran, total time, why it stopped early if it did)."""
        if self._finished:
            return
        self._finished = True
        why = f" ({reason})" if reason else ""
        self.log.info(
            "%s: %d/%d %ss in %s%s",
            self.name,
            self.done,
            self.total,
            self.unit,
            format_seconds(self.elapsed),
            why,
        )
