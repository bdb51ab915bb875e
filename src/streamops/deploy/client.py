"""Every Jobs API call of the deploy stage, through the access's provider hook.

Retries are the access's policy (`streamops.databricks_access`: HTTP 429, 5xx, connection errors
and timeouts, Retry-After honoured). Two calls are not safe to repeat blindly, and are made safe
here: `jobs/create` (no idempotency token in the API: a create whose answer was lost may have
created the job, so it is sent once per attempt, and each new attempt first looks the job up by
name; the provider's `create_job` retries the request itself, so it is not used) and
`jobs/run-now` (sent with an idempotency token, so a retried request never starts a second run).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamops.clock import WaitTimeout, poll
from streamops.errors import DeployError, RunWaitTimeout

if TYPE_CHECKING:
    from streamops.databricks_access.hook import StreamopsHook


@dataclass(frozen=True)
class LiveJob:
    job_id: int
    settings: dict[str, Any]


def find_job(hook: StreamopsHook, name: str) -> LiveJob | None:
    """The live job called `name` with its full settings, or None; two such jobs is an error."""
    found = hook.list_jobs(job_name=name)
    if not found:
        return None
    if len(found) > 1:
        ids = ", ".join(str(j["job_id"]) for j in found)
        raise DeployError(
            f"{len(found)} Databricks jobs are called '{name}' (ids {ids}); streamops finds its "
            "job by name. Fix: delete the duplicates in the workspace, keep one"
        )
    job_id = int(found[0]["job_id"])
    return LiveJob(job_id, hook.get_job(job_id).get("settings", {}))


def create_job(hook: StreamopsHook, settings: dict[str, Any]) -> int:
    """Create the job exactly once, even when an answer is lost (timeout, 5xx after commit)."""
    name = settings["name"]

    def attempt() -> int:
        existing = find_job(hook, name)
        if existing is not None:
            return existing.job_id
        return hook.create_job_once(settings)

    def give_up(tries: int, exc: BaseException) -> DeployError:
        return DeployError(
            f"creating job '{name}' failed {tries} times (last error: {exc}). Nothing was "
            "created twice; Fix: check the workspace host and its status page, then deploy again"
        )

    return hook.policy.run(attempt, give_up=give_up)


def reset_job(hook: StreamopsHook, job_id: int, settings: dict[str, Any]) -> None:
    """Replace the job's settings. Permissions are not settings: `governance.apply_permissions`
    sets them (the provider's reset_job would PATCH them too, from an access_control_list)."""
    if "access_control_list" in settings:
        raise ValueError("jobs/reset takes settings only; apply permissions apart")
    hook.reset_job(str(job_id), settings)


def set_paused(hook: StreamopsHook, job_id: int, paused: bool) -> None:
    status = "PAUSED" if paused else "UNPAUSED"
    hook.update_job(job_id, {"continuous": {"pause_status": status}})  # type: ignore[arg-type]


def active_runs(hook: StreamopsHook, job_id: int) -> list[int]:
    return hook.list_active_runs(job_id)


def cancel_and_wait(
    hook: StreamopsHook,
    run_ids: list[int],
    *,
    timeout_s: float = 900,
    poll_s: float = 10,
) -> None:
    """Cancel each run, then wait until every one has ended (a streaming query stops cleanly).

    Waits on the access's clock (`hook.policy.clock`)."""
    for run_id in run_ids:
        hook.cancel_run(run_id)
    pending = list(run_ids)

    def all_ended() -> bool | None:
        pending[:] = [r for r in pending if not hook.get_run_state(r).is_terminal]
        return True if not pending else None

    try:
        poll(
            all_ended,
            timeout_s=timeout_s,
            interval_s=poll_s,
            what="cancelled runs",
            clock=hook.policy.clock,
        )
    except WaitTimeout:
        raise RunWaitTimeout(
            f"runs {pending} did not end within {timeout_s:g} s of being cancelled; "
            "nothing new was started. Fix: look at the runs in the workspace, then retry"
        ) from None


def run_now(
    hook: StreamopsHook,
    job_id: int,
    *,
    python_params: list[str] | None = None,
    idempotency_token: str | None = None,
) -> int:
    body: dict[str, Any] = {
        "job_id": job_id,
        "idempotency_token": idempotency_token or f"streamops-{uuid.uuid4()}",
    }
    if python_params is not None:
        body["python_params"] = python_params
    return int(hook.run_now(body))


def run_url(hook: StreamopsHook, run_id: int) -> str:
    return str(hook.get_run_page_url(run_id))
