"""The Airflow Databricks provider's hook, as streamops uses it: logged in by the access it came
from, retried by that access's policy, with the Jobs and Permissions endpoints the provider lacks
as public methods (so no caller reaches into the hook's private members).

Imported only by `DatabricksAccess.hook()`: it imports Airflow, which a job cluster lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.databricks.hooks.databricks import DatabricksHook
from tenacity import stop_after_attempt

if TYPE_CHECKING:
    from airflow.models import Connection  # as the provider types it (the task SDK's at run time)

    from streamops.databricks_access.policy import RetryPolicy

GET_JOB = ("GET", "2.2/jobs/get")
CREATE_JOB = ("POST", "2.2/jobs/create")
LIST_RUNS = ("GET", "2.2/jobs/runs/list")


def _permissions(job_id: int) -> str:
    return f"2.0/permissions/jobs/{job_id}"


class StreamopsHook(DatabricksHook):
    """`DatabricksHook` on one connection and one retry policy (see streamops.databricks_access).

    The provider's own retry loop is held to one attempt per request; `policy` retries each call
    (Retry-After honoured, waits on the policy's clock), the provider's methods and ours alike.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        connection: Callable[[], Any],  # an Airflow connection
        policy: RetryPolicy,
        timeout_s: int,
    ) -> None:
        super().__init__(
            conn_id,
            timeout_seconds=timeout_s,
            retry_limit=1,
            # One attempt, and its own error raised (not tenacity's RetryError): the policy
            # decides on the real cause.
            retry_args={"stop": stop_after_attempt(1), "reraise": True},
            caller="streamops",
        )
        self._connection = connection
        self.policy = policy

    @cached_property
    def databricks_conn(self) -> Connection:
        """The access's login: the Airflow connection, or one built in memory from bundle.yml."""
        return self._connection()

    @property
    def url(self) -> str:
        """scheme://host[:port] of the workspace every call goes to."""
        return str(self._endpoint_url("")).rstrip("/")

    def _do_api_call(
        self,
        endpoint_info: tuple[str, str],
        json: dict[str, Any] | None = None,
        wrap_http_errors: bool = True,
    ) -> Any:
        # The provider's public methods all end here: each request, retried by the policy.
        once = super()._do_api_call
        return self.policy.run(lambda: once(endpoint_info, json, wrap_http_errors))

    # --- endpoints the provider has no method for ---------------------------------------------

    def create_job_once(self, json: dict[str, Any]) -> int:
        """`jobs/create`, sent exactly once: no retry, since the API has no idempotency token
        and a create whose answer was lost may have created the job (the caller looks it up)."""
        return int(super()._do_api_call(CREATE_JOB, json)["job_id"])

    def get_job(self, job_id: int) -> dict[str, Any]:
        """`jobs/get`: the job as the workspace holds it (settings with the server's defaults)."""
        return dict(self._do_api_call(GET_JOB, {"job_id": job_id}))

    def list_active_runs(self, job_id: int) -> list[int]:
        """Ids of the job's runs that have not ended (queued, pending, running, terminating)."""
        got = self._do_api_call(LIST_RUNS, {"job_id": job_id, "active_only": "true"})
        return [int(r["run_id"]) for r in got.get("runs", [])]

    def get_job_permissions(self, job_id: int) -> dict[str, Any]:
        """The Permissions API's `ObjectPermissions` of the job (direct and inherited)."""
        return dict(self._do_api_call(("GET", _permissions(job_id)), {}))
