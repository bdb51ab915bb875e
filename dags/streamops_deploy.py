"""streamops_deploy: deploy / restart / backfill / stop a streaming job, triggered from the UI.

Thin: loads bundle.yml once (for the params' choices), builds two tasks; the work is in
streamops.deploy, called by the operators in plugins/streamops_airflow at run time.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG, Param
from streamops_airflow.operators import CheckParamsOperator, StreamopsActionOperator

from streamops.entry import load

BUNDLE_PATH = Path(__file__).resolve().parents[1] / "bundle.yml"
# Any target will do for the choices; the action loads the bundle for the chosen target.
BUNDLE = load(BUNDLE_PATH, "local", strict=False)
TARGETS = {name: t.mode for name, t in BUNDLE.spec.targets.items()}
JOBS = list(BUNDLE.spec.jobs)
DATABRICKS = [n for n, m in TARGETS.items() if m == "databricks"] or list(TARGETS)

with DAG(
    dag_id="streamops_deploy",
    description="Deploy, restart, backfill or stop a streaming job on Databricks",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["streamops", "databricks"],
    doc_md=__doc__,
    params={
        "job": Param(JOBS[0], type="string", enum=JOBS, title="Job (bundle.yml jobs.*)"),
        "target": Param(DATABRICKS[0], type="string", enum=list(TARGETS), title="Target"),
        "action": Param(
            "deploy",
            type="string",
            enum=["deploy", "restart", "backfill", "stop", "recover"],
            title="Action",
            description="deploy: create/update from bundle.yml (restarts a changed "
            "running job); restart: stop the run, wait, start; backfill: one "
            "availableNow run; stop: cancel the run; recover: the checkpoint is lost, "
            "stop the run and start one from offsets rebuilt from the Delta sink",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run (deploy: print the plan only)"),
        "force": Param(
            False, type="boolean", title="Force (deploy over a job edited outside bundle.yml)"
        ),
    },
) as dag:
    check = CheckParamsOperator(task_id="check_params", targets=TARGETS, jobs=JOBS, retries=0)
    act = StreamopsActionOperator(task_id="run_action", bundle_path=BUNDLE_PATH, retries=0)
    check >> act
