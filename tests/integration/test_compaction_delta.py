"""Compaction on real Delta tables (delta-rs): changed partitions from the log, the newest time
partition left alone, dry runs, reports, real commit conflicts, and a stream writing meanwhile."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from streamops.bundle import Bundle, load
from streamops.compaction import compact_table
from streamops.compaction.log import read_state
from streamops.compaction.retry import RetryPolicy, with_retries
from streamops.errors import UnsafeVacuumError
from tests.unit.helpers import edited, write

EVENTS = """tables:
  events:
    partition_by: [day]
    time_partition: day
    zorder_by: [device_id]
    target_file_size_mb: 1
    readers:
      - {name: weekly_fraud_scan, max_lag: 8 days}
  flat:
    zorder_by: [device_id]
    target_file_size_mb: 1
"""


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    text = edited(
        ("tables:\n", EVENTS), ("  max_retries: 5", "  backoff: 0.01 seconds\n  max_retries: 5")
    )
    return load(write(tmp_path, text), "local")


def append(
    uri: str, day: str, ids: range, *, app: str | None = None, batch: int = 0, flat: bool = False
) -> None:
    props = CommitProperties(app_transactions=[Transaction(app, batch)]) if app else None
    data = pa.table({
        "id": pa.array(list(ids), pa.int64()),
        "device_id": [f"dev-{i % 7}" for i in ids],
        "day": [day] * len(ids),
    })  # fmt: skip
    write_deltalake(
        uri, data, mode="append", partition_by=None if flat else ["day"], commit_properties=props
    )


def ids_in(uri: str) -> list[int]:
    return sorted(DeltaTable(uri).to_pyarrow_table(columns=["id"]).column("id").to_pylist())


def test_compacts_changed_partitions_only_and_leaves_the_newest_day(bundle: Bundle) -> None:
    uri = bundle.table_location("events")
    for i in range(6):
        append(uri, "2026-11-20", range(i * 10, i * 10 + 10))
        append(uri, "2026-11-21", range(1000 + i * 10, 1000 + i * 10 + 10))
    before = ids_in(uri)

    dry = compact_table(bundle, "events", zorder=True, vacuum=True, dry_run=True)
    assert dry.status == "planned"
    assert dry.plan["files"] == 6 and dry.plan["partitions"][0]["partition"] == "day=2026-11-20"
    assert DeltaTable(uri).version() == 11  # a dry run commits nothing

    r = compact_table(bundle, "events", zorder=True, vacuum=True)
    assert r.status == "compacted"
    assert r.partitions_touched == ("day=2026-11-20",)
    assert r.partitions_skipped and "2026-11-21" in r.partitions_skipped[0]
    assert (r.before.files, r.after.files) == (12, 7)
    assert r.after.small_file_ratio <= r.before.small_file_ratio
    assert r.vacuum_retention_hours == 8 * 24 + 24
    assert ids_in(uri) == before

    # Nothing changed since: nothing to do, except the deferred (then newest) day.
    assert compact_table(bundle, "events").status == "nothing_to_do"
    # A new day arrives: 2026-11-21 is no longer the newest and was deferred, so it is compacted
    # now; 2026-11-20 did not change and is not touched.
    append(uri, "2026-11-22", range(5000, 5010))
    state = read_state(uri)
    assert state is not None and state.changed is not None
    assert {dict(p)["day"] for p in state.changed} == {"2026-11-21", "2026-11-22"}
    r2 = compact_table(bundle, "events")
    assert r2.partitions_touched == ("day=2026-11-21",)
    assert ids_in(uri) == sorted([*before, *range(5000, 5010)])


def test_cli_compact_dry_run_and_refused_vacuum(bundle: Bundle) -> None:
    from typer.testing import CliRunner

    from streamops.cli import app

    uri = bundle.table_location("events")
    for i in range(3):
        append(uri, "2026-11-20", range(i * 10, i * 10 + 10))
    append(uri, "2026-11-21", range(100, 110))
    runner = CliRunner()
    args = ["compact", "--table", "events", "--bundle", str(bundle.path)]
    res = runner.invoke(app, [*args, "--dry-run", "--zorder"])
    assert res.exit_code == 0, res.output
    assert "day=2026-11-20: 3 files" in res.output and "planned" in res.output
    assert DeltaTable(uri).version() == 3

    res = runner.invoke(app, [*args, "--vacuum", "--retain-hours", "100"])
    assert isinstance(res.exception, UnsafeVacuumError)
    assert "weekly_fraud_scan" in str(res.exception)
    assert DeltaTable(uri).version() == 3

    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["before"]["files"] == 4 and report["after"]["files"] == 2
    saved = bundle.cache_dir / "reports" / "compaction" / "events.latest.json"
    assert json.loads(saved.read_text())["after"]["files"] == 2
    metrics = (bundle.cache_dir / "metrics" / "compaction.jsonl").read_text().splitlines()
    assert any(json.loads(m)["metric"] == "streamops.compaction.files_after" for m in metrics)


def test_a_real_commit_conflict_is_retried_on_a_fresh_snapshot(bundle: Bundle) -> None:
    uri = bundle.table_location("events")
    for i in range(4):
        append(uri, "2026-11-20", range(i * 10, i * 10 + 10))
    stale = DeltaTable(uri)
    DeltaTable(uri).delete("id = 5")  # a concurrent commit removes a file the OPTIMIZE reads
    attempts: list[DeltaTable] = []

    def step() -> dict:
        dt = stale if not attempts else DeltaTable(uri)
        attempts.append(dt)
        return dt.optimize.compact()

    metrics, retries = with_retries(step, RetryPolicy(backoff_s=0, sleep=lambda s: None), what="x")
    assert retries == 1 and metrics["numFilesRemoved"] == 4
    with pytest.raises(CommitFailedError):
        stale.optimize.compact()  # the conflict is real, not simulated
    assert ids_in(uri) == [i for i in range(40) if i != 5]


# events: time-partitioned, the stream's day moves on and older days are compacted meanwhile;
# flat: unpartitioned, every compaction rewrites files right next to the stream's appends.
@pytest.mark.parametrize("table", ["events", "flat"])
def test_compaction_while_a_stream_writes(bundle: Bundle, table: str) -> None:
    """No row lost or duplicated, the stream keeps running, app-transaction versions survive."""
    uri = bundle.table_location(table)
    flat = table == "flat"
    app_id = "events_stream"
    batches, rows_per_batch = 60, 25
    days = ["2026-11-20", "2026-11-21", "2026-11-22"]
    errors: list[BaseException] = []
    written: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        # Micro-batches the way the delta-rs sink writes them: app id + batch id per commit,
        # skipping a batch the table already holds. Day by day, as event time moves on.
        try:
            for batch in range(batches):
                done = DeltaTable(uri).transaction_version(app_id)
                if done is not None and done >= batch:
                    continue
                d = days[min(len(days) - 1, batch * len(days) // batches)]
                start = batch * rows_per_batch
                ids = range(start, start + rows_per_batch)
                append(uri, d, ids, app=app_id, batch=batch, flat=flat)
                written.append(batch)
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    append(uri, days[0], range(100_000, 100_010), flat=flat)  # the table exists beforehand
    writer = threading.Thread(target=stream, name="stream")
    writer.start()
    reports = []
    while not stop.is_set():
        reports.append(compact_table(bundle, table, zorder=len(reports) % 2 == 1))
    writer.join(60)
    reports.append(compact_table(bundle, table))

    assert not errors, errors
    assert written == list(range(batches))  # the stream wrote every batch, none twice
    compacted_during = [r for r in reports[:-1] if r.status == "compacted"]
    assert compacted_during, "no compaction overlapped the stream: the test proved nothing"
    expected = sorted([*range(100_000, 100_010), *range(batches * rows_per_batch)])
    got = ids_in(uri)
    assert len(got) == len(set(got)), "duplicated rows"
    assert got == expected, "lost rows"
    assert DeltaTable(uri).transaction_version(app_id) == batches - 1
    final = read_state(uri)
    assert final is not None
    assert len(final.files) < batches
