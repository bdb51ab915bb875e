"""Live job vs the bundle's job: what a deploy would do, and whether the live job drifted.

Each deployed job carries a fingerprint of its settings in the tag `streamops_spec`. When the
live settings no longer match their own fingerprint, someone edited the job outside the bundle:
that is drift, and a deploy refuses to overwrite it unless forced.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamops.deploy.governance import ACL_TAG

if TYPE_CHECKING:
    from databricks.sdk.service import jobs

    from streamops.shipping.artifacts import Upload

SPEC_TAG = "streamops_spec"
# Filled in by the server, or changed by operations (stop pauses a continuous job): not drift.
# `run_as` is the creator unless set: compared only when the bundle sets it (see make_plan).
_SERVER_KEYS = ("format", "run_as", "deployment", "edit_mode", "parent_path")
# What jobs/get answers for a setting the request left out (Jobs API 2.2 reference and real
# responses; cluster values are Azure's). Filled into both sides before comparing, so a value
# the server filled in is no change, and writing the default in bundle.yml is none either.
_JOB_DEFAULTS: dict[str, Any] = {
    "timeout_seconds": 0,
    "max_concurrent_runs": 1,
    "queue": {"enabled": True},  # 2.2: jobs are queued unless told otherwise
    "email_notifications": {"no_alert_for_skipped_runs": False},
    "webhook_notifications": {},
}
_TASK_DEFAULTS: dict[str, Any] = {
    "run_if": "ALL_SUCCESS",
    "timeout_seconds": 0,
    "max_retries": 0,
    "retry_on_timeout": False,
    "email_notifications": {},
    "notification_settings": {"no_alert_for_skipped_runs": False,
                              "no_alert_for_canceled_runs": False, "alert_on_last_attempt": False},
}  # fmt: skip
_CLUSTER_DEFAULTS: dict[str, Any] = {
    "cluster_name": "",
    "enable_elastic_disk": True,
    "runtime_engine": "STANDARD",
    "azure_attributes": {"first_on_demand": 1, "availability": "ON_DEMAND_AZURE",
                         "spot_bid_max_price": -1},
}  # fmt: skip


def _fill(value: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Put each default under `value` where it is missing (dicts: key by key)."""
    for k, v in defaults.items():
        if isinstance(v, dict) and isinstance(value.get(k), dict):
            _fill(value[k], v)
        elif k not in value:
            value[k] = copy.deepcopy(v)


def _with_defaults(d: dict[str, Any]) -> None:
    _fill(d, _JOB_DEFAULTS)
    for task in d.get("tasks", []):
        _fill(task, _TASK_DEFAULTS)
        py = task.get("spark_python_task")
        if py is not None and "git_source" not in d:
            py.setdefault("source", "WORKSPACE")
    for jc in d.get("job_clusters", []):
        cluster = jc.get("new_cluster")
        if cluster is not None:
            _fill(cluster, _CLUSTER_DEFAULTS)
            if "node_type_id" in cluster:
                cluster.setdefault("driver_node_type_id", cluster["node_type_id"])
    # Order is the server's business where it carries no meaning (tasks run by depends_on).
    d.get("tasks", []).sort(key=lambda t: t.get("task_key", ""))
    d.get("job_clusters", []).sort(key=lambda c: c.get("job_cluster_key", ""))


def _canonical(value: Any) -> Any:
    """JSON numbers as the server writes them: -1.0 and -1 are the same value."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def normalize(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as the sdk models them, minus server-filled keys, empties and our tag."""
    from databricks.sdk.service import jobs

    # as_dict() shares nested dicts with its input: work on a copy.
    d = jobs.JobSettings.from_dict(copy.deepcopy(settings)).as_dict()
    for k in _SERVER_KEYS:
        d.pop(k, None)
    d.get("tags", {}).pop(SPEC_TAG, None)
    d.get("continuous", {}).pop("pause_status", None)
    _with_defaults(d)
    pruned: dict[str, Any] = _canonical(_prune(d))
    return pruned


