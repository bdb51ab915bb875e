"""bundle -> Databricks job settings (`jobs.JobSettings`), one job per streaming job of the bundle.

Every job: one task running `jobs/stream.py` on a job cluster sized from `targets.<t>.cluster`,
the bundle's libraries, one run at a time, no timeout, tags naming where it came from.

Streaming jobs are `continuous` (the default of `jobs.<j>.continuous` for a processing_time
trigger): Databricks starts the run when the job is created or unpaused and starts a new one
after any exit, a clean exit 0 included (a triggered run whose query stopped would just end, a
silent outage), with exponential backoff after failures (`task_retry_mode: ON_FAILURE`). The Jobs
API refuses task retry fields there. Catch-up (`available_now`) jobs stop by design once caught
up: they stay triggered and retry 3 times; a streaming job written `continuous: false` is
triggered with unlimited retries, `retry_interval` apart.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from streamops.bundle.jobs_api_fields import (
    FieldProblem,
    cluster_problems,
    dotted,
    job_settings_problems,
    library_problems,
)
from streamops.deploy import governance
from streamops.errors import DeployError
from streamops.shipping.artifacts import workspace_root
from streamops.shipping.cluster import cluster_spec

if TYPE_CHECKING:
    from databricks.sdk.service import compute, jobs

    from streamops.bundle import Bundle
    from streamops.bundle.models import Job
    from streamops.shipping.artifacts import Artifacts

CLUSTER_KEY = "streamops"
ENTRYPOINT = "jobs/stream.py"
# A failing catch-up run is retried a few times only: it is re-run by hand (action=backfill).
AVAILABLE_NOW_RETRIES = 3


def job_name(bundle: Bundle, job_key: str) -> str:
    """The Databricks job name; deploy finds the live job by it, so it must never change."""
    return f"{bundle.spec.project}-{bundle.target_name}-{job_key}"


def task_parameters(
    bundle: Bundle,
    job_key: str,
    *,
    bundle_file: str | None = None,
    available_now: bool = False,
    recover: bool = False,
) -> list[str]:
    """Arguments of `jobs/stream.py` (what `python_params` of run-now replaces); `bundle_file` is
    the uploaded bundle.yml (`Artifacts.bundle_file`)."""
    bundle_file = bundle_file or f"{workspace_root(bundle)}/bundle.yml"
    params = ["--bundle", bundle_file, "--target", bundle.target_name, "--job", job_key]
    if available_now:
        params.append("--available-now")
    if recover:
        params.append("--recover")
    return params


def _databricks_target(bundle: Bundle) -> None:
    if bundle.target.mode != "databricks":
        raise DeployError(
            f"target '{bundle.target_name}' has mode '{bundle.target.mode}': there is no "
            "Databricks workspace to deploy to. Fix: pick a target with `mode: databricks` "
            f"({', '.join(n for n, t in bundle.spec.targets.items() if t.mode == 'databricks')})"
        )


def _raise(bundle: Bundle, base: tuple[str | int, ...], problems: list[FieldProblem]) -> None:
    if problems:
        lines = [
            f"{bundle.path.name}: {dotted((*base, *p.path))}: {p.message}. Fix: {p.fix}"
            for p in problems
        ]
        raise DeployError("\n".join(lines))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def tags(bundle: Bundle, job_key: str) -> dict[str, str]:
    job = bundle.job(job_key)
    base = {
        "managed_by": "streamops",
        "streamops_project": bundle.spec.project,
        "streamops_target": bundle.target_name,
        "streamops_job": job_key,
        "streamops_query": job.query_name,
    }
    return {**base, **bundle.target.databricks_or_default.tags, **job.tags}


def build_job_settings(
    bundle: Bundle, job_key: str, artifacts: Artifacts | None = None
) -> jobs.JobSettings:
    """The Databricks job for `job_key` on the bundle's target, as typed sdk dataclasses.

    `artifacts` names the uploaded entrypoint, bundle.yml and wheel(s); default: those of the
    project as it is now (`artifacts.collect`: builds the wheel, no network).
    """
    from databricks.sdk.service import jobs

    _databricks_target(bundle)
    job = bundle.job(job_key)
    cl = bundle.target.cluster
    if not cl.spark_version or not cl.node_type_id:
        raise DeployError(
            f"{bundle.path.name}: targets.{bundle.target_name}.cluster: spark_version and "
            "node_type_id are needed for the job cluster. Fix: set e.g. "
            "`spark_version: 18.0.x-scala2.13` and `node_type_id: Standard_D8ds_v5`"
        )
    if artifacts is None:
        from streamops.shipping.artifacts import collect

        artifacts = collect(bundle, job_key)
    email, webhooks = governance.notifications(bundle, job)
    settings = jobs.JobSettings(
        name=job_name(bundle, job_key),
        description=job.description or None,
        tags={**tags(bundle, job_key), **governance.acl_tag(bundle)},
        max_concurrent_runs=1,
        timeout_seconds=0,
        job_clusters=[
            jobs.JobCluster(job_cluster_key=CLUSTER_KEY, new_cluster=_cluster(bundle, job))
        ],
        tasks=[_task(bundle, job_key, artifacts)],
        queue=jobs.QueueSettings(enabled=False),
        run_as=governance.run_as(bundle),
        email_notifications=email,
        webhook_notifications=webhooks,
        health=governance.health(bundle, job),
    )
    if job.continuous:
        settings.continuous = jobs.Continuous(
            pause_status=jobs.PauseStatus.UNPAUSED,
            task_retry_mode=jobs.TaskRetryMode.ON_FAILURE,
        )
    job_extra = bundle.target.databricks_or_default.job_settings
    _raise(bundle, (*_db_path(bundle), "job_settings"), job_settings_problems(job_extra))
    if job_extra:
        settings = jobs.JobSettings.from_dict(_merge(settings.as_dict(), job_extra))
    check_settings(settings.as_dict())
    return settings


def _db_path(bundle: Bundle) -> tuple[str, ...]:
    return ("targets", bundle.target_name, "databricks")


def _cluster(bundle: Bundle, job: Job) -> compute.ClusterSpec:
    """The job cluster: streamops' spec with `databricks.cluster_settings` merged over it."""
    from databricks.sdk.service import compute

    cluster_extra = bundle.target.databricks_or_default.cluster_settings
    _raise(bundle, (*_db_path(bundle), "cluster_settings"), cluster_problems(cluster_extra))
    cluster = cluster_spec(bundle, job)
    if cluster_extra:
        cluster = compute.ClusterSpec.from_dict(_merge(cluster.as_dict(), cluster_extra))
    return cluster


