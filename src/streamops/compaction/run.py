"""Compact one table of the bundle: read the log, plan, run the SQL on the target's engine, report.

Locally the SQL runs through Spark ("spark-sql": a local session from `session_for`, created
only when there is something to run); on Databricks targets as a one-time job run of
jobs/compact.py ("databricks-job", the same code on the cluster's session) or through a SQL
warehouse ("databricks-sql"). On Databricks, a Unity Catalog table under predictive
optimization is left to it. Planning and the report read the Delta log with delta-rs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamops.clock import REAL, Clock
from streamops.compaction import log, predictive
from streamops.compaction.plan import CompactionPlan, FileInfo, TableState, build_plan
from streamops.compaction.retry import RetryPolicy
from streamops.compaction.run_report import CompactionReport, Snapshot
from streamops.compaction.sql import run_plan
from streamops.errors import CompactionError, UsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle, StorageLogin
    from streamops.compaction.databricks import DatabricksSqlRunner
    from streamops.compaction.sql import StatementRunner
    from streamops.databricks_access import DatabricksAccess

_log = logging.getLogger("streamops.compaction")

ENGINES = ("spark-sql", "databricks-sql", "databricks-job")
# Engines that run on a Databricks workspace, where Unity Catalog may manage the table.
DATABRICKS_ENGINES = ("databricks-sql", "databricks-job")


def _snapshot(files: tuple[FileInfo, ...], small: int) -> Snapshot:
    return Snapshot(len(files), sum(f.size for f in files), sum(f.size < small for f in files))


def retry_policy(bundle: Bundle, clock: Clock = REAL) -> RetryPolicy:
    """The bundle's retries of a statement that lost a commit race (`compaction:` settings)."""
    c = bundle.spec.compaction
    return RetryPolicy(max_retries=c.max_retries, backoff_s=c.backoff.seconds, clock=clock)


def default_engine(bundle: Bundle) -> str:
    """Spark SQL on the local target; on Databricks targets `compaction.databricks_engine` (a
    one-time job run by default: only a cluster session can tag the OPTIMIZE commit)."""
    if bundle.target.mode == "local":
        return "spark-sql"
    return bundle.spec.compaction.databricks_engine


def sql_runner(bundle: Bundle, access: DatabricksAccess | None = None) -> DatabricksSqlRunner:
    """The SQL warehouse runner for a Databricks target, from the bundle (and its access)."""
    from streamops.compaction.databricks import DatabricksSqlRunner
    from streamops.databricks_access import access_for

    wid = bundle.spec.compaction.warehouse_ids.get(bundle.target_name)
    if not wid:
        raise UsageError(
            f"target '{bundle.target_name}' compacts with databricks-sql but bundle.yml names no "
            f"warehouse for it. Fix: add `compaction.warehouse_ids.{bundle.target_name}: <id>`"
        )
    return DatabricksSqlRunner(access=access or access_for(bundle), warehouse_id=wid)


def spark_runner(bundle: Bundle, spark: SparkSession | None) -> StatementRunner:
    """The Spark runner on `spark`, else on the target's session (started here, on first use)."""
    from streamops.compaction.spark_sql import SparkSqlRunner

    if spark is None:
        from streamops.pipeline.session import session_for

        spark = session_for(bundle, app_name="streamops-compaction")
    return SparkSqlRunner(spark)


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
    state = log.read_state(location, bundle.runtime.storage(location))
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
    access: DatabricksAccess | None = None,
    clock: Clock = REAL,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CompactionReport:
    """OPTIMIZE (Z-ORDER) the changed partitions of one table and VACUUM it safely; the report.

    `runner` runs the SQL (default: the engine's, on `spark` for spark-sql); a Spark session is
    only started when there is something to run. `clock` times the run and paces the retries
    (and a Databricks run's polls); `access` reaches the workspace (default: the bundle's).
    Raises UnsafeVacuumError before touching anything when the retention would break a reader,
    CompactionError when conflicts keep winning or a statement fails.
    """
    _check_table(bundle, key)
    engine = engine or default_engine(bundle)
    if engine not in ENGINES:
        raise CompactionError(f"unknown compaction engine '{engine}'; use one of {ENGINES}")
    started, t0 = now().isoformat(), clock.time()
    location = bundle.table_location(key)
    login = bundle.runtime.storage(location)
    head: dict[str, Any] = dict(
        table=key, target=bundle.target_name, engine=engine, dry_run=dry_run, started_at=started
    )
    if engine == "databricks-job" and runner is None and not dry_run and not login.reachable:
        # No storage login here (an Airflow worker without one for ADLS): the cluster, which
        # has one, reads the log, plans and runs; a night with nothing to do costs one run.
        return _on_cluster(bundle, key, zorder, vacuum, retain_hours, access, clock, t0)
    state = log.read_state(location, login)
    if state is None:
        empty = Snapshot(0, 0, 0)
        missing: dict[str, Any] = {"status": "no_table", "before": empty, "after": empty}
        message = f"no Delta table at {location} yet"
        return CompactionReport(**head, **missing, message=message, duration_s=clock.time() - t0)
    plan = _plan(
        bundle, key, state, engine, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours
    )
    head |= _plan_fields(plan, state)
    done = _not_run(bundle, key, engine, plan, state, head, dry_run=dry_run, access=access)
    if done is None and engine == "databricks-job" and runner is None:
        return _on_cluster(bundle, key, zorder, vacuum, retain_hours, access, clock, t0)
    if done is None:
        if runner is None:
            runner = (
                spark_runner(bundle, spark) if engine == "spark-sql" else sql_runner(bundle, access)
            )
        done = _run(bundle, plan, state, runner, location, login, clock)
    return CompactionReport(**(head | done), duration_s=clock.time() - t0)


