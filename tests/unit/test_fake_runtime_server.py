"""The local Databricks server as a job cluster (tests/fake_runs.py, tests/fake_secrets.py), driven
by the real Airflow provider and databricks-sdk, with a stand-in runtime that runs the task's
python_file as a plain Python process (tests/dbr_runtime's LocalRuntime has the same `start`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import configure

configure()

from airflow.exceptions import AirflowException  # noqa: E402
from airflow.providers.databricks.hooks.databricks import DatabricksHook  # noqa: E402
from airflow.providers.databricks.operators.databricks import (  # noqa: E402
    DatabricksSubmitRunOperator,
)
from databricks.sdk import WorkspaceClient  # noqa: E402
from databricks.sdk.service.workspace import AclPermission  # noqa: E402

from streamops.clock import poll  # noqa: E402
from tests.dbr_runtime import SecretDenied  # noqa: E402
from tests.fake_databricks import FakeJobsApi  # noqa: E402
from tests.fake_secrets import REFERENCE  # noqa: E402

CONN = "databricks_runtime"
SP = "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"  # the job's service principal (application id)
CODE = "/Volumes/main/ops/code"
SCRIPTS = {
    "ok.py": 'import sys\nprint("hello from", sys.argv[1:], flush=True)\n',
    "boom.py": 'print("starting", flush=True)\nraise ValueError("boom")\n',
    "exit.py": "import sys\nprint('exit', sys.argv[1], flush=True)\nsys.exit(int(sys.argv[1]))\n",
    # Runs until cancelled, saying which settings it started with.
    "serve.py": "import sys, threading\nprint('settings', sys.argv[1], flush=True)\n"
    "threading.Event().wait()\n",
    "secret.py": 'import os\nprint("resolved:", os.environ["PAGER_KEY"] == "s3cr3t", flush=True)\n',
}


class ScriptRun:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log_path = process, log

    def poll(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def cancel(self) -> None:
        self.process.kill()


class ScriptRuntime:
    """Runs the task's python_file (fetched from the workspace) with its parameters and the
    cluster's spark_env_vars, secret references resolved through the server."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.starts = folder, []  # type: tuple[Path, list[dict[str, Any]]]

    def start(self, *, task: dict[str, Any], cluster: dict[str, Any], **cluster_side: Any) -> Any:
        self.starts.append({"task": task, "cluster": cluster, **cluster_side})
        if cluster.get("spark_version") == "0.0.x-broken":
            raise RuntimeError("spark_version 0.0.x-broken is not a runtime this server has")
        spt = task["spark_python_task"]
        work = self.folder / f"cluster-{len(self.starts)}"
        work.mkdir()
        (work / "main.py").write_bytes(cluster_side["fetch"](spt["python_file"]))
        env = {"PATH": os.environ["PATH"]}
        for name, value in (cluster.get("spark_env_vars") or {}).items():
            env[name] = REFERENCE.sub(lambda m: cluster_side["secret"](m[1], m[2]), value)
        log = work / "driver.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "main.py", *spt.get("parameters", [])],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return ScriptRun(process, log)


@pytest.fixture
def runtime(tmp_path: Path) -> ScriptRuntime:
    return ScriptRuntime(tmp_path)


@pytest.fixture
def server(runtime: ScriptRuntime, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJobsApi]:
    with FakeJobsApi(runtime, restart_backoff=(0.01, 0.05)) as api:
        for name, text in SCRIPTS.items():
            api.workspace.files[f"{CODE}/{name}"] = text.encode()
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", api.connection_uri())
        yield api


@pytest.fixture
def hook(server: FakeJobsApi) -> DatabricksHook:
    return DatabricksHook(CONN, retry_limit=1)


def _cluster(**extra: Any) -> dict[str, Any]:
    return {
        "spark_version": "18.0.x-scala2.13",
        "node_type_id": "Standard_D4ds_v5",
        "num_workers": 1,
        **extra,
    }


def _job(script: str, *params: str, run_as: str | None = None, **settings: Any) -> dict[str, Any]:
    cluster = settings.pop("cluster", _cluster())
    task = {
        "task_key": "main",
        "job_cluster_key": "main",
        "spark_python_task": {"python_file": f"{CODE}/{script}", "parameters": list(params)},
    }
    job: dict[str, Any] = {
        "name": f"job-{script}",
        "tasks": [task],
        "job_clusters": [{"job_cluster_key": "main", "new_cluster": cluster}],
        **settings,
    }
    if run_as:
        job["run_as"] = {"service_principal_name": run_as}
    return job


def _task_run(hook: DatabricksHook, run_id: int) -> dict[str, Any]:
    (task,) = hook.get_run(run_id)["tasks"]
    return dict(task)


