"""Compaction through Spark on real Delta tables written by Spark: changed partitions from the
log, the newest time partition left alone, Z-order, VACUUM retention, dry runs, reports, a real
commit conflict between two compactions, and a stream appending meanwhile.

Tables are written with Spark (delta-spark), read back with delta-rs (independent of the writer).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from deltalake import DeltaTable

from streamops.bundle import Bundle, load
from streamops.clock import FakeClock
from streamops.compaction import compact_table
from streamops.compaction.log import MARKER, Marker, read_state
from streamops.compaction.spark_sql import SparkSqlRunner
from streamops.compaction.sql import Dialect, StatementFailed
from streamops.errors import UnsafeVacuumError
from tests.unit.helpers import edited, write

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# `name` as on Databricks: locally there is no catalog, so the table is addressed by its path.
EVENTS = """tables:
  events:
    name: main.plant.events
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
SCHEMA = "id long, device_id string, day string"
D20, D21, D22 = "2026-11-20", "2026-11-21", "2026-11-22"
# Long enough for any Spark step on a loaded 2-core machine; reaching it fails the test.
PATIENCE_S = 300


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    text = edited(
        ("tables:\n", EVENTS), ("  max_retries: 5", "  backoff: 0.01 seconds\n  max_retries: 5")
    )
    return load(write(tmp_path, text), "local")


def append(
    spark: SparkSession,
    uri: str,
    day: str,
    ids: Iterable[int],
    *,
    files: int = 1,
    txn: tuple[str, int] | None = None,
    flat: bool = False,
) -> None:
    """One Spark append of `ids` (as `files` files), with an app transaction when given."""
    rows = [(i, f"dev-{i % 7}", day) for i in ids]
    df = spark.createDataFrame(rows, SCHEMA)
    df = df.coalesce(1) if files == 1 else df.repartition(files)
    w = df.write.format("delta").mode("append")
    if txn is not None:
        w = w.option("txnAppId", txn[0]).option("txnVersion", txn[1])
    if not flat:
        w = w.partitionBy("day")
    w.save(uri)


def ids_in(uri: str, version: int | None = None) -> list[int]:
    t = DeltaTable(uri, version=version).to_pyarrow_table(columns=["id"])
    return sorted(t.column("id").to_pylist())


def history(uri: str) -> list[dict[str, Any]]:
    return list(reversed(DeltaTable(uri).history()))


class Recording:
    """The Spark runner, recording what it ran and how each statement failed."""

    dialect: Dialect = "spark"

    def __init__(self, spark: SparkSession, before: Callable[[str], None] = lambda s: None):
        self.inner = SparkSqlRunner(spark)
        self.before = before
        self.failures: list[StatementFailed] = []

    @property
    def sent(self) -> list[str]:
        return self.inner.sent

    def execute(self, statement: str, *, user_metadata: str | None = None) -> str:
        self.before(statement)
        try:
            return self.inner.execute(statement, user_metadata=user_metadata)
        except StatementFailed as exc:
            self.failures.append(exc)
            raise


