"""Operators of the `streamops_deploy` DAG: thin adapters over `streamops.deploy.actions`.

Hooks are created in `execute` only (the constructor runs at every DAG parse). A backfill waits
for its run to finish in the triggerer, with the provider's `DatabricksExecutionTrigger`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

POLL_SECONDS = 10


def _params(context: Any) -> dict[str, Any]:
    return dict(context["params"])


class CheckParamsOperator(BaseOperator):
    """Fail fast, before any remote call, when the trigger's params make no sense."""

    def __init__(self, *, targets: dict[str, str], jobs: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets = dict(targets)
        self.jobs = list(jobs)

    def execute(self, context: Any) -> None:
        from streamops.entry import DeployError, check_request

        params = _params(context)
        try:
            check_request(self.targets, self.jobs, params)
        except DeployError as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("params OK: %s", {k: params.get(k) for k in sorted(params)})


class StreamopsActionOperator(BaseOperator):
    """Run the `action` param (deploy / restart / backfill / stop) for `job` on `target`."""

    def __init__(
        self,
        *,
        bundle_path: str | Path,
        polling_period_seconds: int = POLL_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bundle_path = str(bundle_path)
        self.polling_period_seconds = polling_period_seconds

    def execute(self, context: Any) -> Any:
        from streamops.entry import (
            DatabricksAccess,
            DeployError,
            Remote,
            explained,
            load,
            local_broker,
        )
        from streamops.entry import deploy_actions as actions

        p = _params(context)
        bundle = load(self.bundle_path, p["target"], local_broker=local_broker)
        access = DatabricksAccess.of(bundle)
        token = self._token(context)
        job, action = p["job"], p["action"]
        wait = {"poll_s": self.polling_period_seconds}
        # One line naming the workspace and the fix for unreachable / 401 / 403 / 429 / timeout.
        remote = Remote(access.url, f"the Airflow connection '{access.conn_id}'",
                        access.policy.attempts, access.timeout_s)  # fmt: skip
        try:
            with explained(remote):
                if action == "deploy":
                    res = actions.deploy(access, bundle, job, dry_run=bool(p.get("dry_run")),
                                         force=bool(p.get("force")), token=token, **wait)  # fmt: skip
                elif action == "restart":
                    res = actions.restart(access, bundle, job, token=token, **wait)
                elif action == "backfill":
                    res = actions.backfill(access, bundle, job, token=token)
                elif action == "stop":
                    res = actions.stop(access, bundle, job, **wait)
                elif action == "recover":
                    res = actions.recover(access, bundle, job, token=token, **wait)
                else:
                    raise DeployError(f"action {action!r} is not available here")
        except DeployError as exc:
            raise AirflowFailException(str(exc)) from None
        for line in res.render().splitlines():
            self.log.info("%s", line)
        if res.job_id is not None:
            self.log.info("Databricks job: %s/jobs/%s", access.url, res.job_id)
        if res.run_url:
            self.log.info("Databricks run link: %s", res.run_url)
        if action == "backfill" and res.run_id is not None:
            from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

            self.defer(
                trigger=DatabricksExecutionTrigger(
                    run_id=res.run_id,
                    databricks_conn_id=access.conn_id,
                    polling_period_seconds=self.polling_period_seconds,
                    run_page_url=res.run_url,
                ),
                method_name="execute_complete",
            )
        return {"job_id": res.job_id, "run_id": res.run_id, "run_url": res.run_url}

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        from airflow.providers.databricks.hooks.databricks import RunState

        event = event or {}
        state = RunState.from_json(event["run_state"]) if "run_state" in event else None
        url = event.get("run_page_url")
        if state is None or not state.is_successful:
            raise AirflowFailException(f"backfill run {event.get('run_id')} ended {state}: {url}")
        self.log.info("backfill run %s finished: %s (link: %s)", event.get("run_id"), state, url)
        return {"run_id": event.get("run_id"), "run_url": url}

    def _token(self, context: Any) -> str:
        ti = context["ti"]
        key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.try_number}"
        return "streamops-" + hashlib.sha256(key.encode()).hexdigest()[:40]
