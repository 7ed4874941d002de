"""A file-based model registry with a DuckDB mirror (``ml.registry``).

Layout: ``<artifacts_dir>/<name>/<version>/`` holds the model's own files (weights as torch ``state_dict``s,
tables as Parquet) plus ``meta.json`` (name, version, created_at, data_snapshot_id, path), ``config.json``,
``feature_schema.json`` and ``metrics.json``. ``<artifacts_dir>/<name>/champion.json`` names the champion
version. The files are the source of truth, so the service can load a champion without the warehouse lock;
every change is mirrored into ``ml.registry`` (name, version, created_at, metrics JSON, path, data_snapshot_id,
is_champion) for SQL and the UI.

Promotion rule: a new version becomes champion when its metric beats the champion's. Metrics measured on
different data are not comparable, so when the champion was evaluated on another data snapshot the newer
version is promoted (otherwise a model trained on old data — missing every new item — could never be replaced).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from models.data import warehouse
from models.settings import Settings

REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS ml.registry (
    name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    metrics JSON,
    path VARCHAR NOT NULL,
    data_snapshot_id VARCHAR,
    is_champion BOOLEAN NOT NULL,
    PRIMARY KEY (name, version)
)
"""


@dataclass(frozen=True)
class ArtifactVersion:
    """One registered version: where it lives and what it was measured at."""

    name: str
    version: str
    path: Path
    created_at: str
    metrics: dict[str, float]
    data_snapshot_id: str
    config: dict[str, Any]

    def metric(self, key: str) -> float:
        value = self.metrics.get(key)
        return float(value) if value is not None else float("nan")


def data_snapshot_id(stats: Mapping[str, tuple[int, object]]) -> str:
    """Id of the data a model saw: a hash of each mart's (row count, max timestamp)."""
    canonical = json.dumps({k: [int(v[0]), str(v[1])] for k, v in sorted(stats.items())})
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def marts_snapshot_stats(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, object]]:
    """(row count, max event/publish time) of the marts the models read."""
    queries = {
        "interactions": "select count(*), max(event_ts) from marts.interactions",
        "user_histories": "select count(*), max(event_ts) from marts.user_histories",
        "training_samples": "select count(*), max(event_ts) from marts.training_samples",
        "item_features": "select count(*), max(published_at) from marts.item_features",
        "user_features": "select count(*), max(last_event_ts) from marts.user_features",
    }
    out: dict[str, tuple[int, object]] = {}
    for name, sql in queries.items():
        row = con.execute(sql).fetchone()
        out[name] = (int(row[0]), row[1]) if row else (0, None)
    return out


def frames_snapshot_stats(frames: Mapping[str, pd.DataFrame]) -> dict[str, tuple[int, object]]:
    """The same statistics as :func:`marts_snapshot_stats`, from mart DataFrames."""
    ts_col = {"item_features": "published_at", "user_features": "last_event_ts"}
    out: dict[str, tuple[int, object]] = {}
    for name in ("interactions", "user_histories", "training_samples", "item_features", "user_features"):
        frame = frames[name]
        col = ts_col.get(name, "event_ts")
        out[name] = (len(frame), pd.to_datetime(frame[col]).max() if len(frame) else None)
    return out


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    return str(value)