def _on_cluster(
    bundle: Bundle,
    key: str,
    zorder: bool,
    vacuum: bool,
    retain_hours: float | None,
    access: DatabricksAccess | None,
    clock: Clock,
    t0: float,
) -> CompactionReport:
    from streamops.compaction.databricks_job import JobRequest, run_on_databricks

    request = JobRequest(key, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)
    remote = run_on_databricks(bundle, request, clock=clock, access=access)
    # The cluster planned and ran it; the figures are its own, the time is the whole trip.
    return replace(remote, engine="databricks-job", duration_s=clock.time() - t0)


def _plan(
    bundle: Bundle,
    key: str,
    state: TableState,
    engine: str,
    *,
    zorder: bool,
    vacuum: bool,
    retain_hours: float | None,
) -> CompactionPlan:
    """The plan, addressing the table as the engine's session does; its warnings logged."""
    plan = build_plan(bundle, key, state, zorder=zorder, vacuum=vacuum, retain_hours=retain_hours)
    if engine == "spark-sql":
        # A Spark session addresses the table as the streams do: by its Unity Catalog name on a
        # Databricks target (the job engine's cluster), by its path where there is no catalog.
        plan = replace(plan, uc_name=bundle.table_ref(key).name)
    for note in plan.notes:
        if note.startswith("warning:"):
            _log.warning("table %s: %s", key, note.removeprefix("warning: "))
    return plan


def _not_run(
    bundle: Bundle,
    key: str,
    engine: str,
    plan: CompactionPlan,
    state: TableState,
    head: dict[str, Any],
    *,
    dry_run: bool,
    access: DatabricksAccess | None,
) -> dict[str, Any] | None:
    """The report's fields when nothing runs (managed by Databricks, a dry run, nothing to do)."""
    unchanged = {"after": head["before"], "version_after": state.version}
    if engine in DATABRICKS_ENGINES:
        managed = predictive.managed_reason(bundle, key, access)
        if managed is not None:
            message = "; ".join(filter(None, [managed, head["message"]]))
            return {**unchanged, "status": "managed", "message": message}
    if dry_run or (not plan.optimizes and plan.vacuum is None):
        return {**unchanged, "status": "planned" if dry_run else "nothing_to_do"}
    return None


def _run(
    bundle: Bundle,
    plan: CompactionPlan,
    state: TableState,
    runner: StatementRunner,
    location: str,
    login: StorageLogin,
    clock: Clock,
) -> dict[str, Any]:
    """Run the plan's statements (conflicts retried); the report's fields from the new log."""
    run_id = uuid.uuid4().hex
    marker = log.Marker(run_id=run_id, read_version=plan.read_version, deferred=plan.deferred)
    policy = retry_policy(bundle, clock)
    retries = run_plan(plan, runner, policy, marker_json=marker.to_json(), run_id=run_id)
    dt = log.open_table(location, login)
    if dt is None:
        raise CompactionError(f"the Delta table at {location} disappeared while compacting it")
    done = log.run_metrics(location, state.version, dt.version(), run_id, login)
    return {
        "status": "compacted",
        "after": _snapshot(log.live_files(dt), plan.small_file_size),
        "version_after": dt.version(),
        "files_removed": done.files_removed,
        "files_added": done.files_added,
        "vacuum_files_deleted": done.vacuum_files_deleted,
        "retries": retries,
    }


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
