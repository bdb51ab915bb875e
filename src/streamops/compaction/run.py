"""Compact one table of the bundle: read the log, plan, run the SQL on the target's engine, report.

Locally the SQL runs through Spark ("spark-sql": a local session from `session_for`, created
only when there is something to run); on Databricks targets as a one-time job run of
jobs/compact.py ("databricks-job", the same code on the cluster's session) or through a SQL
warehouse ("databricks-sql"). On Databricks, a Unity Catalog table under predictive
optimization is left to it. Planning and the report read the Delta log with delta-rs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamops.compaction import log, predictive
from streamops.compaction.plan import CompactionPlan, FileInfo, TableState, build_plan
from streamops.compaction.report import CompactionReport, Snapshot
from streamops.compaction.retry import RetryPolicy
from streamops.compaction.sql import run_plan
from streamops.errors import CompactionError, UsageError

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle
    from streamops.compaction.databricks import DatabricksSqlRunner
    from streamops.compaction.sql import StatementRunner

_log = logging.getLogger("streamops.compaction")

ENGINES = ("spark-sql", "databricks-sql", "databricks-job")
# Engines that run on a Databricks workspace, where Unity Catalog may manage the table.
DATABRICKS_ENGINES = ("databricks-sql", "databricks-job")


def _snapshot(files: tuple[FileInfo, ...], small: int) -> Snapshot:
    return Snapshot(len(files), sum(f.size for f in files), sum(f.size < small for f in files))


def retry_policy(bundle: Bundle, sleep: Callable[[float], None] = time.sleep) -> RetryPolicy:
    c = bundle.spec.compaction
    return RetryPolicy(max_retries=c.max_retries, backoff_s=c.backoff.seconds, sleep=sleep)


def default_engine(bundle: Bundle) -> str:
    """Spark SQL on the local target; on Databricks targets `compaction.databricks_engine` (a
    one-time job run by default: only a cluster session can tag the OPTIMIZE commit)."""
    if bundle.target.mode == "local":
        return "spark-sql"
    return bundle.spec.compaction.databricks_engine


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


def spark_runner(bundle: Bundle, spark: SparkSession | None) -> StatementRunner:
    """The Spark runner on `spark`, else on the target's session (started here, on first use)."""
    from streamops.compaction.spark_sql import SparkSqlRunner

    if spark is None:
        from streamops.pipeline.session import session_for

        spark = session_for(bundle, app_name="streamops-compaction")
    return SparkSqlRunner(spark)


def storage_options(bundle: Bundle, location: str) -> dict[str, str] | None:
    """The target's storage options for `location` (none for a local path).

    A local path is answered here: `bundle.runtime` also resolves Kafka (the local broker),
    which compaction never needs and which need not be running at night.
    """
    if "://" not in location or location.startswith("file:"):
        return None
    return bundle.runtime.storage_options(location)


def plan_table(
    bundle: Bundle,
    key: str,
    *,
    zorder: bool = False,
    vacuum: bool = False,
    retain_hours: float | None = None,
) -> CompactionPlan | None:
    """The plan for table `key` from its Delta log; None when the table does not exist yet."""
    _check_table(bundle, key)
    location = bundle.table_location(key)
    state = log.read_state(location, storage_options(bundle, location))
    if state is None:
        return None
    return build_plan(bundle, key, state, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)