def _log_has(server: FakeJobsApi, run_id: int, text: str) -> None:
    poll(
        lambda: True if text in server.run_log(run_id) else None,
        timeout_s=30,
        interval_s=0.05,
        what=f"'{text}' in the log of run {run_id}",
    )


# --- triggered runs --------------------------------------------------------------------------------


def test_run_now_runs_the_task_and_reports_success_with_its_log(
    server: FakeJobsApi, hook: DatabricksHook, runtime: ScriptRuntime
) -> None:
    job_id = hook.create_job(_job("ok.py", "--table", "events"))
    run_id = hook.run_now({"job_id": job_id, "python_params": ["--table", "orders"]})
    assert server.wait_for_run(job_id, state="TERMINATED") == run_id
    state = hook.get_run_state(run_id)
    assert state.is_terminal and state.result_state == "SUCCESS"
    task = _task_run(hook, run_id)
    assert task["state"]["result_state"] == "SUCCESS" and task["run_id"] != run_id
    output = hook.get_run_output(task["run_id"])
    assert output["logs"] == "hello from ['--table', 'orders']\n"
    assert output["logs_truncated"] is False and "error" not in output
    assert output["metadata"]["job_id"] == job_id
    (start,) = runtime.starts  # run-now's python_params replace the task's parameters
    assert start["task"]["spark_python_task"]["parameters"] == ["--table", "orders"]
    assert start["principal"] == "deployer@example.com"  # no run_as: the creator
    assert start["workspace_url"] == server.url and start["token"] == "dapi-test-token"


def test_a_failed_task_reports_failed_with_its_error(
    server: FakeJobsApi, hook: DatabricksHook
) -> None:
    run_id = hook.run_now({"job_id": hook.create_job(_job("boom.py"))})
    server.wait_for_run(run_id=run_id, state="TERMINATED")
    state = hook.get_run_state(run_id)
    assert state.result_state == "FAILED"
    assert state.state_message.startswith("Task main failed with message: ValueError: boom")
    output = hook.get_run_output(_task_run(hook, run_id)["run_id"])
    assert output["error"] == "ValueError: boom"
    assert output["error_trace"].startswith("Traceback (most recent call last):")
    assert output["logs"].startswith("starting\n")


def test_a_cluster_that_cannot_start_ends_internal_error(
    server: FakeJobsApi, hook: DatabricksHook
) -> None:
    job_id = hook.create_job(_job("ok.py", cluster=_cluster(spark_version="0.0.x-broken")))
    run_id = hook.run_now({"job_id": job_id})
    server.wait_for_run(job_id, state="INTERNAL_ERROR")
    state = hook.get_run_state(run_id)
    assert state.is_terminal and state.result_state == "FAILED"
    assert "0.0.x-broken is not a runtime" in state.state_message
    assert hook.get_run(run_id)["status"]["termination_details"]["code"] == "CLUSTER_ERROR"


def test_cancel_ends_the_process_and_the_run_canceled(
    server: FakeJobsApi, hook: DatabricksHook, runtime: ScriptRuntime
) -> None:
    run_id = hook.run_now({"job_id": hook.create_job(_job("serve.py", "v1"))})
    server.wait_for_run(run_id=run_id, state="RUNNING")
    _log_has(server, run_id, "settings v1")
    hook.cancel_run(run_id)
    server.wait_for_run(run_id=run_id, state="TERMINATED")
    assert hook.get_run_state(run_id).result_state == "CANCELED"
    assert runtime.starts and _task_run(hook, run_id)["state"]["result_state"] == "CANCELED"


def test_max_concurrent_runs_queue_or_skip_and_cancel_all(
    server: FakeJobsApi, hook: DatabricksHook
) -> None:
    queued_job = hook.create_job(_job("serve.py", "q", queue={"enabled": True}))
    first = hook.run_now({"job_id": queued_job})
    server.wait_for_run(run_id=first, state="RUNNING")
    second = hook.run_now({"job_id": queued_job})
    server.wait_for_run(run_id=second, state="QUEUED")  # max_concurrent_runs 1: it waits
    hook.cancel_run(first)
    server.wait_for_run(run_id=second, state="RUNNING")  # ...and starts once there is room
    skipped_job = hook.create_job(_job("serve.py", "s", queue={"enabled": False}))
    third = hook.run_now({"job_id": skipped_job})
    server.wait_for_run(run_id=third, state="RUNNING")
    fourth = hook.run_now({"job_id": skipped_job})
    server.wait_for_run(run_id=fourth, state="SKIPPED")
    hook.cancel_all_runs(skipped_job)
    hook.cancel_all_runs(queued_job)
    for run_id in (second, third):
        server.wait_for_run(run_id=run_id, state="CANCELED")


