"""Compaction planning, VACUUM safety, SQL text, retries and the bundle settings: no Delta I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamops.bundle import Bundle, load
from streamops.compaction.log import Marker
from streamops.compaction.plan import FileInfo, TableState, build_plan, vacuum_plan
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
        "ALTER TABLE `main`.`plant`.`events` SET TBLPROPERTIES ('delta.targetFileSize' = '1048576')",
        "OPTIMIZE `main`.`plant`.`events` WHERE `day` IN ('2026-11-20', '2026-11-21') "
        "ZORDER BY (`device_id`)",
        "VACUUM `main`.`plant`.`events` RETAIN 216 HOURS",
    ]


def test_databricks_sql_without_catalog_name_uses_the_path(tmp_path: Path) -> None:
    s = TableState(3, (), tuple(FileInfo(f"f{i}", KB) for i in range(3)), None, None)
    plan = build_plan(bundle(tmp_path), "flat", s)
    assert statements(plan) == [
        f"ALTER TABLE delta.`{plan.location}` SET TBLPROPERTIES ('delta.targetFileSize' = '1048576')",
        f"OPTIMIZE delta.`{plan.location}`",
    ]


def test_no_alter_table_when_the_file_size_property_is_already_right(tmp_path: Path) -> None:
    # An ALTER is a metadata commit that fails every stream's in-flight commit: only when needed.
    files = tuple(FileInfo(f"f{i}", KB) for i in range(3))
    right = TableState(3, (), files, None, None, {"delta.targetFileSize": "1048576"})
    plan = build_plan(bundle(tmp_path), "flat", right)
    assert statements(plan) == [f"OPTIMIZE delta.`{plan.location}`"]
    wrong = TableState(3, (), files, None, None, {"delta.targetFileSize": "134217728"})
    assert statements(build_plan(bundle(tmp_path), "flat", wrong))[0].startswith("ALTER TABLE")


def test_spark_sql_sets_the_file_size_in_its_session_and_logs_vacuum(tmp_path: Path) -> None:
    # Open-source Delta refuses delta.targetFileSize; OPTIMIZE and VACUUM text stay the same.
    s = state({"2026-11-20": [KB] * 3, "2026-11-21": [KB] * 3, "2026-11-22": [KB] * 2}, None)
    plan = build_plan(bundle(tmp_path), "events", s, zorder=True, vacuum=True)
    spark, databricks = statements(plan, "spark"), statements(plan, "databricks")
    assert spark == [
        "SET spark.databricks.delta.optimize.maxFileSize = 1048576",
        "SET spark.databricks.delta.optimize.minFileSize = 1048576",
        databricks[1],
        "SET spark.databricks.delta.vacuum.logging.enabled = true",
        databricks[2],
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
    slept: list[float] = []
    calls = iter([_conflict_error(), _conflict_error(), "done"])

    def step() -> str:
        x = next(calls)
        if isinstance(x, Exception):
            raise x
        return x

    policy = RetryPolicy(max_retries=5, backoff_s=2, sleep=slept.append)
    assert with_retries(step, policy, what="OPTIMIZE t", retryable=_conflict) == ("done", 2)
    assert slept == [2, 4]


def test_retries_are_bounded() -> None:
    slept: list[float] = []

    def step() -> None:
        raise _conflict_error()

    with pytest.raises(CompactionError, match="conflicted 4 times"):
        with_retries(
            step,
            RetryPolicy(max_retries=3, backoff_s=1, sleep=slept.append),
            what="x",
            retryable=_conflict,
        )
    assert slept == [1, 2, 4]


def test_other_errors_are_not_retried() -> None:
    def step() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        with_retries(
            step, RetryPolicy(sleep=lambda s: pytest.fail("slept")), what="x", retryable=_conflict
        )


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
    b = bundle(tmp_path, ('    prod: "fedcba9876543210"\n', ""), target="prod")
    assert any("warehouse" in w.message for w in b.warnings)
