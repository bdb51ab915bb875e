"""Every remote call of the deploy stage, through the Airflow Databricks provider's hook.

Retries and backoff are the provider's (`DatabricksHook`: HTTP 429, 5xx, connection errors and
timeouts, exponential backoff). Two calls are not safe to repeat blindly, and are made safe here:
`jobs/create` (no idempotency token in the API: a create whose answer was lost may have created
the job, so each new attempt first looks the job up by name) and `jobs/run-now` (sent with an
idempotency token, so a retried request never starts a second run).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamops.errors import DeployError, RunWaitTimeout

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

GET_JOB = ("GET", "2.2/jobs/get")
CREATE_JOB = ("POST", "2.2/jobs/create")
UPDATE_JOB = ("POST", "2.2/jobs/update")
LIST_RUNS = ("GET", "2.2/jobs/runs/list")
ACTIVE_STATES = ("QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY")


def make_hook(
    conn_id: str,
    *,
    retry_limit: int = 3,
    retry_delay: float = 1.0,
    retry_args: dict[str, Any] | None = None,
    timeout_seconds: int = 180,
) -> DatabricksHook:
    """A provider hook for the Airflow connection `conn_id` (no network until first call).

    Its retries wait at least as long as a 429/503 answer's Retry-After asks.
    """
    try:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook
        from tenacity import stop_after_attempt, wait_exponential
    except ImportError as exc:  # pragma: no cover - depends on install
        from streamops.errors import MissingDependencyError

        raise MissingDependencyError("apache-airflow-providers-databricks", "airflow") from exc
    # The provider's own defaults, unless the caller brings its own.
    args = dict(retry_args or {"stop": stop_after_attempt(retry_limit),
                               "wait": wait_exponential(min=retry_delay, max=2**retry_limit)})  # fmt: skip
    args["wait"] = RetryAfterWait(args.get("wait"))
    return DatabricksHook(
        conn_id,
        timeout_seconds=timeout_seconds,
        retry_limit=retry_limit,
        retry_delay=retry_delay,
        retry_args=args,
        caller="streamops",
    )


class RetryAfterWait:
    """A tenacity wait: the wrapped one, or longer when the server said Retry-After (capped)."""

    def __init__(self, base: Callable[[Any], float] | None, cap_s: float = 120.0) -> None:
        self.base, self.cap_s = base, cap_s

    def __call__(self, retry_state: Any) -> float:
        wait = float(self.base(retry_state)) if self.base is not None else 0.0
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        response = getattr(exc, "response", None)
        header = response.headers.get("Retry-After") if response is not None else None
        try:
            return max(wait, min(float(header), self.cap_s)) if header else wait
        except ValueError:  # an HTTP date: rare for these APIs, keep the backoff
            return wait


@dataclass(frozen=True)
class LiveJob:
    job_id: int
    settings: dict[str, Any]


def find_job(hook: DatabricksHook, name: str) -> LiveJob | None:
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
    got = hook._do_api_call(GET_JOB, {"job_id": job_id})
    return LiveJob(job_id, got.get("settings", {}))


def _retryable_cause(hook: DatabricksHook, exc: BaseException) -> BaseException | None:
    """The requests error behind a provider 'gave up' error, when the provider would retry it."""
    from tenacity import RetryError

    cause = exc.__cause__
    if isinstance(cause, RetryError):
        last = cause.last_attempt.exception()
        if last is not None and hook._retryable_error(last):
            return last
    return None


def create_job(hook: DatabricksHook, settings: dict[str, Any]) -> int:
    """Create the job exactly once, even when an answer is lost (timeout, 5xx after commit)."""
    from airflow.providers.databricks.hooks.databricks import DatabricksHook
    from tenacity import RetryError

    name = settings["name"]
    # One attempt per request; the attempts (and their backoff) are the provider's, around
    # "look up by name, then create".
    once = DatabricksHook(
        hook.databricks_conn_id,
        timeout_seconds=hook.timeout_seconds,
        retry_limit=1,
        caller="streamops",
    )
    try:
        for attempt in hook._get_retry_object():
            with attempt:
                existing = find_job(hook, name)
                if existing is not None:
                    return existing.job_id
                try:
                    return int(once._do_api_call(CREATE_JOB, settings)["job_id"])
                except Exception as exc:
                    cause = _retryable_cause(once, exc)
                    if cause is not None:
                        raise cause from exc
                    raise
    except RetryError as exc:
        raise DeployError(
            f"creating job '{name}' failed {hook.retry_limit} times "
            f"(last error: {exc.last_attempt.exception()}). Nothing was created twice; "
            "Fix: check the workspace host and its status page, then deploy again"
        ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def reset_job(hook: DatabricksHook, job_id: int, settings: dict[str, Any]) -> None:
    hook.reset_job(str(job_id), settings)


def set_paused(hook: DatabricksHook, job_id: int, paused: bool) -> None:
    status = "PAUSED" if paused else "UNPAUSED"
    hook._do_api_call(
        UPDATE_JOB, {"job_id": job_id, "new_settings": {"continuous": {"pause_status": status}}}
    )


def active_runs(hook: DatabricksHook, job_id: int) -> list[int]:
    got = hook._do_api_call(LIST_RUNS, {"job_id": job_id, "active_only": "true"})
    return [int(r["run_id"]) for r in got.get("runs", [])]


def cancel_and_wait(
    hook: DatabricksHook,
    run_ids: list[int],
    *,
    timeout_s: float = 900,
    poll_s: float = 10,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Cancel each run, then wait until every one has ended (a streaming query stops cleanly)."""
    for run_id in run_ids:
        hook.cancel_run(run_id)
    deadline = clock() + timeout_s
    pending = list(run_ids)
    while pending:
        pending = [r for r in pending if not hook.get_run_state(r).is_terminal]
        if not pending:
            return
        if clock() >= deadline:
            raise RunWaitTimeout(
                f"runs {pending} did not end within {timeout_s:g} s of being cancelled; "
                "nothing new was started. Fix: look at the runs in the workspace, then retry"
            )
        sleep(poll_s)


def run_now(
    hook: DatabricksHook,
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


def run_url(hook: DatabricksHook, run_id: int) -> str:
    return str(hook.get_run_page_url(run_id))
