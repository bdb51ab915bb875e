"""Nightly Delta compaction of every table in bundle.yml: OPTIMIZE (Z-ORDER) changed partitions,
safe VACUUM, one report per table. Thin: the work is `streamops.compaction.nightly`.

One mapped task per table, so a failing table does not stop the others; each retries
`compaction.task_retries` times and pages on its last failure. Schedule and time zone come from
`compaction:` in bundle.yml; the target from $STREAMOPS_TARGET (a running task without it fails,
naming it). On the local target a task runs the SQL through a Spark session it starts only when
its table has something to run; on Databricks targets through the bundle's SQL warehouse.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, TriggerRule, get_current_context, task

from streamops.entry import default_target, load

BUNDLE = load(Path(__file__).resolve().parents[1] / "bundle.yml", default_target())
SETTINGS = BUNDLE.spec.compaction

with DAG(
    dag_id="streamops_nightly_compaction",
    description="OPTIMIZE / Z-ORDER changed partitions and VACUUM every table of bundle.yml",
    schedule=CronTriggerTimetable(SETTINGS.schedule, timezone=SETTINGS.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=SETTINGS.timezone),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": SETTINGS.task_retries,
        "retry_delay": timedelta(seconds=SETTINGS.task_retry_delay.seconds),
        "retry_exponential_backoff": True,
    },
    tags=["streamops", "compaction", BUNDLE.target_name],
) as dag:

    @task(max_active_tis_per_dag=2)
    def compact(table: str) -> dict[str, Any]:
        """Compact one table; the report goes to the task log, XCom, JSON and metrics."""
        from streamops.entry import nightly_table, task_bundle

        ti = get_current_context()["ti"]
        return nightly_table(
            task_bundle(BUNDLE), table, attempt=ti.try_number, attempts=SETTINGS.task_retries + 1
        )

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summary(reports: list[dict[str, Any] | None]) -> dict[str, Any]:
        """One line per table; fails the run (after every table ran) if one failed."""
        from streamops.entry import summarize, task_bundle

        return summarize(task_bundle(BUNDLE), list(reports))

    summary(compact.expand(table=list(BUNDLE.spec.tables)))
