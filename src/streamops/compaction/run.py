"""Compact one table of the bundle: read the log, plan, execute on the target's engine, report."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from streamops.compaction import log
from streamops.compaction.plan import CompactionPlan, FileInfo, build_plan
from streamops.compaction.report import CompactionReport, Snapshot
from streamops.compaction.retry import RetryPolicy
from streamops.errors import CompactionError, UsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle
    from streamops.compaction.databricks import DatabricksSqlRunner


def _snapshot(files: tuple[FileInfo, ...], small: int) -> Snapshot:
    return Snapshot(len(files), sum(f.size for f in files), sum(f.size < small for f in files))


def retry_policy(bundle: Bundle, sleep: Callable[[float], None] = time.sleep) -> RetryPolicy:
    c = bundle.spec.compaction
    return RetryPolicy(max_retries=c.max_retries, backoff_s=c.backoff.seconds, sleep=sleep)


def sql_runner(bundle: Bundle) -> DatabricksSqlRunner:
    """The SQL warehouse runner for a Databricks target, from the bundle."""
    from streamops.compaction.databricks import DatabricksSqlRunner

    wid = bundle.spec.compaction.warehouse_ids.get(bundle.target_name)
    if not wid:
        raise UsageError(
            f"target '{bundle.target_name}' compacts with databricks-sql but bundle.yml names no "
            f"warehouse for it. Fix: add `compaction.warehouse_ids.{bundle.target_name}: <id>`"
        )
    conn = bundle.target.databricks.airflow_conn_id if bundle.target.databricks else None
    return DatabricksSqlRunner(conn_id=conn or "databricks_default", warehouse_id=wid)


def plan_table(
    bundle: Bundle,
    key: str,
    *,
    zorder: bool = False,
    vacuum: bool = False,
    retain_hours: float | None = None,
    storage_options: dict[str, str] | None = None,
) -> CompactionPlan | None:
    """The plan for table `key` from its Delta log; None when the table does not exist yet."""
    if key not in bundle.spec.tables:
        _unknown(bundle, key)
    state = log.read_state(bundle.table_location(key), storage_options)
    if state is None:
        return None
    return build_plan(bundle, key, state, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)


def _unknown(bundle: Bundle, key: str) -> None:
    raise UsageError(
        f"no table '{key}' in {bundle.path.name}; tables: {', '.join(bundle.spec.tables)}"
    )


def compact_table(
    bundle: Bundle,
    key: str,
    *,
    zorder: bool = False,
    vacuum: bool = False,
    dry_run: bool = False,
    retain_hours: float | None = None,
    engine: str | None = None,
    runner: DatabricksSqlRunner | None = None,
    spark: SparkSession | None = None,
    storage_options: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] = time.monotonic,
) -> CompactionReport:
    """OPTIMIZE (Z-ORDER) the changed partitions of one table and VACUUM it safely; the report.

    Raises UnsafeVacuumError before touching anything when the retention would break a reader,
    CompactionError when conflicts keep winning or a statement fails.
    """
    if key not in bundle.spec.tables:
        _unknown(bundle, key)
    engine = engine or ("spark-sql" if bundle.target.mode == "local" else "databricks-sql")
    started = now()
    t0 = monotonic()
    location = bundle.table_location(key)
    state = log.read_state(location, storage_options)
    if state is None:
        empty = Snapshot(0, 0, 0)
        return CompactionReport(
            table=key, target=bundle.target_name, engine=engine, status="no_table",
            dry_run=dry_run, started_at=started.isoformat(), duration_s=monotonic() - t0,
            before=empty, after=empty, message=f"no Delta table at {location} yet",
        )  # fmt: skip
    plan = build_plan(bundle, key, state, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)
    before = _snapshot(state.files, plan.small_file_size)
    common = dict(
        table=key, target=bundle.target_name, engine=engine, dry_run=dry_run,
        started_at=started.isoformat(), before=before, read_version=state.version,
        partitions_touched=tuple(p.label for p in plan.partitions),
        partitions_skipped=tuple(f"{s.label} ({s.reason})" for s in plan.skipped),
        zorder_by=plan.zorder_by,
        vacuum_retention_hours=plan.vacuum.retention_hours if plan.vacuum else None,
        plan=plan.to_dict(),
    )  # fmt: skip
    if dry_run or (not plan.optimizes and plan.vacuum is None):
        return CompactionReport(
            **common,  # type: ignore[arg-type]
            status="planned" if dry_run else "nothing_to_do",
            duration_s=monotonic() - t0,
            after=before,
            version_after=state.version,
            message="; ".join(plan.notes),
        )

    policy = retry_policy(bundle, sleep)
    retries = 0
    removed = added = 0
    deleted: int | None = None
    from streamops.compaction.databricks import run_plan

    if engine == "spark-sql":
        import json

        from streamops.compaction.log import MARKER, Marker
        from streamops.compaction.spark_sql import SparkSqlRunner

        marker = Marker(run_id=uuid.uuid4().hex, read_version=plan.read_version,
                        deferred=plan.deferred)  # fmt: skip
        spark_runner = SparkSqlRunner(
            spark or _local_spark(bundle), json.dumps({MARKER: marker.to_json()})
        )
        retries += run_plan(plan, spark_runner, policy)  # type: ignore[arg-type]
    elif engine == "databricks-sql":
        retries += run_plan(plan, runner or sql_runner(bundle), policy)
    else:
        raise CompactionError(f"unknown compaction engine '{engine}'")
    if plan.optimizes:
        removed, added = _optimize_metrics(location, state.version, storage_options)

    dt = log.open_table(location, storage_options)
    after_files = log.live_files(dt) if dt is not None else ()
    return CompactionReport(
        **common,  # type: ignore[arg-type]
        status="compacted",
        duration_s=monotonic() - t0,
        after=_snapshot(after_files, plan.small_file_size),
        version_after=dt.version() if dt is not None else None,
        files_removed=removed,
        files_added=added,
        vacuum_files_deleted=deleted,
        retries=retries,
        message="; ".join(plan.notes),
    )


def _local_spark(bundle: Bundle) -> SparkSession:
    from streamops.pipeline.session import session_for

    return session_for(bundle, app_name="streamops-compaction")


def _optimize_metrics(
    location: str, read_version: int, storage_options: dict[str, str] | None
) -> tuple[int, int]:
    """Files removed and added by the OPTIMIZE commits since `read_version` (from the log)."""
    dt = log.open_table(location, storage_options)
    if dt is None:
        return 0, 0
    removed = added = 0
    for c in dt.history():
        if int(c.get("version", -1)) <= read_version:
            break
        if c.get("operation") == "OPTIMIZE":
            m = c.get("operationMetrics") or {}
            removed += int(m.get("numRemovedFiles", 0) or 0)
            added += int(m.get("numAddedFiles", 0) or 0)
    return removed, added
