"""Ingest: the raw snapshot (simulator or a real dataset) plus inbox files land in DuckDB's ``raw`` schema."""

import shutil
from collections.abc import Iterator

import dagster as dg

from models.data.ingest import (
    IngestReport,
    ingest_inbox,
    ingest_snapshot,
    loaded_snapshot_key,
    pending_inbox_files,
    record_snapshot,
)
from models.data.sources import snapshot_key, write_raw_snapshot
from models.feedback import inbox_lock
from orchestration.resources import RecgenResource

RAW_TABLE_KEYS = {name: dg.AssetKey(["raw", name]) for name in ("users", "items", "events")}


def _table_metadata(report: IngestReport, table: str) -> dict[str, dg.MetadataValue]:
    t = report.tables[table]
    return {
        "batch_id": dg.MetadataValue.text(report.batch_id),
        "rows_in": dg.MetadataValue.int(t.rows_in),
        "rows_clean": dg.MetadataValue.int(t.rows_clean),
        "rows_quarantined": dg.MetadataValue.int(t.rows_quarantined),
        "rows_duplicate": dg.MetadataValue.int(t.rows_duplicate),
        "quarantine_reasons": dg.MetadataValue.json(t.reasons),
    }


class RawTablesConfig(dg.Config):
    """``full_reload``: reload the snapshot even when the raw tables already hold it."""

    full_reload: bool = False


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            group_name="ingest",
            kinds={"duckdb", "python"},
            description=f"raw.{name}: validated rows of the current dataset plus the inbox; rejects go to "
            "raw.quarantine",
        )
        for name, key in RAW_TABLE_KEYS.items()
    ],
    pool="duckdb",
)
def raw_tables(
    context: dg.AssetExecutionContext, config: RawTablesConfig, recgen: RecgenResource
) -> Iterator[dg.MaterializeResult]:
    """Ingest new inbox files incrementally; (re)load the dataset snapshot only when it changed.

    The raw tables always equal snapshot + every inbox file accepted so far. When the configured dataset is the
    one already loaded (same ``snapshot_key``), only the new inbox files are appended. Otherwise (first run, a
    changed dataset or simulator setting, ``full_reload``) the snapshot is rewritten and reloaded and the
    processed inbox files are replayed on top, so a reload never loses feedback. Inbox files move to
    ``inbox/processed`` once read.
    """
    settings = recgen.settings()
    key = snapshot_key(settings)
    # The snapshot folder and the inbox are shared by every run: write and move them under the warehouse lock.
    with recgen.connect() as con:
        processed = settings.inbox_dir / "processed"
        moved = []
        # under the feedback writer's lock: a file is never moved (then read) between its write and its fsync
        with inbox_lock(settings.inbox_dir):
            new_files = pending_inbox_files(settings.inbox_dir)
            for path in new_files:
                target = processed / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target)
                moved.append(target)
        reload = config.full_reload or loaded_snapshot_key(con) != key
        snapshot = None
        if reload:
            files = write_raw_snapshot(settings)
            snapshot = ingest_snapshot(con, files, source=settings.dataset, replace=True)
            replay = sorted(p for p in processed.glob("*/*") if p.is_file())
        else:
            replay = sorted(moved)
        inbox = ingest_inbox(con, replay) if replay else None
        if snapshot is not None:
            record_snapshot(con, key, snapshot.batch_id)
        counts = {
            name: con.execute(f"select count(*) from raw.{name}").fetchone()[0] for name in RAW_TABLE_KEYS
        }
    mode = "snapshot reload + inbox replay" if reload else "incremental: new inbox files only"
    for name, asset_key in RAW_TABLE_KEYS.items():
        metadata = {
            "mode": dg.MetadataValue.text(mode),
            "snapshot_key": dg.MetadataValue.text(key),
            "rows_total": dg.MetadataValue.int(int(counts[name])),
            "inbox_files_new": dg.MetadataValue.int(len(new_files)),
        }
        if snapshot is not None:
            metadata |= _table_metadata(snapshot, name)
        if inbox and name in inbox.tables:
            metadata["inbox_batch_id"] = dg.MetadataValue.text(inbox.batch_id)
            metadata["inbox_rows_clean"] = dg.MetadataValue.int(inbox.tables[name].rows_clean)
            metadata["inbox_rows_quarantined"] = dg.MetadataValue.int(inbox.tables[name].rows_quarantined)
            metadata["inbox_rows_duplicate"] = dg.MetadataValue.int(inbox.tables[name].rows_duplicate)
        yield dg.MaterializeResult(asset_key=asset_key, metadata=metadata)
    quarantined = (snapshot.rows_quarantined if snapshot else 0) + (inbox.rows_quarantined if inbox else 0)
    if quarantined:
        context.log.warning(f"{quarantined} rows quarantined (see raw.quarantine)")