def test_tasks_run_in_dependency_order_and_a_failure_skips_the_rest(
    server: FakeJobsApi, hook: DatabricksHook, runtime: ScriptRuntime
) -> None:
    job = _job("boom.py")
    (first,) = job["tasks"]
    then = {**first, "task_key": "a_then", "depends_on": [{"task_key": "main"}]}
    then["spark_python_task"] = {"python_file": f"{CODE}/ok.py"}
    run_id = hook.run_now({"job_id": hook.create_job({**job, "tasks": [then, first]})})
    server.wait_for_run(run_id=run_id, state="FAILED")
    states = {t["task_key"]: t["state"].get("result_state") for t in hook.get_run(run_id)["tasks"]}
    assert states == {"main": "FAILED", "a_then": "UPSTREAM_FAILED"} and len(runtime.starts) == 1
    with pytest.raises(AirflowException, match="runs with multiple tasks is not supported"):
        hook.get_run_output(run_id)


def test_a_run_past_its_timeout_ends_timedout(server: FakeJobsApi, hook: DatabricksHook) -> None:
    run_id = hook.run_now({"job_id": hook.create_job(_job("serve.py", "t", timeout_seconds=1))})
    server.wait_for_run(run_id=run_id, state="TIMEDOUT")
    assert hook.get_run(run_id)["state"]["user_cancelled_or_timedout"] is True


# --- continuous jobs -----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "result"), [("0", "SUCCESS"), ("3", "FAILED")])
def test_a_continuous_job_starts_at_create_and_restarts_after_any_end(
    server: FakeJobsApi, hook: DatabricksHook, code: str, result: str
) -> None:
    job_id = hook.create_job(_job("exit.py", code, continuous={"pause_status": "UNPAUSED"}))
    first = server.wait_for_run(job_id, state=result)  # started by the create, no run-now
    second = server.wait_for_run(job_id, state=result, after=first)
    assert second > first
    assert hook.get_run(second)["trigger"] == "CONTINUOUS"
    assert f"exit {code}" in server.run_log(second)


def test_a_continuous_job_takes_new_settings_only_after_a_cancel(
    server: FakeJobsApi, hook: DatabricksHook, runtime: ScriptRuntime
) -> None:
    settings = _job("serve.py", "v1", continuous={"pause_status": "PAUSED"})
    job_id = hook.create_job(settings)
    assert server.cluster_runs == {}  # paused: nothing runs
    hook.update_job(str(job_id), {"continuous": {"pause_status": "UNPAUSED"}})
    first = server.wait_for_run(job_id, state="RUNNING")
    _log_has(server, first, "settings v1")
    settings["tasks"][0]["spark_python_task"]["parameters"] = ["v2"]
    hook.reset_job(str(job_id), {**settings, "continuous": {"pause_status": "UNPAUSED"}})
    # The running process keeps the settings it started with: no restart, nothing new.
    assert hook.get_run_state(first).life_cycle_state == "RUNNING" and len(runtime.starts) == 1
    assert _task_run(hook, first)["spark_python_task"]["parameters"] == ["v1"]
    hook.cancel_run(first)
    second = server.wait_for_run(job_id, state="RUNNING", after=first)
    assert hook.get_run_state(first).result_state == "CANCELED"
    _log_has(server, second, "settings v2")
    assert _task_run(hook, second)["spark_python_task"]["parameters"] == ["v2"]
    w = WorkspaceClient(host=server.url, token="dapi-test-token")
    active = [r.run_id for r in w.jobs.list_runs(job_id=job_id, active_only=True)]
    assert active == [second]  # one run of a continuous job at a time


# --- secrets and the identity a run acts as ------------------------------------------------------


def test_secrets_api_through_the_sdk(server: FakeJobsApi) -> None:
    w = WorkspaceClient(host=server.url, token="dapi-test-token")
    w.secrets.create_scope("pager")
    w.secrets.put_secret("pager", "key", string_value="s3cr3t")
    w.secrets.put_acl("pager", SP, AclPermission.READ)
    acls = {a.principal: a.permission for a in w.secrets.list_acls("pager")}
    assert acls == {"deployer@example.com": AclPermission.MANAGE, SP: AclPermission.READ}
    assert [s.key for s in w.secrets.list_secrets("pager")] == ["key"]
    assert server.secrets.resolve(SP, "pager", "key") == "s3cr3t"
    sent = [c.body for c in server.calls() if c.path == "/api/2.0/secrets/put"]
    assert sent == [{"scope": "pager", "key": "key", "string_value": "[REDACTED]"}]