def _clean_metrics(metrics: Mapping[str, object]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        out[key] = None if math.isnan(number) else number
    return out


class ModelRegistry:
    """Versioned artifact directories under ``root`` with a champion alias per model name."""

    def __init__(self, root: Path, database: Path | None = None) -> None:
        self.root = Path(root)
        self.database = Path(database) if database is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry under ``settings.artifacts_dir``, mirrored into ``settings.database``."""
        return cls(settings.artifacts_dir, settings.database)

    def register(
        self,
        name: str,
        write: Callable[[Path], None],
        *,
        metrics: Mapping[str, object],
        config: Mapping[str, object] | None = None,
        feature_schema: Mapping[str, object] | None = None,
        data_snapshot_id: str = "",
    ) -> ArtifactVersion:
        """Create a new version: ``write(path)`` stores the model files, the registry adds the metadata."""
        created = datetime.now(UTC).replace(tzinfo=None)
        version = (
            f"{created:%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"  # sortable by time, unique across processes
        )
        path = self.root / name / version
        tmp = path.with_name(path.name + ".tmp")
        tmp.mkdir(parents=True)
        write(tmp)
        meta = {
            "name": name,
            "version": version,
            "created_at": created.isoformat(),
            "data_snapshot_id": data_snapshot_id,
            "path": str(path),
        }
        clean = _clean_metrics(metrics)
        for filename, content in (
            ("meta.json", meta),
            ("config.json", dict(config or {})),
            ("feature_schema.json", dict(feature_schema or {})),
            ("metrics.json", clean),
        ):
            (tmp / filename).write_text(json.dumps(content, indent=2, default=_json_default))
        tmp.rename(path)  # a version directory is complete or absent
        artifact = self.get(name, version)
        self._mirror(artifact, is_champion=False)
        return artifact

    def get(self, name: str, version: str) -> ArtifactVersion:
        """A registered version by name and version."""
        path = self.root / name / version
        meta = json.loads((path / "meta.json").read_text())
        return ArtifactVersion(
            name=name,
            version=version,
            path=path,
            created_at=meta["created_at"],
            metrics=json.loads((path / "metrics.json").read_text()),
            data_snapshot_id=meta.get("data_snapshot_id", ""),
            config=json.loads((path / "config.json").read_text()),
        )

    def versions(self, name: str) -> list[ArtifactVersion]:
        """All complete versions of ``name``, oldest first."""
        folder = self.root / name
        if not folder.exists():
            return []
        return [
            self.get(name, p.name)
            for p in sorted(folder.iterdir())
            if p.is_dir() and (p / "meta.json").exists()
        ]

    def latest(self, name: str) -> ArtifactVersion | None:
        """The most recently registered version (None when there is none)."""
        found = self.versions(name)
        return found[-1] if found else None

    def champion(self, name: str) -> ArtifactVersion | None:
        """The current champion (None when none was promoted yet)."""
        alias = self.root / name / "champion.json"
        if not alias.exists():
            return None
        return self.get(name, json.loads(alias.read_text())["version"])

    def load_champion(self, name: str) -> ArtifactVersion:
        """The champion, or an error saying that the pipeline has not produced one yet."""
        found = self.champion(name)
        if found is None:
            raise FileNotFoundError(
                f"no champion for model {name!r} under {self.root}: run the training pipeline first"
            )
        return found

    def promote_if_better(self, name: str, version: str, metric: str = "ndcg@10") -> bool:
        """Make ``version`` the champion if its ``metric`` beats the champion's (see the module rule); True if moved."""
        candidate = self.get(name, version)
        current = self.champion(name)
        new_value = candidate.metric(metric)
        if current is not None and current.version == version:
            return True
        if current is not None and current.data_snapshot_id == candidate.data_snapshot_id:
            old_value = current.metric(metric)
            if math.isnan(new_value) or (not math.isnan(old_value) and new_value <= old_value):
                return False
        self.promote(name, version, metric)
        return True

    def promote(self, name: str, version: str, metric: str = "ndcg@10") -> None:
        """Make ``version`` the champion whatever its metric (for a caller that knows the metrics not comparable)."""
        candidate = self.get(name, version)
        current = self.champion(name)
        if current is not None and current.version == version:
            return
        new_value = candidate.metric(metric)
        alias = self.root / name / "champion.json"
        tmp = alias.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"version": version, metric: None if math.isnan(new_value) else new_value}))
        tmp.replace(alias)  # atomic: readers see the old or the new champion, never a partial file
        if current is not None:
            self._mirror(current, is_champion=False)
        self._mirror(candidate, is_champion=True)

    def _mirror(self, artifact: ArtifactVersion, is_champion: bool) -> None:
        """Upsert the version's row into ``ml.registry`` (skipped when the registry has no database)."""
        if self.database is None:
            return
        with warehouse.connect(self.database) as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS ml")
            con.execute(REGISTRY_DDL)
            if is_champion:
                con.execute("UPDATE ml.registry SET is_champion = false WHERE name = ?", [artifact.name])
            con.execute(
                "DELETE FROM ml.registry WHERE name = ? AND version = ?", [artifact.name, artifact.version]
            )
            con.execute(
                "INSERT INTO ml.registry VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    artifact.name,
                    artifact.version,
                    pd.Timestamp(artifact.created_at).to_pydatetime(),
                    json.dumps(artifact.metrics),
                    str(artifact.path),
                    artifact.data_snapshot_id,
                    is_champion,
                ],
            )
