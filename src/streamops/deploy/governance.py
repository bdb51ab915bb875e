"""Who the job runs as, who may see, run or manage it, who hears of failures, and when
Databricks itself calls a backlog unhealthy: all from `targets.<t>.databricks` and `alerts`.

Permissions travel in two ways, as the Jobs API allows: `access_control_list` in the create
request (it is not a job setting, so `jobs/reset` cannot carry it), and the Permissions API's
update on later deploys. A fingerprint of the declared permissions rides in the job's tags, so
a change of permissions alone is a change of the job that the plan shows.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from databricks.sdk.service import jobs

    from streamops.bundle import Bundle, Job
    from streamops.databricks_access.hook import StreamopsHook

ACL_TAG = "streamops_acl"


def run_as(bundle: Bundle) -> jobs.JobRunAs | None:
    """The service principal the job runs as, or None (the job's owner, Databricks' default)."""
    from databricks.sdk.service import jobs

    name = bundle.target.databricks_or_default.run_as
    return None if name is None else jobs.JobRunAs(service_principal_name=name)


def access_control_list(bundle: Bundle) -> list[dict[str, str]]:
    """The declared group permissions in the Jobs API's `access_control_list` form."""
    perms = bundle.target.databricks_or_default.permissions
    return [{"group_name": p.group, "permission_level": p.level} for p in perms]


def acl_tag(bundle: Bundle) -> dict[str, str]:
    """{ACL_TAG: fingerprint} of the declared permissions ({} when none are declared)."""
    acl = access_control_list(bundle)
    if not acl:
        return {}
    text = json.dumps(sorted(acl, key=lambda e: e["group_name"]), sort_keys=True)
    return {ACL_TAG: hashlib.sha256(text.encode()).hexdigest()[:16]}


def with_access_control(bundle: Bundle, body: dict[str, Any]) -> dict[str, Any]:
    """The `jobs/create` request: the settings plus the declared permissions."""
    acl = access_control_list(bundle)
    return {**body, "access_control_list": acl} if acl else body


def notifications(
    bundle: Bundle, job: Job
) -> tuple[jobs.JobEmailNotifications | None, jobs.WebhookNotifications | None]:
    """Failure notifications (and backlog ones for streaming jobs), by email and destination."""
    from databricks.sdk.service import jobs

    n = bundle.target.databricks_or_default.notifications
    if n is None or not (n.emails or n.destinations):
        return None, None
    backlog = not job.trigger.available_now  # a catch-up run has a backlog by design
    email = None
    if n.emails:
        email = jobs.JobEmailNotifications(
            on_failure=list(n.emails),
            on_streaming_backlog_exceeded=list(n.emails) if backlog else None,
        )
    hooks = None
    if n.destinations:
        ids = [jobs.Webhook(id=d) for d in n.destinations]
        hooks = jobs.WebhookNotifications(
            on_failure=ids, on_streaming_backlog_exceeded=list(ids) if backlog else None
        )
    return email, hooks


def backlog_thresholds(bundle: Bundle, job: Job) -> tuple[int, int]:
    """(records, seconds) beyond which Databricks reports the job's streams unhealthy.

    STREAMING_BACKLOG_RECORDS is the largest offset lag over the job's streams, so the bundle's
    per-partition lag alert scales by the source's partitions; STREAMING_BACKLOG_SECONDS is the
    largest consumer delay, held to the time after which the bundle calls a job stalled. Both
    are a second line behind streamops' own alerts (they need no Airflow to fire).
    """
    alerts = bundle.spec.alerts
    records = alerts.lag_records_per_partition * bundle.source(job).partitions
    return records, int(alerts.stalled_after.seconds)


def health(bundle: Bundle, job: Job) -> jobs.JobsHealthRules | None:
    """Backlog health rules for a streaming job; None for a catch-up (available_now) job."""
    from databricks.sdk.service import jobs

    if job.trigger.available_now:
        return None
    records, seconds = backlog_thresholds(bundle, job)
    gt = jobs.JobsHealthOperator.GREATER_THAN
    return jobs.JobsHealthRules(
        rules=[
            jobs.JobsHealthRule(
                metric=jobs.JobsHealthMetric.STREAMING_BACKLOG_RECORDS, op=gt, value=records
            ),
            jobs.JobsHealthRule(
                metric=jobs.JobsHealthMetric.STREAMING_BACKLOG_SECONDS, op=gt, value=seconds
            ),
        ]
    )


def apply_permissions(hook: StreamopsHook, bundle: Bundle, job_id: int) -> list[str]:
    """Give each declared group its level on an existing job (Permissions API update, only when
    something differs); returns notes on groups that hold access the bundle no longer grants:
    the update cannot revoke, and revoking silently by replacing the whole list could remove
    the job's owner."""
    acl = access_control_list(bundle)
    if not acl:
        return []
    got = hook.get_job_permissions(job_id)
    have: dict[str, str] = {}
    for entry in got.get("access_control_list", []):
        group = entry.get("group_name")
        direct = [
            p["permission_level"]
            for p in entry.get("all_permissions", [])
            if not p.get("inherited")
        ]
        if group and direct:
            have[group] = direct[0]
    want = {e["group_name"]: e["permission_level"] for e in acl}
    if any(have.get(g) != level for g, level in want.items()):
        hook.update_job_permission(job_id, {"access_control_list": acl})
    return [
        f"group '{g}' still has {level} on job {job_id} but bundle.yml no longer grants it. "
        "Fix: remove it in the job's permissions in the workspace"
        for g, level in sorted(have.items())
        if g not in want and g != "admins"
    ]