def test_compacts_changed_partitions_only_and_leaves_the_newest_day(
    spark: SparkSession, bundle: Bundle
) -> None:
    uri = bundle.table_location("events")
    append(spark, uri, D20, range(60), files=6)
    append(spark, uri, D21, range(1000, 1060), files=6)
    before = ids_in(uri)

    dry = compact_table(bundle, "events", zorder=True, vacuum=True, dry_run=True, spark=spark)
    assert dry.status == "planned"
    assert dry.plan["files"] == 6 and dry.plan["partitions"][0]["partition"] == f"day={D20}"
    assert DeltaTable(uri).version() == 1  # a dry run commits nothing

    runner = Recording(spark)
    r = compact_table(bundle, "events", zorder=True, vacuum=True, runner=runner)
    assert r.status == "compacted" and r.engine == "spark-sql"
    assert runner.sent[2] == (
        f"OPTIMIZE delta.`{uri}` WHERE `day` IN ('{D20}') ZORDER BY (`device_id`)"
    )
    assert r.partitions_touched == (f"day={D20}",)
    assert r.partitions_skipped and D21 in r.partitions_skipped[0]
    assert (r.before.files, r.after.files) == (12, 7)
    assert (r.files_removed, r.files_added) == (6, 1)
    assert r.after.small_file_ratio <= r.before.small_file_ratio
    assert r.vacuum_retention_hours == 8 * 24 + 24
    assert ids_in(uri) == before

    # The OPTIMIZE commit carries the marker (read version, the deferred newest day) and the
    # operation metrics the report took its figures from.
    optimize = next(c for c in history(uri) if c["operation"] == "OPTIMIZE")
    assert optimize["operationMetrics"]["numRemovedFiles"] == "6"
    marker = Marker.from_commit_info(optimize, ("day",))
    assert marker is not None and marker.read_version == r.read_version
    assert marker.deferred == ((("day", D21),),)
    assert MARKER in json.loads(optimize["userMetadata"])

    # Nothing changed since: nothing to do, and no statement is sent.
    idle = Recording(spark)
    assert compact_table(bundle, "events", runner=idle).status == "nothing_to_do"
    assert idle.sent == []
    # A new day arrives: the deferred day is no longer the newest and is compacted now;
    # D20 did not change and is not touched.
    append(spark, uri, D22, range(5000, 5010))
    state = read_state(uri)
    assert state is not None and state.changed is not None
    assert {dict(p)["day"] for p in state.changed} == {D21, D22}
    r2 = compact_table(bundle, "events", spark=spark)
    assert r2.partitions_touched == (f"day={D21}",)
    assert (r2.files_removed, r2.files_added) == (6, 1)
    assert ids_in(uri) == sorted([*before, *range(5000, 5010)])


def test_vacuum_keeps_what_the_slowest_reader_needs(spark: SparkSession, bundle: Bundle) -> None:
    uri = bundle.table_location("events")
    append(spark, uri, D20, range(40), files=4)
    append(spark, uri, D21, range(100, 110))
    # A file no version references, last written a month ago: VACUUM's to delete.
    stray = Path(uri) / f"day={D20}" / "part-00000-stray.c000.snappy.parquet"
    stray.write_bytes(b"orphan")
    month_ago = time.time() - 30 * 86400
    os.utime(stray, (month_ago, month_ago))

    with pytest.raises(UnsafeVacuumError, match="weekly_fraud_scan"):
        compact_table(bundle, "events", vacuum=True, retain_hours=170, spark=spark)
    assert DeltaTable(uri).version() == 1  # refused before anything ran

    state = read_state(uri)
    assert state is not None
    replaced = [Path(uri) / f.path for f in state.files if f.partition == (("day", D20),)]
    runner = Recording(spark)
    r = compact_table(bundle, "events", vacuum=True, runner=runner)
    assert runner.sent[-1] == f"VACUUM delta.`{uri}` RETAIN 216 HOURS"
    assert r.vacuum_files_deleted == 1 and not stray.exists()
    assert r.files_removed == 4 and r.after.files == 2
    # The files OPTIMIZE replaced stay for the reader 8 days behind: the old version reads.
    assert len(replaced) == 4 and all(p.exists() for p in replaced)
    assert ids_in(uri, version=1) == ids_in(uri) == [*range(40), *range(100, 110)]


def test_cli_compact_dry_run_and_refused_vacuum(spark: SparkSession, bundle: Bundle) -> None:
    from typer.testing import CliRunner

    from streamops.cli import app

    uri = bundle.table_location("events")
    append(spark, uri, D20, range(30), files=3)
    append(spark, uri, D21, range(100, 110))
    cli = CliRunner()
    args = ["compact", "--table", "events", "--bundle", str(bundle.path)]
    res = cli.invoke(app, [*args, "--dry-run", "--zorder"])
    assert res.exit_code == 0, res.output
    assert f"day={D20}: 3 files" in res.output and "planned" in res.output
    assert DeltaTable(uri).version() == 1

    res = cli.invoke(app, [*args, "--vacuum", "--retain-hours", "100"])
    assert isinstance(res.exception, UnsafeVacuumError)
    assert "weekly_fraud_scan" in str(res.exception)
    assert DeltaTable(uri).version() == 1

    # The command starts its Spark session itself (session_for: here the test session's JVM).
    res = cli.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["before"]["files"] == 4 and report["after"]["files"] == 2
    assert report["engine"] == "spark-sql" and report["files_removed"] == 3
    saved = bundle.cache_dir / "reports" / "compaction" / "events.latest.json"
    assert json.loads(saved.read_text())["after"]["files"] == 2
    metrics = (bundle.cache_dir / "metrics" / "compaction.jsonl").read_text().splitlines()
    # Shaped like the streams' points (the Azure Monitor custom table's columns): job = table.
    points = [json.loads(m) for m in metrics]
    after = next(p for p in points if p["name"] == "streamops.compaction.files_after")
    assert (after["job"], after["query"], after["value"]) == ("events", "compaction", 2)