def fingerprint(settings: dict[str, Any]) -> str:
    text = json.dumps(normalize(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_fingerprint(settings: jobs.JobSettings) -> jobs.JobSettings:
    """A copy of `settings` tagged with its own fingerprint (what deploy sends)."""
    from databricks.sdk.service import jobs

    d = settings.as_dict()
    d.setdefault("tags", {})[SPEC_TAG] = fingerprint(d)
    return jobs.JobSettings.from_dict(d)


@dataclass(frozen=True)
class Plan:
    job_name: str
    action: Literal["create", "update", "unchanged"]
    job_id: int | None = None
    drift: bool = False
    drift_reason: str = ""
    diff: list[str] = field(default_factory=list)
    # Each file the job runs, and whether it is already at its (content-addressed) destination.
    uploads: tuple[UploadStep, ...] = ()
    # Only the declared permissions changed: the job is updated, its running run is left alone.
    permissions_only: bool = False

    @property
    def missing(self) -> list[Upload]:
        return [u.upload for u in self.uploads if not u.present]

    def render(self) -> str:
        head = {
            "create": f"job '{self.job_name}' does not exist: it will be created",
            "update": f"job '{self.job_name}' (id {self.job_id}) will be updated",
            "unchanged": f"job '{self.job_name}' (id {self.job_id}) is up to date: nothing to do",
        }[self.action]
        lines = [head]
        if self.drift:
            lines.append(f"DRIFT: {self.drift_reason}")
        for step in self.uploads:
            u = step.upload
            what = "already there:" if step.present else "upload"
            lines.append(
                f"{what} {u.source.name} -> {u.destination} (sha256 {u.sha256[:16]}, "
                f"{u.size} bytes)"
            )
        lines += self.diff
        return "\n".join(lines)


@dataclass(frozen=True)
class UploadStep:
    upload: Upload
    present: bool


def make_plan(
    desired: jobs.JobSettings, live: dict[str, Any] | None, job_id: int | None = None
) -> Plan:
    """Compare the bundle's settings with the live job's (`None`: no such job)."""
    name = desired.name or ""
    want = normalize(desired.as_dict())
    if live is None:
        shown = _canonical(_prune(desired.as_dict()))
        return Plan(name, "create", diff=_diff({}, shown, "(none)"))
    have = normalize(live)
    if desired.run_as is not None:  # unset, the server fills in the creator: not a change
        want["run_as"] = desired.run_as.as_dict()
        if live.get("run_as") is not None:
            have["run_as"] = live["run_as"]
    tag = (live.get("tags") or {}).get(SPEC_TAG)
    drift, reason = False, ""
    if tag is None:
        drift, reason = (
            True,
            f"the live job has no '{SPEC_TAG}' tag: it was not deployed by streamops",
        )
    elif tag != fingerprint(live):
        drift, reason = True, "the live job was edited outside bundle.yml since the last deploy"
    if have == want:
        return Plan(name, "unchanged", job_id, drift, reason)
    only_acl = _without_tag(have, ACL_TAG) == _without_tag(want, ACL_TAG)
    return Plan(
        name,
        "update",
        job_id,
        drift,
        reason,
        _diff(have, want, f"live job {job_id}"),
        permissions_only=only_acl,
    )


def _without_tag(settings: dict[str, Any], tag: str) -> dict[str, Any]:
    out = copy.deepcopy(settings)
    out.get("tags", {}).pop(tag, None)
    return out


def _diff(have: dict[str, Any], want: dict[str, Any], label: str) -> list[str]:
    a = json.dumps(have, indent=2, sort_keys=True).splitlines() if have else []
    b = json.dumps(want, indent=2, sort_keys=True).splitlines()
    return list(difflib.unified_diff(a, b, label, "bundle.yml", lineterm=""))
