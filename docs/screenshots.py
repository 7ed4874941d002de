"""Regenerates the README's screenshots: the Dagster asset graph (`make dev`) and the fairness report.

Run after `make run` (the graph then shows every asset materialized, and the fairness report exists):

    make screenshots        # or: DAGSTER_HOME=$PWD/.dagster_home .venv/bin/python docs/screenshots.py

It starts `dagster dev` as `make dev` does (the venv's own `dagster`, `-m orchestration.definitions`, on
127.0.0.1; a free port instead of 3000 so a running `make dev` is left alone), waits until Dagster's GraphQL
says the code location loaded, has headless Chromium (Debian's `chromium`, as the report tests use) take
the asset graph page and the latest `reports/fairness/<date>.html`, then stops `dagster dev` (it runs in its
own process group: `dagster dev` ignores a plain SIGTERM/SIGINT sent to one process only).

`dagster dev` reads a copy of `$DAGSTER_HOME` (the runs of `make run`, a few MB) whose run queue launches
nothing (`concurrency.runs.max_concurrent_runs: 0`): its daemon starts the schedules and sensors, which are on
by default, and a sensor tick must not start a retraining on your machine just because a picture was taken. The PNGs are cut
down to a 256-colour palette (Pillow, which matplotlib installs) so they stay small in git.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from models.settings import get_settings  # noqa: E402

WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


REPOSITORY_QUERY = (
    "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(port: int, query: str) -> dict:
    """POST one GraphQL query to the webserver; the decoded ``data``."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def wait_loaded(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Block until the code location is LOADED without error (raises if dagster dev exits or times out)."""
    deadline = time.monotonic() + timeout
    last = "webserver not up yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode} before the location loaded")
        try:
            entries = graphql(port, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            last = json.dumps(entries)
            if entries and all(
                e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries
            ):
                return
            errors = [
                e for e in entries if e["locationOrLoadError"] and "message" in e["locationOrLoadError"]
            ]
            if errors:
                raise RuntimeError(f"code location failed to load: {errors}")
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"code location not loaded after {timeout:.0f} s: {last}")


def chromium() -> str:
    """Debian's chromium (``make browser`` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("chromium is not installed: `make browser` (Debian package 'chromium')")
    return found


def screenshot(url: str, out: Path, width: int, height: int, wait_ms: int) -> Path:
    """Headless Chromium's screenshot of ``url`` at ``width`` x ``height``, after ``wait_ms`` of page time."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    return shrink(out)


def shrink(path: Path) -> Path:
    """Re-save the PNG with a 256-colour palette (a fraction of the size; screenshots have few colours)."""
    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def latest_fairness_report() -> Path:
    """The newest ``reports/fairness/<date>.html`` (not Evidently's page beside it)."""
    folder = get_settings().reports_dir / "fairness"
    pages = sorted(p for p in folder.glob("*.html") if not p.stem.endswith("_evidently"))
    if not pages:
        raise SystemExit(f"no fairness report in {folder}: run `make run` first")
    return pages[-1].resolve()


def preview_home(home: Path, into: Path) -> Path:
    """A copy of the Dagster instance at ``home`` whose run queue launches no run."""
    shutil.copytree(home, into)
    config_path = into / "dagster.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    config = config or {}
    config.setdefault("concurrency", {}).setdefault("runs", {})["max_concurrent_runs"] = 0
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return into


def asset_graph(out: Path, timeout: float) -> Path:
    """Start `dagster dev` like `make dev`, wait for the location, take the global asset lineage page."""
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit(
            "DAGSTER_HOME is not set: run through `make screenshots` (the instance of `make run`)"
        )
    port = free_port()
    dagster = Path(sys.executable).parent / "dagster"  # the venv's, as the Makefile's $(BIN)/dagster
    command = [
        str(dagster),
        "dev",
        "-m",
        "orchestration.definitions",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as log:
        home = preview_home(Path(os.environ["DAGSTER_HOME"]), Path(tmp) / "dagster_home")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            started = time.monotonic()
            wait_loaded(port, process, timeout)
            print(f"dagster dev on 127.0.0.1:{port}: location loaded in {time.monotonic() - started:.0f} s")
            # The UI greets a first visit on localhost with a "join the community" dialog; this is what its
            # Skip button does (the copied instance remembers it), so the page behind it is what the picture shows.
            graphql(port, "mutation SetNuxSeen { setNuxSeen }")
            path = screenshot(f"http://127.0.0.1:{port}/asset-groups", out, 1600, 900, 30_000)
            # one stage opened: the models group's assets, with their materialization status
            repo = graphql(port, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"][0]
            group_url = f"http://127.0.0.1:{port}/locations/{repo['name']}@{repo['location']['name']}/asset-groups/models"
            screenshot(group_url, out.with_name("asset_group_models.png"), 1600, 900, 30_000)
            return path
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to dagster dev's whole process group (webserver, daemon, code server); SIGKILL after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> None:
    """Write docs/img/asset_graph.png and docs/img/fairness_report.png (or ``--out``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the code location")
    parser.add_argument("--only", choices=["graph", "fairness"], help="take one of the two")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "fairness"):
        page = latest_fairness_report()
        path = screenshot(page.as_uri(), args.out / "fairness_report.png", 1100, 2900, 5_000)
        print(f"{path}: {page.name}, {path.stat().st_size // 1024} KB")
    if args.only in (None, "graph"):
        path = asset_graph(args.out / "asset_graph.png", args.timeout)
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
