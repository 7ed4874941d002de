"""The feedback loop's ingest side as Dagster runs it: feedback lands in the inbox (as the service writes it),
the inbox sensor asks for a data refresh once per set of files, and the refresh appends only the new events
without reloading the snapshot; a changed dataset reloads the snapshot and replays the inbox on top."""

import datetime as dt

import dagster as dg
import pytest

from models.feedback import FeedbackEvent, FeedbackInbox, to_raw_events
from models.settings import get_settings
from orchestration.assets.ingest import raw_tables
from orchestration.resources import RecgenResource
from orchestration.sensors import inbox_sensor

pytestmark = pytest.mark.integration


def _ingest(**config: object) -> dict[str, object]:
    result = dg.materialize(
        [raw_tables],
        resources={"recgen": RecgenResource()},
        run_config={"ops": {"raw_tables": {"config": config}}} if config else None,
    )
    assert result.success
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["raw", "events"])
    ]
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def _count(sql: str) -> int:
    with RecgenResource().connect() as con:
        return int(con.execute(sql).fetchone()[0])


def _tick() -> dg.SensorResult:
    return inbox_sensor(dg.build_sensor_context(resources={"recgen": RecgenResource()}))


def test_inbox_feedback_is_appended_without_reloading_the_snapshot(recgen_home, monkeypatch):
    first = _ingest()
    assert first["mode"] == "snapshot reload + inbox replay"
    snapshot_events = _count("select count(*) from raw.events")
    with RecgenResource().connect() as con:
        user, item = con.execute("select min(user_id), min(item_id) from raw.events").fetchone()
    assert _tick().skip_reason.skip_message == "no new files in the inbox"

    # what the service's feedback endpoint writes: a click with its impression and a rating of an unknown item
    now = dt.datetime(2026, 10, 9, 12, 0)
    feedback = [
        FeedbackEvent("impression", user, item, now, "fb-1", 0),
        FeedbackEvent("click", user, item, now, "fb-1", 0),
        FeedbackEvent("rating", user, "no-such-item", now, rating=5.0),
    ]
    rows = to_raw_events(feedback, now=now)
    FeedbackInbox(get_settings().inbox_dir, pid=1).append(rows, now=now)

    tick, again = _tick(), _tick()
    (request,) = tick.run_requests
    assert request.tags["recgen/inbox_files"] == "1"
    # the same files seen before the run moved them: the same run key, so Dagster starts one run
    assert again.run_requests[0].run_key == request.run_key

    second = _ingest()
    assert second["mode"] == "incremental: new inbox files only"
    assert "ingested_at" not in second and "batch_id" not in second  # no snapshot batch this time
    # the rating of an unknown item and its synthetic impression are quarantined with the reason; the rest lands
    quarantined = _count(
        f"select count(*) from raw.quarantine where batch_id = '{second['inbox_batch_id']}' "
        "and reason like '%item_id%'"
    )
    assert second["inbox_rows_clean"] + second["inbox_rows_quarantined"] == len(rows)
    assert quarantined == second["inbox_rows_quarantined"] > 0
    assert _count("select count(*) from raw.events") == snapshot_events + second["inbox_rows_clean"]
    assert _count("select count(*) from raw.events where request_id = 'fb-1'") == 2
    assert _tick().skip_reason.skip_message == "no new files in the inbox"  # moved to inbox/processed

    # nothing new and nothing changed: a refresh is a no-op
    third = _ingest()
    assert third["mode"] == "incremental: new inbox files only" and third["inbox_files_new"] == 0
    assert _count("select count(*) from raw.events") == second["rows_total"]

    # a changed dataset reloads the snapshot and replays the processed feedback on top: nothing is lost
    monkeypatch.setenv("RECGEN_SIMULATOR__N_DAYS", "9")  # same users and items, more events
    fourth = _ingest()
    assert fourth["mode"] == "snapshot reload + inbox replay"
    assert _count("select count(*) from raw.events where request_id = 'fb-1'") == 2
    assert fourth["rows_total"] == fourth["rows_clean"] + fourth["inbox_rows_clean"]
    # and an explicit full reload is there for operators
    assert _ingest(full_reload=True)["mode"] == "snapshot reload + inbox replay"
