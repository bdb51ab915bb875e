"""Checkpoint integrity: check every job's bronze and gold Spark checkpoints (structure, broker
offsets when the broker is reachable, the recorded query id), back up the healthy ones, page on
problems. Thin: the work is `streamops.checkpoint.integrity.check_and_page`.

One mapped task per job, so one broken checkpoint does not hide the others; a task with problems
pages once (dedup key `streamops/<target>/checkpoint/<job>`) and fails, without retries (the
next scheduled run checks again). A job that never ran is reported as missing, not failed.
Schedule: `targets.<target>.checkpoints.integrity_schedule`; target from $STREAMOPS_TARGET (a
running task without it fails, naming it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from streamops.entry import default_target, load

BUNDLE = load(Path(__file__).resolve().parents[1] / "bundle.yml", default_target())

with DAG(
    dag_id="streamops_checkpoint_integrity",
    description="Check, back up and page on the Spark checkpoints of every job in bundle.yml",
    schedule=BUNDLE.target.checkpoints.integrity_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["streamops", "checkpoint", BUNDLE.target_name],
) as dag:

    @task(max_active_tis_per_dag=4)
    def integrity(job: str) -> dict[str, Any]:
        """Check and back up one job's checkpoints; pages and fails on problems."""
        from streamops.entry import check_and_page, local_broker, task_bundle

        # The broker checks find the local target's 'embedded' broker only when the task runs.
        return check_and_page(task_bundle(BUNDLE).with_local_broker(local_broker), job)

    integrity.expand(job=list(BUNDLE.jobs))