def _check_table(bundle: Bundle, key: str) -> None:
    if key not in bundle.spec.tables:
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
    runner: StatementRunner | None = None,
    spark: SparkSession | None = None,
    uc_client: WorkspaceClient | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] = time.monotonic,
) -> CompactionReport:
    """OPTIMIZE (Z-ORDER) the changed partitions of one table and VACUUM it safely; the report.

    `runner` runs the SQL (default: the engine's, on `spark` for spark-sql); a Spark session is
    only started when there is something to run. Raises UnsafeVacuumError before touching
    anything when the retention would break a reader, CompactionError when conflicts keep
    winning or a statement fails.
    """
    _check_table(bundle, key)
    engine = engine or default_engine(bundle)
    if engine not in ENGINES:
        raise CompactionError(f"unknown compaction engine '{engine}'; use one of {ENGINES}")
    started, t0 = now(), monotonic()
    location = bundle.table_location(key)
    options = storage_options(bundle, location)
    head: dict[str, Any] = {"table": key, "target": bundle.target_name, "engine": engine, "dry_run": dry_run,
            "started_at": started.isoformat()}  # fmt: skip
    state = log.read_state(location, options)
    if state is None:
        empty = Snapshot(0, 0, 0)
        return CompactionReport(
            **head, status="no_table", duration_s=monotonic() - t0, before=empty, after=empty,
            message=f"no Delta table at {location} yet",
        )  # fmt: skip
    plan = build_plan(bundle, key, state, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)
    if engine == "spark-sql":
        # A Spark session addresses the table as the streams do: by its Unity Catalog name on a
        # Databricks target (the job engine's cluster), by its path where there is no catalog.
        plan = replace(plan, uc_name=bundle.table_ref(key).name)
    head |= _plan_fields(plan, state)
    for note in plan.notes:
        if note.startswith("warning:"):
            _log.warning("table %s: %s", key, note.removeprefix("warning: "))
    managed = (
        predictive.managed_reason(bundle, key, uc_client) if engine in DATABRICKS_ENGINES else None
    )
    if managed is not None:
        head["message"] = "; ".join(filter(None, [managed, head["message"]]))
        return CompactionReport(
            **head, status="managed", duration_s=monotonic() - t0, after=head["before"],
            version_after=state.version,
        )  # fmt: skip
    if dry_run or (not plan.optimizes and plan.vacuum is None):
        return CompactionReport(
            **head, status="planned" if dry_run else "nothing_to_do",
            duration_s=monotonic() - t0, after=head["before"], version_after=state.version,
        )  # fmt: skip

    if engine == "databricks-job" and runner is None:
        from streamops.compaction.databricks_job import JobRequest, run_on_databricks

        request = JobRequest(key, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)
        remote = run_on_databricks(bundle, request, sleep=sleep)
        # The cluster planned and ran it; the figures are its own, the time is the whole trip.
        return replace(remote, engine=engine, duration_s=monotonic() - t0)
    if runner is None:
        runner = spark_runner(bundle, spark) if engine == "spark-sql" else sql_runner(bundle)
    run_id = uuid.uuid4().hex
    marker = log.Marker(run_id=run_id, read_version=plan.read_version, deferred=plan.deferred)
    policy = retry_policy(bundle, sleep)
    retries = run_plan(plan, runner, policy, marker_json=marker.to_json(), run_id=run_id)

    dt = log.open_table(location, options)
    if dt is None:
        raise CompactionError(f"the Delta table at {location} disappeared while compacting it")
    done = log.run_metrics(location, state.version, dt.version(), run_id, options)
    return CompactionReport(
        **head, status="compacted", duration_s=monotonic() - t0,
        after=_snapshot(log.live_files(dt), plan.small_file_size), version_after=dt.version(),
        files_removed=done.files_removed, files_added=done.files_added,
        vacuum_files_deleted=done.vacuum_files_deleted, retries=retries,
    )  # fmt: skip


def _plan_fields(plan: CompactionPlan, state: TableState) -> dict[str, Any]:
    """The report's fields that come from the plan (the same whether or not it runs)."""
    return {
        "before": _snapshot(state.files, plan.small_file_size),
        "read_version": state.version,
        "partitions_touched": tuple(p.label for p in plan.partitions),
        "partitions_skipped": tuple(f"{s.label} ({s.reason})" for s in plan.skipped),
        "zorder_by": plan.zorder_by,
        "cluster_by": plan.cluster_by,
        "vacuum_retention_hours": plan.vacuum.retention_hours if plan.vacuum else None,
        "vacuum_reason": plan.vacuum.governed_by if plan.vacuum else None,
        "plan": plan.to_dict(),
        "message": "; ".join(plan.notes),
    }
