"""The Databricks job engine: the nightly compaction of a table as a one-time job run.

Why not a SQL warehouse: the compaction marker must ride in the OPTIMIZE commit's own metadata
(`spark.databricks.delta.commitInfo.userMetadata`, a session setting), and a warehouse takes
neither arbitrary Spark settings (Databricks SQL accepts only its listed parameters) nor one
session across Statement Execution API calls. A job cluster's Spark session takes both, so the
cluster runs the very code the local target runs (`compact_table` with the spark-sql engine, in
`jobs/compact.py`): the same plan, marker, file-size settings and conflict retries.

Airflow submits the run (`POST /api/2.2/jobs/runs/submit`) through the target's provider hook
(`streamops.databricks_access`), waits on the injected clock,
and reads the task's output (`runs/get-output` `logs`): the cluster prints one result line, the
report as JSON or the failure (a lost commit race names the conflicting operation).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamops.clock import Clock
from streamops.compaction.run_report import CompactionReport
from streamops.databricks_access import DatabricksAccess, access_for
from streamops.errors import CompactionConflictError, CompactionError
from streamops.shipping.cluster import cluster_spec

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.shipping.artifacts import Artifacts

_log = logging.getLogger(__name__)

ENTRYPOINT = "jobs/compact.py"
# The cluster's one result line in the task's stdout: this prefix, then JSON.
REPORT_LINE = "streamops.compaction.report "
ERROR_LINE = "streamops.compaction.error "


@dataclass(frozen=True)
class JobRequest:
    """What the cluster is asked to do for one table."""

    table: str
    zorder: bool = False
    vacuum: bool = False
    retain_hours: float | None = None

    def parameters(self, bundle_path: str, target: str) -> list[str]:
        """The arguments of `jobs/compact.py`."""
        out = ["--bundle", bundle_path, "--target", target, "--table", self.table]
        if self.zorder:
            out.append("--zorder")
        if self.vacuum:
            out.append("--vacuum")
        if self.retain_hours is not None:
            out += ["--retain-hours", f"{self.retain_hours:g}"]
        return out


def submit_payload(bundle: Bundle, request: JobRequest, arts: Artifacts) -> dict[str, Any]:
    """The runs/submit body, built as databricks-sdk dataclasses (field names checked there).

    The run starts the uploaded `jobs/compact.py` with the uploaded bundle.yml and wheel (the
    same content-addressed artifacts a deploy uploads) on a cluster like the streaming jobs'
    (access mode, storage login, secret references), so it reads the tables they write. It runs
    as the target's `databricks.run_as` service principal: a dedicated (single-user) cluster runs
    only as its `single_user_name`, and Databricks refuses a run submitted by anyone else.
    """
    from databricks.sdk.service import compute, jobs

    cl = bundle.target.cluster
    if not cl.spark_version or not cl.node_type_id:
        raise CompactionError(
            f"{bundle.path.name}: targets.{bundle.target_name}.cluster: spark_version and "
            "node_type_id are needed for the compaction job's cluster. Fix: set e.g. "
            "`spark_version: 18.0.x-scala2.13` and `node_type_id: Standard_D8ds_v5`, or "
            "`compaction.databricks_engine: databricks-sql`"
        )
    if not arts.compact_entrypoint:
        raise CompactionError(
            f"{ENTRYPOINT} is missing beside {bundle.path.name}: the compaction job runs it. "
            "Fix: keep jobs/compact.py in the project (as in the streamops project), or "
            "`compaction.databricks_engine: databricks-sql`"
        )
    libs = arts.libraries() + bundle.target.databricks_or_default.libraries
    task = jobs.SubmitTask(
        task_key=f"compact_{request.table}",
        spark_python_task=jobs.SparkPythonTask(
            python_file=arts.compact_entrypoint,
            parameters=request.parameters(arts.bundle_file, bundle.target_name),
        ),
        new_cluster=cluster_spec(bundle, None),
        libraries=[compute.Library.from_dict(x) for x in libs],
    )
    body: dict[str, Any] = {
        "run_name": f"{bundle.spec.project}-{bundle.target_name}-compact-{request.table}",
        "tasks": [task.as_dict()],
    }
    run_as = bundle.target.databricks_or_default.run_as
    if run_as:  # the cluster's single_user_name (shipping.cluster.cluster_spec), the same principal
        body["run_as"] = jobs.JobRunAs(service_principal_name=run_as).as_dict()
    return body


def run_on_databricks(
    bundle: Bundle,
    request: JobRequest,
    *,
    poll_s: float = 15.0,
    timeout_s: float = 6 * 3600,
    clock: Clock | None = None,
    access: DatabricksAccess | None = None,
) -> CompactionReport:
    """Submit the table's compaction as a one-time run, wait for it, and return its report.

    `access` defaults to the bundle's (`access_for`), `clock` (the polls) to the access's.
    Raises CompactionConflictError when the cluster lost every commit race, CompactionError
    (naming the run's page) when the run failed otherwise or printed no result.
    """
    from streamops.shipping.one_time_run import run_once

    done = run_once(
        access or access_for(bundle),
        bundle,
        lambda arts: submit_payload(bundle, request, arts),
        what=f"compaction run {{run_id}} of table '{request.table}'",
        timeout_s=timeout_s,
        poll_s=poll_s,
        clock=clock,
        on_timeout=lambda msg: CompactionError(
            f"{msg}. Fix: a bigger cluster (targets.<t>.cluster) or fewer partitions per night"
        ),
    )
    return _result(request.table, done.run_id, done.url, done.state, done.output)


def _result(
    table: str, run_id: int, url: str, state: Any, output: dict[str, Any]
) -> CompactionReport:
    lines = str(output.get("logs") or "").splitlines()
    for line in reversed(lines):
        if line.startswith(REPORT_LINE):
            return CompactionReport.from_dict(json.loads(line.removeprefix(REPORT_LINE)))
        if line.startswith(ERROR_LINE):
            err = json.loads(line.removeprefix(ERROR_LINE))
            if err.get("kind") == "conflict":
                raise CompactionConflictError(
                    f"{err['message']} (Databricks run {run_id}: {url})",
                    table=table,
                    operation=err["operation"],
                    attempts=int(err["attempts"]),
                )
            raise CompactionError(f"{err['message']} (Databricks run {run_id}: {url})")
    why = output.get("error") or getattr(state, "state_message", "") or "no result line"
    raise CompactionError(
        f"compaction run {run_id} of table '{table}' ended {state.result_state or '?'} without a "
        f"result: {why}. Fix: read the run's driver log at {url}"
    )