def test_a_secret_without_read_fails_the_run_start_naming_the_scope(
    server: FakeJobsApi, hook: DatabricksHook, runtime: ScriptRuntime
) -> None:
    server.put_secret("pager", "key", "s3cr3t", readers=["someone-else@example.com"])
    env = {"PAGER_KEY": "{{secrets/pager/key}}"}
    job_id = hook.create_job(_job("secret.py", run_as=SP, cluster=_cluster(spark_env_vars=env)))
    denied = hook.run_now({"job_id": job_id})
    server.wait_for_run(run_id=denied, state="INTERNAL_ERROR")
    message = hook.get_run_state(denied).state_message
    assert f"'{SP}' does not have READ permission on secret scope 'pager'" in message
    assert "spark_env_vars.PAGER_KEY" in message and runtime.starts == []
    server.put_secret("pager", "key", "s3cr3t", readers=[SP])
    allowed = hook.run_now({"job_id": job_id})
    server.wait_for_run(run_id=allowed, state="SUCCESS")
    assert server.run_log(allowed) == "resolved: True\n"
    (start,) = runtime.starts
    assert start["principal"] == SP and start["secret"]("pager", "key") == "s3cr3t"
    # The callback the runtime got reads as the run's principal, at the time it asks (as the
    # job's dbutils.secrets.get does): READ revoked, it raises the runtime's SecretDenied.
    WorkspaceClient(host=server.url, token="dapi-test-token").secrets.delete_acl("pager", SP)
    with pytest.raises(SecretDenied, match="READ permission on secret scope 'pager'"):
        start["secret"]("pager", "key")


def test_a_single_user_cluster_refuses_another_principal(
    server: FakeJobsApi, hook: DatabricksHook, runtime: ScriptRuntime
) -> None:
    dedicated = _cluster(data_security_mode="SINGLE_USER", single_user_name=SP)
    task = {
        "task_key": "compact",
        "new_cluster": dedicated,
        "spark_python_task": {"python_file": f"{CODE}/ok.py"},
    }
    with pytest.raises(AirflowException, match="INVALID_PARAMETER_VALUE") as refused:
        hook.submit_run({"run_name": "compact", "tasks": [task]})  # no run_as: the caller
    assert f"single-user cluster of '{SP}'" in str(refused.value)
    assert "'deployer@example.com'" in str(refused.value) and server.cluster_runs == {}
    as_owner = {"service_principal_name": SP}
    run_id = hook.submit_run({"run_name": "compact", "tasks": [task], "run_as": as_owner})
    server.wait_for_run(run_id=run_id, state="SUCCESS")
    # A job's run as another principal than its cluster's single user fails at the start.
    job_id = hook.create_job(_job("ok.py", run_as="other-sp", cluster=dedicated))
    run_id = hook.run_now({"job_id": job_id})
    server.wait_for_run(run_id=run_id, state="INTERNAL_ERROR")
    assert "Single-user check failed" in hook.get_run_state(run_id).state_message
    assert len(runtime.starts) == 1


def test_the_scripted_server_refuses_the_same_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a runtime (the compaction tests' `on_submit`), runs/submit is checked alike."""
    with FakeJobsApi() as api:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", api.connection_uri())
        dedicated = _cluster(data_security_mode="SINGLE_USER", single_user_name=SP)
        task = {
            "task_key": "c",
            "new_cluster": dedicated,
            "spark_python_task": {"python_file": "x"},
        }
        with pytest.raises(AirflowException, match="Single-user check failed"):
            DatabricksHook(CONN, retry_limit=1).submit_run({"tasks": [task]})
        assert api.submitted == {}


# --- the Airflow provider watching a submitted run ----------------------------------------------


def _operator(script: str) -> DatabricksSubmitRunOperator:
    task = {
        "task_key": "main",
        "new_cluster": _cluster(),
        "spark_python_task": {"python_file": f"{CODE}/{script}"},
    }
    return DatabricksSubmitRunOperator(
        task_id=f"submit_{script.removesuffix('.py')}",
        json={"run_name": script, "tasks": [task]},
        databricks_conn_id=CONN,
        databricks_retry_limit=1,
        polling_period_seconds=0,
        do_xcom_push=False,
    )


def test_the_provider_sees_a_submitted_run_end(server: FakeJobsApi, hook: DatabricksHook) -> None:
    run_id = hook.submit_run(_operator("ok.py").json)
    server.wait_for_run(run_id=run_id, state="TERMINATED")
    assert hook.get_run_state(run_id).is_successful
    _operator("ok.py").execute(context={})  # returns once the run has succeeded
    with pytest.raises(AirflowException, match="FAILED") as failed:
        _operator("boom.py").execute(context={})
    assert "ValueError: boom" in str(failed.value)  # the task's error, from runs/get-output
