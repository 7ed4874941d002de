"""The raw snapshot: the configured dataset written as Parquet parts that the ingest step loads.

Layout: ``settings.raw_dir/<table>/part-NNNNN.parquet`` for users, items and events, plus ``manifest.json``
(dataset, row counts, creation time, simulator settings). A new snapshot is written into a temporary folder
beside ``raw_dir`` and swapped in by renames, so readers see the old snapshot or the new one, never a mix of
parts from both (between the two renames there is, for an instant, no ``raw_dir``).

Columns are stored with their schema types (VARCHAR -> string, TIMESTAMP -> timestamp[us], INTEGER -> int32,
DOUBLE -> float64). A loader column that kept unparseable raw values is stored as strings instead (parsed
values formatted as text), so ingest can cast it and quarantine the rows that fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.data.loaders import load_dataset
from models.data.schema import RAW_TABLES, TableSchema
from models.data.simulator import ARROW_TYPES, RawDataset, simulate_to_parquet
from models.settings import Settings

ROWS_PER_PART = 1_000_000


def _column_to_arrow(series: pd.Series, duckdb_type: str) -> pa.Array:
    """The column with its schema type, or as text when it holds values of another type."""
    target = ARROW_TYPES[duckdb_type]
    if pd.api.types.is_datetime64_any_dtype(series):
        series = series.astype("datetime64[us]")
    try:
        return pa.array(series, type=target, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        text = series.map(lambda v: None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))
        return pa.array(text, type=pa.string(), from_pandas=True)


def frame_to_arrow(frame: pd.DataFrame, table: TableSchema) -> pa.Table:
    """A raw-schema DataFrame as an Arrow table (missing columns become all-null)."""
    arrays, fields = [], []
    for col in table.columns:
        series = frame[col.name] if col.name in frame else pd.Series([None] * len(frame), dtype=object)
        array = _column_to_arrow(series.reset_index(drop=True), col.duckdb_type)
        arrays.append(array)
        fields.append(pa.field(col.name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_dataset_parquet(
    dataset: RawDataset, out_dir: Path, rows_per_part: int = ROWS_PER_PART
) -> dict[str, list[Path]]:
    """Write an in-memory dataset as ``out_dir/<table>/part-NNNNN.parquet`` (at least one part per table)."""
    files: dict[str, list[Path]] = {}
    for name, frame in dataset.tables().items():
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        # Convert the whole frame once so every part of a table has the same column types.
        table = frame_to_arrow(frame, RAW_TABLES[name])
        files[name] = []
        for part, start in enumerate(range(0, max(table.num_rows, 1), rows_per_part)):
            path = folder / f"part-{part:05d}.parquet"
            pq.write_table(table.slice(start, rows_per_part), path, compression="zstd")
            files[name].append(path)
    return files


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames (each atomic on one filesystem)."""
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.rename(target, retired)
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def write_raw_snapshot(settings: Settings) -> dict[str, list[Path]]:
    """Write the configured dataset to ``settings.raw_dir`` (replacing the last snapshot); parts per table."""
    target = Path(settings.raw_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if settings.dataset == "simulator":
            files = simulate_to_parquet(settings.simulator, staging)
        else:
            files = write_dataset_parquet(load_dataset(settings), staging)
        manifest = {
            "dataset": settings.dataset,
            "dataset_path": str(settings.dataset_path) if settings.dataset_path else None,
            "created_at": datetime.now(UTC).isoformat(),
            "rows": {
                name: sum(pq.ParquetFile(p).metadata.num_rows for p in paths) for name, paths in files.items()
            },
            "simulator": settings.simulator.model_dump() if settings.dataset == "simulator" else None,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {name: [target / p.relative_to(staging) for p in paths] for name, paths in files.items()}


def snapshot_key(settings: Settings) -> str:
    """What the snapshot is made of: the dataset, and the simulator's settings or the dataset files' names,
    sizes and modification times. The same key means the same snapshot, so ingest can skip reloading it."""
    parts: dict[str, object] = {"dataset": settings.dataset}
    if settings.dataset == "simulator":
        parts["simulator"] = settings.simulator.model_dump(mode="json")
    else:
        root = Path(settings.dataset_path or "").resolve()
        parts["path"] = str(root)
        parts["files"] = sorted(
            (str(p.relative_to(root)), st.st_size, st.st_mtime_ns)
            for p in root.rglob("*")
            if p.is_file() and (st := p.stat())
        )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(settings: Settings) -> dict[str, object]:
    """The manifest of the current snapshot (dataset, row counts, creation time)."""
    return json.loads((Path(settings.raw_dir) / "manifest.json").read_text())


__all__ = ["frame_to_arrow", "read_manifest", "snapshot_key", "write_dataset_parquet", "write_raw_snapshot"]