# --- a real commit conflict ------------------------------------------------------------------


def _threads_in(spark: SparkSession, frame: str) -> int:
    """How many JVM threads have `frame` on their stack right now."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    dump = jvm.org.apache.spark.util.Utils.getThreadDump()
    return sum(frame in str(t.toString()) for t in dump)


def _wait_until(what: str, check: Callable[[], bool]) -> None:
    # A bounded number of polls, so a hang fails the test instead of stalling the suite.
    for _ in range(int(PATIENCE_S / 0.1)):
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting until {what}")


def _hold_every_task_slot(spark: SparkSession, gate: Path) -> threading.Thread:
    """A job whose tasks occupy every task slot until `gate` exists: other jobs queue behind."""
    from pyspark.sql.functions import udf

    path = str(gate)

    @udf("long")
    def wait_for_gate(x):  # type: ignore[no-untyped-def]  # hints would make it a pandas UDF
        import os as _os
        import time as _time

        while not _os.path.exists(path):
            _time.sleep(0.05)
        return x

    slots = spark.sparkContext.defaultParallelism
    job = threading.Thread(
        target=lambda: spark.range(0, slots, 1, slots).select(wait_for_gate("id")).collect()
    )
    job.start()
    tracker = spark.sparkContext.statusTracker()

    def all_slots_taken() -> bool:
        stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
        return sum(s.numActiveTasks for s in stages if s is not None) >= slots

    _wait_until("the blocking job holds every task slot", all_slots_taken)
    return job


def test_a_real_commit_conflict_between_two_compactions_is_retried(
    spark: SparkSession, bundle: Bundle, tmp_path: Path
) -> None:
    """Two runs OPTIMIZE the same partition from the same snapshot: Delta lets one commit and
    fails the other (DELTA_CONCURRENT_DELETE_READ); that one retries and finds nothing left."""
    uri = bundle.table_location("events")
    append(spark, uri, D20, range(50), files=5)
    append(spark, uri, D21, range(100, 110))
    spark.read.format("delta").load(uri).count()  # the log is cached: both runs start alike

    gate = tmp_path / "gate"
    blocker = _hold_every_task_slot(spark, gate)
    runners = [Recording(spark), Recording(spark)]
    reports: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            reports[i] = compact_table(bundle, "events", runner=runners[i], clock=FakeClock())
        except BaseException as exc:
            errors.append(exc)

    runs = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in runs:
        t.start()
    # Both OPTIMIZEs started their transaction (same snapshot) and wait for a task slot.
    _wait_until(
        "both OPTIMIZEs hold a snapshot", lambda: _threads_in(spark, "OptimizeExecutor") >= 2
    )
    gate.touch()
    for t in [*runs, blocker]:
        t.join(PATIENCE_S)
    assert not errors, errors

    retries = sorted(r.retries for r in reports)
    assert retries == [0, 1]
    loser = next(i for i in range(2) if reports[i].retries == 1)
    (failure,) = runners[loser].failures
    assert failure.is_conflict and failure.code.startswith("DELTA_CONCURRENT_DELETE")
    assert "ConcurrentDelete" in str(failure)
    # One OPTIMIZE landed; the retry found the partition already compacted.
    assert sum(c["operation"] == "OPTIMIZE" for c in history(uri)) == 1
    assert (reports[loser].files_removed, reports[1 - loser].files_removed) == (0, 5)
    assert all(r.status == "compacted" and r.after.files == 2 for r in reports)
    assert ids_in(uri) == [*range(50), *range(100, 110)]


def final_columns(table: str) -> tuple[str, ...]:
    return () if table == "flat" else ("day",)


# --- beside a live stream --------------------------------------------------------------------


class Stream:
    """Micro-batches the way the bronze sink commits them: one Spark append per batch with
    txnAppId/txnVersion, day by day as event time moves on. Runs in its own thread."""

    APP = "events_stream"

    def __init__(self, spark: SparkSession, uri: str, *, flat: bool, batches: int = 18):
        self.spark, self.uri, self.flat, self.batches = spark, uri, flat, batches
        self.rows_per_batch = 5
        self.committed = 0
        self.changed = threading.Condition()
        self.optimize_waiting = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="stream")

    def day(self, batch: int) -> str:
        return (D20, D21, D22)[batch * 3 // self.batches]

    def ids(self, batch: int) -> range:
        return range(batch * self.rows_per_batch, (batch + 1) * self.rows_per_batch)

    def _run(self) -> None:
        try:
            for batch in range(self.batches):
                if batch == self.batches * 2 // 3:
                    # From here on the stream only goes on once a compaction is about to
                    # OPTIMIZE: the remaining batches commit while it runs.
                    assert self.optimize_waiting.wait(PATIENCE_S), "no compaction got to OPTIMIZE"
                append(self.spark, self.uri, self.day(batch), self.ids(batch),
                       txn=(self.APP, batch), flat=self.flat)  # fmt: skip
                with self.changed:
                    self.committed += 1
                    self.changed.notify_all()
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            with self.changed:
                self.committed = self.batches  # done (or failed): nobody waits for more
                self.changed.notify_all()

    def before(self, statement: str) -> None:
        """Runner hook: an OPTIMIZE starts only after the stream committed one more batch, so a
        commit always lands between the compaction's read of the log and its own commit."""
        if not statement.startswith("OPTIMIZE"):
            return
        with self.changed:
            seen = self.committed
            self.optimize_waiting.set()
            if seen < self.batches:
                self.changed.wait_for(lambda: self.committed > seen, PATIENCE_S)


