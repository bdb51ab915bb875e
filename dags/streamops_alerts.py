"""Alert watchdog: every 5 minutes, evaluate every alert rule of bundle.yml from the exported
metrics (local JSON lines, or Log Analytics with azure-monitor-query), page new breaches and
resolve recovered ones; every deployed query that started must report (the deploy record).
Thin: the work is `streamops.deploy.watch.watchdog`.

The jobs page on per-batch rules themselves (fast path); this DAG is the only path that sees a
dead or stalled job, and when the alert query itself fails it pages "monitoring is blind".
The target comes from $STREAMOPS_TARGET: a running task without it fails, naming it (parsing
falls back to 'local').
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from streamops.entry import default_target, load

BUNDLE = load(Path(__file__).resolve().parents[1] / "bundle.yml", default_target())

with DAG(
    dag_id="streamops_alerts",
    description="Evaluate alert rules from exported metrics; page and resolve (dead/stalled jobs)",
    schedule=timedelta(minutes=5),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=4),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["streamops", "alerts", BUNDLE.target_name],
) as dag:

    @task(execution_timeout=timedelta(minutes=3))
    def watchdog() -> dict[str, Any]:
        """One round: evaluate, page, resolve; the summary goes to the log and XCom."""
        from streamops.entry import task_bundle
        from streamops.entry import watchdog as run_watchdog

        return run_watchdog(task_bundle(BUNDLE))

    watchdog()
