"""Compaction planning, VACUUM safety, SQL text, retries and the bundle settings: no Delta I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamops.bundle import Bundle, load
from streamops.clock import FakeClock
from streamops.compaction.log import Marker
from streamops.compaction.plan import (
    CompactionPlan,
    FileInfo,
    TableState,
    build_plan,
    vacuum_plan,
)
from streamops.compaction.retry import RetryPolicy, with_retries
from streamops.compaction.sql import StatementFailed, statements, user_metadata, where_clause
from streamops.errors import BundleError, CompactionError, UnsafeVacuumError
from tests.unit.helpers import edited, write


def _conflict_error() -> StatementFailed:
    return StatementFailed("OPTIMIZE t", "FAILED", "DELTA_CONCURRENT_DELETE_READ", "concurrent")


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, StatementFailed) and exc.is_conflict


EVENTS = """tables:
  events:
    name: main.plant.events
    partition_by: [day]
    time_partition: day
    zorder_by: [device_id]
    target_file_size_mb: 1
    readers:
      - {name: fast_dashboard, max_lag: 10 minutes}
      - {name: weekly_fraud_scan, max_lag: 8 days}
  flat:
    zorder_by: [device_id]
    target_file_size_mb: 1
"""


def bundle(tmp_path: Path, *edits: tuple[str, str], target: str = "local") -> Bundle:
    text = edited(("tables:\n", EVENTS), *edits)
    return load(write(tmp_path, text), target)


def day(d: str) -> tuple[tuple[str, str | None], ...]:
    return (("day", d),)


def state(files: dict[str, list[int]], changed: set[str] | None, version: int = 9) -> TableState:
    infos = tuple(
        FileInfo(f"day={d}/f{i}.parquet", size, day(d))
        for d, sizes in files.items()
        for i, size in enumerate(sizes)
    )
    return TableState(
        version=version,
        partition_columns=("day",),
        files=infos,
        since_version=None if changed is None else 4,
        changed=None if changed is None else frozenset(day(d) for d in changed),
    )


KB = 1024


# --- VACUUM retention ----------------------------------------------------------------------------


def test_retention_is_the_slowest_reader_plus_margin_when_above_168_hours(tmp_path: Path) -> None:
    v = vacuum_plan(bundle(tmp_path), "events")
    assert v.retention_hours == 8 * 24 + 24  # 8 days + the default 24-hour margin
    assert "weekly_fraud_scan" in v.governed_by


def test_retention_never_below_168_hours(tmp_path: Path) -> None:
    v = vacuum_plan(bundle(tmp_path), "flat")
    assert v.retention_hours == 168
    assert "168" in v.governed_by


def test_shorter_retention_is_refused_naming_the_reader(tmp_path: Path) -> None:
    with pytest.raises(UnsafeVacuumError) as e:
        vacuum_plan(bundle(tmp_path), "events", requested_hours=170)
    msg = str(e.value)
    assert "weekly_fraud_scan" in msg and "216" in msg and "events" in msg


def test_retention_below_delta_floor_is_refused_without_readers(tmp_path: Path) -> None:
    with pytest.raises(UnsafeVacuumError, match="168-hour minimum"):
        vacuum_plan(bundle(tmp_path), "flat", requested_hours=24)
    assert vacuum_plan(bundle(tmp_path), "flat", requested_hours=200).retention_hours == 200


def test_margin_comes_from_the_bundle(tmp_path: Path) -> None:
    b = bundle(tmp_path, ("  vacuum_margin: 24 hours", "  vacuum_margin: 2 days"))
    assert vacuum_plan(b, "events").retention_hours == 10 * 24


# --- planning ------------------------------------------------------------------------------------


def test_only_changed_partitions_are_planned_and_the_newest_day_is_left_alone(
    tmp_path: Path,
) -> None:
    b = bundle(tmp_path)
    s = state(
        {"2026-11-20": [10 * KB] * 5, "2026-11-21": [10 * KB] * 4, "2026-11-22": [10 * KB] * 3},
        changed={"2026-11-21", "2026-11-22"},
    )
    plan = build_plan(b, "events", s, zorder=True, vacuum=True)
    assert [p.label for p in plan.partitions] == ["day=2026-11-21"]
    assert plan.partitions[0].files == 4 and plan.partitions[0].bytes == 40 * KB
    assert [s.label for s in plan.skipped] == ["day=2026-11-22"]
    assert plan.deferred == (day("2026-11-22"),)
    assert plan.zorder_by == ("device_id",)
    assert plan.target_file_size == 1024 * 1024
    assert plan.vacuum is not None and plan.vacuum.retention_hours == 216
    assert where_clause(plan) == "`day` IN ('2026-11-21')"


def test_never_compacted_means_every_partition_is_a_candidate(tmp_path: Path) -> None:
    s = state({"2026-11-20": [KB] * 3, "2026-11-21": [KB] * 3, "2026-11-22": [KB]}, None)
    plan = build_plan(bundle(tmp_path), "events", s)
    assert [p.label for p in plan.partitions] == ["day=2026-11-20", "day=2026-11-21"]
    assert where_clause(plan) == "`day` IN ('2026-11-20', '2026-11-21')"
    assert plan.notes


def test_compact_partitions_are_not_rewritten(tmp_path: Path) -> None:
    # One file, or only one small file among large ones: nothing to bin-pack.
    big = 900 * KB
    s = state({"2026-11-20": [big], "2026-11-21": [big, big, 10 * KB], "2026-11-22": [KB]}, None)
    assert build_plan(bundle(tmp_path), "events", s).partitions == ()
    # Z-order still sorts such a partition.
    zplan = build_plan(bundle(tmp_path), "events", s, zorder=True)
    assert [p.label for p in zplan.partitions] == ["day=2026-11-20", "day=2026-11-21"]


def test_table_without_time_partition_is_planned_whole(tmp_path: Path) -> None:
    s = TableState(3, (), tuple(FileInfo(f"f{i}", KB) for i in range(6)), None, None)
    plan = build_plan(bundle(tmp_path), "flat", s)
    assert [p.label for p in plan.partitions] == ["(table)"]
    assert where_clause(plan) == ""
    assert plan.table_small_files == 6


# --- the same plan as SQL: Databricks and Spark ---------------------------------------------------


def test_databricks_sql_text(tmp_path: Path) -> None:
    s = state({"2026-11-20": [KB] * 3, "2026-11-21": [KB] * 3, "2026-11-22": [KB] * 2}, None)
    plan = build_plan(bundle(tmp_path), "events", s, zorder=True, vacuum=True)
    assert statements(plan) == [
        "OPTIMIZE `main`.`plant`.`events` WHERE `day` IN ('2026-11-20', '2026-11-21') "
        "ZORDER BY (`device_id`)",
        "VACUUM `main`.`plant`.`events` RETAIN 216 HOURS",
    ]


def test_databricks_sql_without_catalog_name_uses_the_path(tmp_path: Path) -> None:
    s = TableState(3, (), tuple(FileInfo(f"f{i}", KB) for i in range(3)), None, None)
    plan = build_plan(bundle(tmp_path), "flat", s)
    assert statements(plan) == [f"OPTIMIZE delta.`{plan.location}`"]


def test_never_a_metadata_commit_whatever_the_table_property(tmp_path: Path) -> None:
    # An ALTER TABLE is a metadata commit that fails every stream's in-flight commit.
    files = tuple(FileInfo(f"f{i}", KB) for i in range(3))
    for prop in ({}, {"delta.targetFileSize": "134217728"}):
        plan = build_plan(bundle(tmp_path), "flat", TableState(3, (), files, None, None, prop))
        for dialect in ("databricks", "spark"):
            sent = statements(plan, dialect)  # type: ignore[arg-type]
            assert not any(s.startswith(("ALTER", "SET TBLPROPERTIES")) for s in sent), sent


def test_spark_sql_sets_the_file_size_in_its_session_and_logs_vacuum(tmp_path: Path) -> None:
    # Open-source Delta refuses delta.targetFileSize; OPTIMIZE and VACUUM text stay the same.
    s = state({"2026-11-20": [KB] * 3, "2026-11-21": [KB] * 3, "2026-11-22": [KB] * 2}, None)
    plan = build_plan(bundle(tmp_path), "events", s, zorder=True, vacuum=True)
    spark, databricks = statements(plan, "spark"), statements(plan, "databricks")
    assert spark == [
        "SET spark.databricks.delta.optimize.maxFileSize = 1048576",
        "SET spark.databricks.delta.optimize.minFileSize = 1048576",
        databricks[0],
        "SET spark.databricks.delta.vacuum.logging.enabled = true",
        databricks[1],
    ]


def test_only_optimize_carries_the_marker_and_vacuum_the_run_id() -> None:
    marker = Marker("r1", 7, (day("2026-11-22"),))
    meta = user_metadata("OPTIMIZE t", marker.to_json(), "r1")
    assert meta is not None
    assert Marker.from_commit_info({"userMetadata": meta}, ("day",)) == marker
    assert user_metadata("VACUUM t RETAIN 168 HOURS", marker.to_json(), "r1") == (
        '{"streamops.compaction.run": "r1"}'
    )
    assert user_metadata("SET x = 1", marker.to_json(), "r1") is None


# --- retries ------------------------------------------------------------------------------------


def test_conflicts_are_retried_with_exponential_backoff() -> None:
    clock = FakeClock()
    calls = iter([_conflict_error(), _conflict_error(), "done"])

    def step() -> str:
        x = next(calls)
        if isinstance(x, Exception):
            raise x
        return x

    policy = RetryPolicy(max_retries=5, backoff_s=2, clock=clock)
    assert with_retries(step, policy, what="OPTIMIZE t", retryable=_conflict) == ("done", 2)
    assert clock.slept == [2, 4]


def test_retries_are_bounded() -> None:
    clock = FakeClock()

    def step() -> None:
        raise _conflict_error()

    with pytest.raises(CompactionError, match="conflicted 4 times"):
        with_retries(
            step,
            RetryPolicy(max_retries=3, backoff_s=1, clock=clock),
            what="x",
            retryable=_conflict,
        )
    assert clock.slept == [1, 2, 4]


def test_other_errors_are_not_retried() -> None:
    def step() -> None:
        raise OSError("disk gone")

    clock = FakeClock()
    with pytest.raises(OSError):
        with_retries(step, RetryPolicy(clock=clock), what="x", retryable=_conflict)
    assert clock.slept == []


def test_databricks_conflicts_are_recognised() -> None:
    e = StatementFailed("OPTIMIZE t", "FAILED", "", "ConcurrentDeleteReadException: ...")
    assert e.is_conflict
    assert StatementFailed("OPTIMIZE t", "FAILED", "DELTA_METADATA_CHANGED", "x").is_conflict
    assert not StatementFailed("OPTIMIZE t", "FAILED", "PARSE_SYNTAX_ERROR", "x").is_conflict


def test_marker_round_trips() -> None:
    m = Marker("r1", 7, (day("2026-11-22"),))
    info = {"streamops.compaction": m.to_json()}
    assert Marker.from_commit_info(info, ("day",)) == m
    spark_style = {"userMetadata": '{"streamops.compaction": ' + m.to_json() + "}"}
    assert Marker.from_commit_info(spark_style, ("day",)) == m
    assert Marker.from_commit_info({"streamops.compaction": "junk"}, ("day",)) is None


# --- bundle settings -----------------------------------------------------------------------------


def test_shipped_bundle_has_compaction_defaults(tmp_path: Path) -> None:
    b = bundle(tmp_path)
    c = b.spec.compaction
    assert (c.schedule, c.timezone, c.max_retries) == ("0 2 * * *", "UTC", 5)
    assert c.vacuum_margin.seconds == 24 * 3600


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('  schedule: "0 2 * * *"', '  schedule: "at two"', "not a cron expression"),
        ("  timezone: UTC", "  timezone: Mars/Olympus", "unknown time zone"),
        ("    time_partition: day", "    time_partition: hour", "partition columns"),
        ("    zorder_by: [device_id]\n    target_file_size_mb: 1\n    readers",
         "    zorder_by: [day]\n    target_file_size_mb: 1\n    readers", "partition column"),
    ],
)  # fmt: skip
def test_bad_compaction_settings_are_refused(
    tmp_path: Path, old: str, new: str, needle: str
) -> None:
    with pytest.raises(BundleError) as e:
        bundle(tmp_path, (old, new))
    assert needle in str(e.value)


def test_databricks_target_without_warehouse_warns(tmp_path: Path) -> None:
    named = ("  flat:\n", "  flat:\n    name: main.plant.flat\n")
    warehouse = ("  warehouse_ids:", "  databricks_engine: databricks-sql\n  warehouse_ids:")
    b = bundle(tmp_path, named, warehouse, ('    prod: "fedcba9876543210"\n', ""), target="prod")
    assert any("warehouse" in w.message for w in b.warnings)
    # The default engine (a job run) needs no warehouse.
    b = bundle(tmp_path, named, ('    prod: "fedcba9876543210"\n', ""), target="prod")
    assert not any("warehouse" in w.message for w in b.warnings)


# --- liquid clustering ----------------------------------------------------------------------------

CLUSTERED = ("  flat:\n    zorder_by: [device_id]\n",
             "  flat:\n    cluster_by: [device_id]\n    name: main.plant.flat\n")  # fmt: skip


def test_a_clustered_table_gets_plain_optimize_even_when_zorder_is_asked(tmp_path: Path) -> None:
    files = (FileInfo("a", 200 * KB * 4), FileInfo("b", 300 * KB * 4))  # big, but not clustered
    s = TableState(3, (), files, None, None, clustering=("device_id",))
    plan = build_plan(bundle(tmp_path, CLUSTERED), "flat", s, zorder=True)
    assert plan.cluster_by == ("device_id",) and plan.zorder_by == ()
    assert statements(plan) == ["OPTIMIZE `main`.`plant`.`flat`"]
    assert not [n for n in plan.notes if n.startswith("warning:")]


def warning(plan: CompactionPlan) -> str:
    return next(n for n in plan.notes if n.startswith("warning:"))


def test_layout_differing_from_the_bundle_warns_with_the_alter_fix(tmp_path: Path) -> None:
    files = tuple(FileInfo(f"f{i}", KB) for i in range(3))
    b = bundle(tmp_path, CLUSTERED)
    unclustered = build_plan(b, "flat", TableState(3, (), files, None, None))
    note = warning(unclustered)
    assert "tables.flat.cluster_by is [device_id] but the table is not clustered" in note
    assert "Fix: ALTER TABLE `main`.`plant`.`flat` CLUSTER BY (`device_id`)" in note
    other = build_plan(b, "flat", TableState(3, (), files, None, None, clustering=("site",)))
    assert "clustered by site" in warning(other) and "CLUSTER BY (`device_id`)" in warning(other)
    # Clustered in fact, not in bundle.yml: say which columns to write down.
    plain = build_plan(
        bundle(tmp_path), "flat", TableState(3, (), files, None, None, clustering=("site",))
    )
    assert "add `cluster_by: [site]` to tables.flat" in warning(plain)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (("  flat:\n    zorder_by: [device_id]\n", "  flat:\n    zorder_by: [device_id]\n    cluster_by: [site]\n"),
         "tables.flat.zorder_by"),
        (("  flat:\n    zorder_by: [device_id]\n", "  flat:\n    partition_by: [day]\n    cluster_by: [site]\n"),
         "tables.flat.partition_by"),
    ],
)  # fmt: skip
def test_cluster_by_refuses_zorder_by_and_partition_by(
    tmp_path: Path, edit: tuple[str, str], path: str
) -> None:
    with pytest.raises(BundleError) as err:
        bundle(tmp_path, edit)
    assert path in str(err.value) and "cannot be combined with `cluster_by`" in str(err.value)


def test_conflict_after_the_last_retry_names_the_table_and_the_operation(tmp_path: Path) -> None:
    from streamops.compaction.sql import run_plan
    from streamops.errors import CompactionConflictError

    msg = ('ConcurrentDeleteReadException: files were deleted by a concurrent update.\n'
           'Conflicting commit: {"timestamp":1,"operation":"MERGE","version":12}')  # fmt: skip

    class Losing:
        dialect = "spark"

        def execute(self, statement: str, *, user_metadata: str | None = None) -> str:
            if statement.startswith("OPTIMIZE"):
                raise StatementFailed(statement, "FAILED", "DELTA_CONCURRENT_DELETE_READ", msg)
            return statement

    s = state({"2026-11-20": [KB] * 3, "2026-11-21": [KB] * 3}, None)
    plan = build_plan(bundle(tmp_path), "events", s)
    clock = FakeClock()
    policy = RetryPolicy(max_retries=2, backoff_s=1, clock=clock)
    with pytest.raises(CompactionConflictError) as err:
        run_plan(plan, Losing(), policy, marker_json="{}", run_id="r")  # type: ignore[arg-type]
    assert (err.value.table, err.value.operation, err.value.attempts) == (
        "events",
        "MERGE (version 12)",
        3,
    )
    assert clock.slept == [1.0, 2.0]  # backoff doubles
