"""Ingest: the raw snapshot (simulator or a real dataset) plus inbox files land in DuckDB's ``raw`` schema."""

import shutil
from collections.abc import Iterator

import dagster as dg

from models.data.ingest import IngestReport, ingest_inbox, ingest_snapshot, pending_inbox_files
from models.data.sources import write_raw_snapshot
from orchestration.resources import RecgenResource

RAW_TABLE_KEYS = {name: dg.AssetKey(["raw", name]) for name in ("users", "items", "events")}


def _table_metadata(report: IngestReport, table: str) -> dict[str, dg.MetadataValue]:
    t = report.tables[table]
    return {
        "batch_id": dg.MetadataValue.text(report.batch_id),
        "rows_in": dg.MetadataValue.int(t.rows_in),
        "rows_clean": dg.MetadataValue.int(t.rows_clean),
        "rows_quarantined": dg.MetadataValue.int(t.rows_quarantined),
        "quarantine_reasons": dg.MetadataValue.json(t.reasons),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            group_name="ingest",
            kinds={"duckdb", "python"},
            description=f"raw.{name}: validated rows of the current dataset; rejects go to raw.quarantine",
        )
        for name, key in RAW_TABLE_KEYS.items()
    ],
    pool="duckdb",
)
def raw_tables(context: dg.AssetExecutionContext, recgen: RecgenResource) -> Iterator[dg.MaterializeResult]:
    """Write the dataset snapshot to Parquet, load it, then replay every inbox file accepted so far.

    The raw tables always equal snapshot + inbox: a reload never loses feedback that arrived through the
    inbox, and inbox files move to ``inbox/processed`` once read.
    """
    settings = recgen.settings()
    # The snapshot folder and the inbox are shared by every run: write and move them under the warehouse lock.
    with recgen.connect() as con:
        files = write_raw_snapshot(settings)
        processed = settings.inbox_dir / "processed"
        new_files = pending_inbox_files(settings.inbox_dir)
        for path in new_files:
            target = processed / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
        snapshot = ingest_snapshot(con, files, source=settings.dataset, replace=True)
        replay = sorted(p for p in processed.glob("*/*") if p.is_file())
        inbox = ingest_inbox(con, replay) if replay else None
    for name, key in RAW_TABLE_KEYS.items():
        metadata = _table_metadata(snapshot, name)
        if inbox and name in inbox.tables:
            metadata["inbox_rows_clean"] = dg.MetadataValue.int(inbox.tables[name].rows_clean)
            metadata["inbox_rows_quarantined"] = dg.MetadataValue.int(inbox.tables[name].rows_quarantined)
        metadata["inbox_files_new"] = dg.MetadataValue.int(len(new_files))
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)
    if snapshot.rows_quarantined:
        context.log.warning(
            f"{snapshot.rows_quarantined} rows quarantined (see raw.quarantine, batch {snapshot.batch_id})"
        )