def _task(bundle: Bundle, job_key: str, artifacts: Artifacts) -> jobs.Task:
    """The job's one task: the uploaded entrypoint with its parameters and libraries."""
    from databricks.sdk.service import compute, jobs

    db = bundle.target.databricks_or_default
    job = bundle.job(job_key)
    lib_specs = artifacts.libraries() + db.libraries
    _raise(bundle, (*_db_path(bundle), "libraries"), library_problems(lib_specs))
    task = jobs.Task(
        task_key=job_key,
        description=job.description or None,
        job_cluster_key=CLUSTER_KEY,
        spark_python_task=jobs.SparkPythonTask(
            python_file=artifacts.entrypoint,
            parameters=task_parameters(bundle, job_key, bundle_file=artifacts.bundle_file),
        ),
        libraries=[compute.Library.from_dict(x) for x in lib_specs],
        timeout_seconds=0,
    )
    if not job.continuous:  # continuous jobs: the platform restarts them (no retry fields)
        task.max_retries = AVAILABLE_NOW_RETRIES if job.trigger.available_now else -1
        task.min_retry_interval_millis = int(db.retry_interval * 1000)
        task.retry_on_timeout = False
    return task


def check_settings(payload: dict[str, Any]) -> None:
    """Refuse a payload with a key the Jobs API 2.2 does not know (a bug here, not the user's)."""
    problems = job_settings_problems(payload)
    if problems:
        raise DeployError("; ".join(f"{dotted(p.path)}: {p.message}" for p in problems))
