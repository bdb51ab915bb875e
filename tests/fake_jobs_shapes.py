"""What the Jobs API 2.2 answers about a job, as documented, not an echo of what was sent.

The shapes follow the Jobs API reference (`GET /api/2.2/jobs/get`: job_id, creator_user_name,
run_as_user_name, run_as_owner, created_time, settings, has_more) and real answers published for
Azure workspaces: the server fills in what a request left out (format, empty notification
blocks, `run_if`, task timeouts, the cluster's Azure attributes, elastic disk, runtime engine,
driver node type, `run_as` = the creator, queueing on for 2.2 jobs) and lists fields in its own
order. Written out here independently of streamops' own table of defaults, so a drift check that
forgets one of them reports an untouched job as drifted and fails the tests.
"""

from __future__ import annotations

import copy
from typing import Any

CREATOR = "deployer@example.com"
CREATED_TIME = 1761955200000
# Request fields that configure the create call, not the job (they are not in `settings`).
_REQUEST_ONLY = ("access_control_list",)


def _reordered(value: Any) -> Any:
    """The same JSON, keys in reverse order at every level (the server's order is not ours)."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def stored_settings(request: dict[str, Any]) -> dict[str, Any]:
    """The settings the server keeps for a create / reset request."""
    s = copy.deepcopy({k: v for k, v in request.items() if k not in _REQUEST_ONLY})
    s.setdefault("email_notifications", {}).setdefault("no_alert_for_skipped_runs", False)
    s.setdefault("webhook_notifications", {})
    s.setdefault("timeout_seconds", 0)
    s.setdefault("max_concurrent_runs", 1)
    s.setdefault("queue", {"enabled": True})
    s.setdefault("run_as", {"user_name": CREATOR})
    s["format"] = "MULTI_TASK"
    for task in s.get("tasks", []):
        task.setdefault("run_if", "ALL_SUCCESS")
        task.setdefault("timeout_seconds", 0)
        task.setdefault("email_notifications", {})
        task.setdefault("notification_settings", {
            "no_alert_for_skipped_runs": False,
            "no_alert_for_canceled_runs": False,
            "alert_on_last_attempt": False,
        })  # fmt: skip
        if "spark_python_task" in task:
            task["spark_python_task"].setdefault("source", "WORKSPACE")
    for jc in s.get("job_clusters", []):
        c = jc.get("new_cluster", {})
        c.setdefault("cluster_name", "")
        c.setdefault("driver_node_type_id", c.get("node_type_id"))
        c.setdefault("enable_elastic_disk", True)
        c.setdefault("runtime_engine", "STANDARD")
        c.setdefault("azure_attributes", {})
        c["azure_attributes"].setdefault("first_on_demand", 1)
        c["azure_attributes"].setdefault("availability", "ON_DEMAND_AZURE")
        c["azure_attributes"].setdefault("spot_bid_max_price", -1.0)
    s["tasks"] = sorted(s.get("tasks", []), key=lambda t: t.get("task_key", ""), reverse=True)
    return s


def job_response(job_id: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The body of `GET /api/2.2/jobs/get` for a stored job."""
    run_as = settings.get("run_as", {})
    return _reordered({
        "job_id": job_id,
        "creator_user_name": CREATOR,
        "run_as_user_name": run_as.get("user_name") or run_as.get("service_principal_name"),
        "run_as_owner": "user_name" in run_as and run_as["user_name"] == CREATOR,
        "created_time": CREATED_TIME,
        "settings": settings,
        "has_more": False,
    })  # fmt: skip


def list_entry(job_id: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One job of `GET /api/2.2/jobs/list` (no tasks or clusters unless expand_tasks)."""
    brief = {k: v for k, v in settings.items() if k not in ("tasks", "job_clusters")}
    return {"job_id": job_id, "creator_user_name": CREATOR, "created_time": CREATED_TIME,
            "settings": brief}  # fmt: skip


# --- runs (runs/get, runs/list, runs/get-output) ------------------------------------------------

# runs/get-output: "Databricks restricts this API to return the last 5 MB of these logs."
LOG_TAIL = 5 * 1024 * 1024
# Jobs API 2.2 `status.state` (RunLifecycleStateV2State) of each 2.0 `life_cycle_state`.
_STATUS_STATE = {
    "INTERNAL_ERROR": "TERMINATED",
    "SKIPPED": "TERMINATED",
    "WAITING_FOR_RETRY": "WAITING",
}
# `status.termination_details.type` of each termination code this server uses.
_TERMINATION_TYPE = {
    "SUCCESS": "SUCCESS",
    "USER_CANCELED": "SUCCESS",
    "RUN_EXECUTION_ERROR": "CLIENT_ERROR",
    "CLUSTER_ERROR": "CLIENT_ERROR",
    "MAX_CONCURRENT_RUNS_EXCEEDED": "CLIENT_ERROR",
    "SKIPPED": "SUCCESS",
}


def run_state(
    life_cycle: str, result: str, message: str, code: str, user_ended: bool
) -> dict[str, Any]:
    """The `state` (what the Airflow provider reads: life_cycle_state, result_state once ended,
    state_message) and the 2.2 `status` (state, termination_details) of a run or task run."""
    state: dict[str, Any] = {
        "life_cycle_state": life_cycle,
        "state_message": message,
        "user_cancelled_or_timedout": user_ended,
    }
    if result:
        state["result_state"] = result
    status: dict[str, Any] = {"state": _STATUS_STATE.get(life_cycle, life_cycle)}
    if status["state"] == "TERMINATED":
        status["termination_details"] = {
            "code": code,
            "type": _TERMINATION_TYPE.get(code, "INTERNAL_ERROR"),
            "message": message,
        }
    return {"state": state, "status": status}
