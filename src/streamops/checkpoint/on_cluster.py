"""The checkpoint-integrity check as a one-time Databricks run, for Airflow workers with no login.

The checkpoints of a Databricks target live on ADLS, which an Airflow worker may not reach (no
storage login there); the job cluster does, through its Spark session
(`StorageLogin(kind="cluster_spark")`). So, as the nightly compaction's `databricks-job` engine
does (`streamops.compaction.databricks_job`, the model), Airflow uploads the project's code
(content-addressed, only what is not there yet), submits `jobs/check.py` through the target's
provider hook, waits on the injected clock and reads the one result line from `runs/get-output`.
The cluster only checks (and backs up); paging and failing the task stay on the Airflow side.
The cluster's side is `checkpoint.cluster_check` (`jobs/check.py` calls it).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from streamops.clock import Clock
from streamops.databricks_access import DatabricksAccess, access_for
from streamops.errors import CheckpointError
from streamops.shipping.cluster import cluster_spec

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.shipping.artifacts import Artifacts

_log = logging.getLogger(__name__)

ENTRYPOINT = "jobs/check.py"
# The cluster's one result line in the task's stdout: this prefix, then JSON.
RESULT_LINE = "streamops.checkpoint.integrity "
ERROR_LINE = "streamops.checkpoint.error "


def submit_payload(bundle: Bundle, job_name: str, arts: Artifacts) -> dict[str, Any]:
    """The runs/submit body (databricks-sdk dataclasses): the uploaded `jobs/check.py`, bundle.yml
    and wheel on a cluster like the streaming jobs' (so it has their storage login), run as the
    target's `databricks.run_as` (a single-user cluster runs only as its `single_user_name`)."""
    from databricks.sdk.service import compute, jobs

    where = f"{bundle.path.name}: targets.{bundle.target_name}"
    cl = bundle.target.cluster
    if not cl.spark_version or not cl.node_type_id:
        raise CheckpointError(
            f"{where}.cluster: spark_version and node_type_id are needed for the checkpoint "
            "check's cluster (no storage login on this worker). Fix: set e.g. `spark_version: "
            "18.0.x-scala2.13` and `node_type_id: Standard_D8ds_v5`, or give the Airflow workers "
            "a storage login ($STREAMOPS_STORAGE_OPTIONS)"
        )
    if not arts.check_entrypoint:
        raise CheckpointError(
            f"{ENTRYPOINT} is missing beside {bundle.path.name}: the checkpoint check's cluster "
            "run starts it. Fix: keep jobs/check.py in the project (as in the streamops project)"
        )
    libs = arts.libraries() + bundle.target.databricks_or_default.libraries
    params = ["--bundle", arts.bundle_file, "--target", bundle.target_name, "--job", job_name]
    task = jobs.SubmitTask(
        task_key=f"check_{job_name}",
        spark_python_task=jobs.SparkPythonTask(
            python_file=arts.check_entrypoint,
            parameters=params,
        ),
        new_cluster=cluster_spec(bundle, None),
        libraries=[compute.Library.from_dict(x) for x in libs],
    )
    body: dict[str, Any] = {
        "run_name": f"{bundle.spec.project}-{bundle.target_name}-check-{job_name}",
        "tasks": [task.as_dict()],
    }
    run_as = bundle.target.databricks_or_default.run_as
    if run_as:
        body["run_as"] = jobs.JobRunAs(service_principal_name=run_as).as_dict()
    return body


def check_on_cluster(
    bundle: Bundle,
    job_name: str,
    *,
    poll_s: float = 15.0,
    timeout_s: float = 3600.0,
    clock: Clock | None = None,
    access: DatabricksAccess | None = None,
) -> dict[str, Any]:
    """Run `check_job` for `job_name` on a Databricks job cluster; its result, as
    `IntegrityResult.as_dict` (`IntegrityResult.from_dict` reads it back).

    `access` defaults to the bundle's, `clock` (the polls) to the access's. Raises
    CheckpointError (naming the run's page) when the run timed out, failed or printed no result.
    """
    from streamops.shipping.one_time_run import run_once

    done = run_once(
        access or access_for(bundle),
        bundle,
        lambda arts: submit_payload(bundle, job_name, arts),
        what=f"checkpoint check run {{run_id}} of job '{job_name}'",
        timeout_s=timeout_s,
        poll_s=poll_s,
        clock=clock,
        on_timeout=lambda msg: CheckpointError(
            f"{msg}. Fix: read the run's driver log; a checkpoint with very many files may need "
            "a longer timeout"
        ),
    )
    return result_of(job_name, done.run_id, done.url, done.state, done.output)


def result_of(
    job_name: str, run_id: int, url: str, state: Any, output: dict[str, Any]
) -> dict[str, Any]:
    """The result in a run's output (its last result line); CheckpointError otherwise."""
    for line in reversed(str(output.get("logs") or "").splitlines()):
        if line.startswith(RESULT_LINE):
            found: dict[str, Any] = json.loads(line.removeprefix(RESULT_LINE))
            return found
        if line.startswith(ERROR_LINE):
            err = json.loads(line.removeprefix(ERROR_LINE))
            raise CheckpointError(f"{err['message']} (Databricks run {run_id}: {url})")
    why = output.get("error") or getattr(state, "state_message", "") or "no result line"
    raise CheckpointError(
        f"checkpoint check run {run_id} of job '{job_name}' ended "
        f"{getattr(state, 'result_state', None) or '?'} without a result: {why}. "
        f"Fix: read the run's driver log at {url}"
    )