@pytest.mark.parametrize("table", ["events", "flat"])
def test_compaction_while_a_stream_writes(spark: SparkSession, bundle: Bundle, table: str) -> None:
    """No row lost or duplicated, the stream keeps running, app-transaction versions survive."""
    uri = bundle.table_location(table)
    flat = table == "flat"
    append(spark, uri, D20, range(100_000, 100_010), flat=flat)  # the table exists beforehand
    stream = Stream(spark, uri, flat=flat)
    stream.thread.start()
    reports = []
    while stream.thread.is_alive():
        runner = Recording(spark, before=stream.before)
        reports.append(compact_table(bundle, table, zorder=len(reports) % 2 == 1, runner=runner))
        time.sleep(0.2)  # pacing only: planning is cheap, leave the two cores to Spark
    stream.thread.join()
    reports.append(compact_table(bundle, table, spark=spark))

    assert not stream.errors, stream.errors
    during = [r for r in reports[:-1] if r.status == "compacted"]
    assert during, "no compaction overlapped the stream: the test proved nothing"
    # At least one read the log, then the stream committed, then it committed its OPTIMIZE.
    optimizes = [c for c in history(uri) if c["operation"] == "OPTIMIZE"]
    markers = [(c["version"], Marker.from_commit_info(c, final_columns(table))) for c in optimizes]
    assert any(m is not None and v > m.read_version + 1 for v, m in markers), markers
    expected = sorted([*range(100_000, 100_010), *range(stream.batches * stream.rows_per_batch)])
    got = ids_in(uri)
    assert len(got) == len(set(got)), "duplicated rows"
    assert got == expected, "lost rows"
    assert DeltaTable(uri).transaction_version(Stream.APP) == stream.batches - 1
    final = read_state(uri)
    assert final is not None
    assert len(final.files) < stream.batches


# --- liquid clustering ---------------------------------------------------------------------------


