"""`make dev` as the README says, from a shell whose PATH does not hold the venv: the code location loads.

The UI is started exactly as a newcomer starts it (`make dev`, the port moved to a free loopback one), under its
own process group, with the venv's `bin/` removed from PATH and no VIRTUAL_ENV. Dagster's GraphQL API is then
asked for the workspace: the `recgen` location must be LOADED with no error and list every asset, asset check,
schedule and sensor that `orchestration.definitions.defs` declares. Before the fix, the location failed to
load here with "The dbt executable 'dbt' was not found on PATH".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
          ... on RepositoryLocation {
            repositories {
              name
              assetNodes {
                assetKey { path }
                assetChecksOrError { ... on AssetChecks { checks { name } } }
              }
              schedules { name }
              sensors { name }
            }
          }
        }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _newcomer_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a shell that never activated the venv: no .venv on PATH, no VIRTUAL_ENV."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "DAGSTER_HOME"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["RECGEN_HOME"] = str(tmp_path / "home")
    env["RECGEN_DUCKDB_PATH"] = str(tmp_path / "home" / "recgen.duckdb")
    return env


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = tmp_path / "dagster-dev.log"
    env = _newcomer_env(tmp_path)
    assert not any(".venv" in p for p in env["PATH"].split(os.pathsep))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                "make",
                "--no-print-directory",
                "dev",
                f"DEV_PORT={port}",
                f"DAGSTER_HOME={tmp_path / 'dagster_home'}",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # dagster dev ignores signals sent to it alone; stop the whole group
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"make dev exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not answer in 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url, log
    finally:
        with_group = os.getpgid(proc.pid)
        os.killpg(with_group, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(with_group, signal.SIGKILL)
            proc.wait(timeout=10)


def _workspace(url: str) -> dict:
    """The `recgen` location entry, once the webserver has finished loading it (LOADING -> LOADED)."""
    deadline = time.monotonic() + 240
    while True:
        answer = httpx.post(f"{url}/graphql", json={"query": WORKSPACE_QUERY}, timeout=60).json()
        assert "errors" not in answer, answer
        workspace = answer["data"]["workspaceOrError"]
        assert workspace["__typename"] == "Workspace", workspace
        entries = {e["name"]: e for e in workspace["locationEntries"]}
        entry = entries.get("recgen") or next(iter(entries.values()), None)
        if entry is not None and entry["loadStatus"] == "LOADED":
            return entry
        if time.monotonic() > deadline:
            pytest.fail(f"the code location did not load in 240 s: {entries}")
        time.sleep(2)


def test_make_dev_loads_the_code_location_without_the_venv_on_path(dagster_dev: tuple[str, Path]) -> None:
    from orchestration.definitions import defs

    url, log = dagster_dev
    entry = _workspace(url)
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", (
        f"code location failed to load: {location.get('message')}\n{location.get('stack')}\n"
        f"{log.read_text()[-3000:]}"
    )
    (repository,) = location["repositories"]

    graph = defs.resolve_asset_graph()
    declared_assets = {"/".join(key.path) for key in graph.get_all_asset_keys()}
    declared_checks = {key.name for key in graph.asset_check_keys}
    served_assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    served_checks = {
        check["name"]
        for node in repository["assetNodes"]
        for check in (node.get("assetChecksOrError") or {}).get("checks", [])
    }
    assert declared_assets and served_assets == declared_assets
    assert declared_checks and served_checks == declared_checks
    assert {s["name"] for s in repository["schedules"]} == {s.name for s in defs.schedules}
    assert {s["name"] for s in repository["sensors"]} == {s.name for s in defs.sensors}
