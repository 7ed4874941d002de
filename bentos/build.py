"""Build the recgen bento with the venv's ``bentoml`` CLI (the same command as ``make bento``).

The build runs as a subprocess: it imports the service module, and keeping that out of the calling process
(a Dagster step, a test) keeps torch, BentoML's import-time configuration and the bento store's environment
(``BENTOML_HOME``) separate from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BENTOS_DIR = Path(__file__).resolve().parent
BENTOFILE = BENTOS_DIR / "bentofile.yaml"
BUILD_CONTEXT = BENTOS_DIR.parent  # the repository root: the bento includes bentos/ and models/
LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")  # Kubernetes-style label values, as BentoML stores labels


@dataclass(frozen=True)
class BuiltBento:
    """A bento in the local store."""

    tag: str
    path: Path
    seconds: float


def bentoml_executable() -> str:
    """The ``bentoml`` beside this interpreter (the venv's), else the one on PATH."""
    exe = Path(sys.prefix) / "bin" / "bentoml"
    return str(exe) if exe.exists() else "bentoml"


def _run(args: list[str], env: Mapping[str, str], timeout_s: float) -> str:
    proc = subprocess.run(
        [bentoml_executable(), *args],
        cwd=BENTOS_DIR,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"bentoml {' '.join(args[:1])} failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout


def build_bento(
    labels: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None, timeout_s: float = 600.0
) -> BuiltBento:
    """``bentoml build -f bentos/bentofile.yaml <repo root>`` with ``labels``; returns the tag and store path."""
    env = dict(env or {})
    args = ["build", "-f", str(BENTOFILE), str(BUILD_CONTEXT), "--output", "tag"]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={LABEL_VALUE.sub('-', str(value))[:63]}"]
    started = time.perf_counter()
    out = _run(args, env, timeout_s)
    match = re.search(r"__tag__:(\S+)", out)
    if match is None:
        raise RuntimeError(f"bentoml build printed no tag:\n{out[-2000:]}")
    tag = match.group(1)
    path = Path(_run(["get", tag, "--output", "path"], env, timeout_s).strip())
    return BuiltBento(tag=tag, path=path, seconds=round(time.perf_counter() - started, 3))