def test_a_liquid_clustered_table_is_created_clustered_and_compacted_with_plain_optimize(
    spark: SparkSession, tmp_path: Path
) -> None:
    from delta.tables import DeltaTable as SparkDeltaTable

    from streamops.pipeline.gold import ensure_sink_table

    text = edited(("tables:\n", EVENTS), ("    zorder_by: [region]\n", "    cluster_by: [region]\n"),
                  ("  flat:\n    zorder_by: [device_id]\n", "  flat:\n    cluster_by: [device_id]\n"))  # fmt: skip
    b = load(write(tmp_path, text), "local")
    # The job's sink is created CLUSTER BY the bundle's columns before its first batch.
    ensure_sink_table(spark, b, b.job("claims_hourly"))
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{b.table_location('claims_hourly')}`").first()
    assert detail is not None and detail["clusteringColumns"] == ["region"]

    uri = b.table_location("flat")
    schema = spark.createDataFrame([], SCHEMA).schema
    SparkDeltaTable.create(spark).location(uri).addColumns(schema).clusterBy("device_id").execute()
    for k in range(3):
        append(spark, uri, D20, range(k * 10, k * 10 + 10), flat=True)
    runner = Recording(spark)
    r = compact_table(b, "flat", zorder=True, runner=runner)
    assert [s for s in runner.sent if s.startswith("OPTIMIZE")] == [f"OPTIMIZE delta.`{uri}`"]
    assert r.cluster_by == ("device_id",) and r.zorder_by == ()
    assert (r.before.files, r.after.files) == (3, 1)
    optimize = next(c for c in history(uri) if c["operation"] == "OPTIMIZE")
    assert json.loads(optimize["operationParameters"]["clusterBy"]) == ["device_id"]
    assert Marker.from_commit_info(optimize, ()) is not None  # "changed only" works here too
    assert any("liquid clustering by device_id" in line for line in r.lines())


# --- losing every commit race to a concurrent MERGE ------------------------------------------------


def test_a_merge_winning_every_race_pages_once_naming_the_table_and_the_merge(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Another writer (delta-rs, as a second engine would) MERGEs into the partition while each
    OPTIMIZE attempt holds its snapshot: every attempt conflicts, the last one pages."""
    import pyarrow as pa

    from streamops.compaction.nightly import nightly_table
    from streamops.errors import CompactionConflictError
    from streamops.monitoring.paging import pages_log

    text = edited(
        ("tables:\n", EVENTS), ("  max_retries: 5", "  backoff: 0.01 seconds\n  max_retries: 1")
    )
    b = load(write(tmp_path, text), "local")
    uri = b.table_location("events")
    append(spark, uri, D20, range(40), files=4)
    append(spark, uri, D21, range(100, 110))
    merges: list[int] = []

    def merge_meanwhile(gate: Path) -> None:
        _wait_until(
            "OPTIMIZE holds its snapshot", lambda: _threads_in(spark, "OptimizeExecutor") >= 1
        )
        src = pa.table({"id": [1, 2], "device_id": ["moved", "moved"], "day": [D20, D20]})
        (DeltaTable(uri).merge(src, "t.id = s.id AND t.day = s.day", source_alias="s", target_alias="t")
         .when_matched_update_all().execute())  # fmt: skip
        merges.append(DeltaTable(uri).version())
        gate.touch()

    def before(statement: str) -> None:
        if statement.startswith("OPTIMIZE"):
            gate = tmp_path / f"gate{len(merges)}"
            _hold_every_task_slot(spark, gate)
            threading.Thread(target=merge_meanwhile, args=(gate,), daemon=True).start()

    runner = Recording(spark, before=before)
    with pytest.raises(CompactionConflictError) as err:
        nightly_table(b, "events", attempt=3, attempts=3, runner=runner, clock=FakeClock())
    assert len(merges) == 2 and all(f.is_conflict for f in runner.failures)
    assert err.value.table == "events" and err.value.operation.startswith("MERGE")
    (page,) = [json.loads(x) for x in pages_log(b).read_text().splitlines()]
    assert "lost every commit race to a concurrent MERGE" in page["summary"]
    assert page["details"]["table"] == "events" and page["details"]["tries_per_attempt"] == 2
    # Nothing of the compaction landed; the MERGEs did.
    assert [c["operation"] for c in history(uri)][-2:] == ["MERGE", "MERGE"]
