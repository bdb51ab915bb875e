"""Runs that really execute: the local Databricks server acting as a job cluster.

DESIGN.md, "What a deploy ships is what a test runs": with a runtime (tests/dbr_runtime's
`LocalRuntime`, or any object with its `start`), `jobs/run-now` and `runs/submit` start each task
through `runtime.start(task=, cluster=, principal=, fetch=, secret=, workspace_url=, token=)` in a
background thread, and `runs/get`, `runs/get-output`, `runs/list`, `runs/cancel` report it in the
Jobs API 2.2 shapes. What the server decides before a cluster starts is decided here, as Databricks
decides it:
- the run's principal is the job's `run_as` (service_principal_name or user_name; the creator
  when unset), for `runs/submit` its own `run_as` or the caller;
- a single-user (SINGLE_USER / DATA_SECURITY_MODE_DEDICATED) cluster runs only as its
  `single_user_name`: `runs/submit` by another principal is refused (400 INVALID_PARAMETER_VALUE),
  a job run by another principal fails to start;
- every `{{secrets/...}}` of the cluster's spark_env_vars / spark_conf must be readable by the
  principal (tests/fake_secrets.py), or the run ends INTERNAL_ERROR naming the scope;
- a job runs at most `max_concurrent_runs` at once: later runs wait QUEUED (queue enabled) or are
  SKIPPED;
- a `continuous` job (docs: "Run jobs continuously") has one run whenever it is UNPAUSED: started
  at create / reset / update, started again after any end (exit 0 included; after failures with
  an exponential backoff, reset by a success), each run with the settings it started with, so
  new settings take effect only once the running one ends (a `runs/cancel`). Pausing lets the
  active run go on and starts no new one.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamops.clock import poll
from tests.fake_jobs_shapes import CREATOR, LOG_TAIL, run_state
from tests.fake_secrets import SecretRefused, SecretsApi

POLL_S = 0.05  # how often a run thread looks at its process (threading.Event waits, no sleep)
TOKEN = "dapi-test-token"  # what a cluster's process uses to call the workspace back
DEDICATED = ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")
ENDED = ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")


class ClusterRun(Protocol):
    def poll(self) -> int | None: ...
    def log(self) -> str: ...
    def cancel(self) -> None: ...


class Runtime(Protocol):
    def start(
        self,
        *,
        task: dict[str, Any],
        cluster: dict[str, Any],
        principal: str,
        fetch: Callable[[str], bytes],
        secret: Callable[[str, str], str],
        workspace_url: str,
        token: str,
    ) -> ClusterRun: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TaskRun:
    run_id: int
    key: str
    task: dict[str, Any]  # as the cluster runs it (run-now's python_params applied)
    cluster: dict[str, Any]
    life_cycle: str = "PENDING"
    result: str = ""
    message: str = ""
    code: str = ""  # status.termination_details.code once ended
    error: str = ""  # runs/get-output `error` / `error_trace` of a failed task
    trace: str = ""
    process: ClusterRun | None = None
    final_log: str | None = None
    start_time: int = 0
    end_time: int = 0

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        return self.process.log() if self.process is not None else ""


@dataclass
class ExecutedRun:
    run_id: int
    job_id: int | None  # None: a one-time run (runs/submit)
    run_name: str
    run_type: str  # JOB_RUN / SUBMIT_RUN
    trigger: str  # ONE_TIME / CONTINUOUS
    principal: str
    tasks: list[TaskRun]
    max_concurrent: int = 0  # 0: no limit
    queue: bool = False
    timeout_s: float = 0
    life_cycle: str = "PENDING"
    result: str = ""
    message: str = ""
    code: str = ""
    timed_out: bool = False
    start_time: int = field(default_factory=_now_ms)
    end_time: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)


def principal_of(run_as: dict[str, Any] | None) -> str:
    """Who a run acts as: `run_as`'s service principal or user, else the caller (the creator)."""
    run_as = run_as or {}
    return str(run_as.get("service_principal_name") or run_as.get("user_name") or CREATOR)


def single_user_refusal(principal: str, cluster: dict[str, Any], where: str) -> str | None:
    """Why a dedicated cluster may not run as `principal`, or None."""
    owner = cluster.get("single_user_name")
    if cluster.get("data_security_mode") not in DEDICATED or not owner or owner == principal:
        return None
    return (
        f"Single-user check failed: {where} runs as '{principal}', but its cluster is a "
        f"single-user cluster of '{owner}' (data_security_mode "
        f"{cluster['data_security_mode']}). Fix: run_as '{owner}', or single_user_name "
        f"'{principal}'"
    )


def submit_refusal(body: dict[str, Any]) -> str | None:
    """Why `runs/submit` refuses this body (400 INVALID_PARAMETER_VALUE), or None."""
    who = principal_of(body.get("run_as"))
    for task in _submitted_tasks(body):
        refusal = single_user_refusal(
            who, task.get("new_cluster") or {}, f"task {task['task_key']}"
        )
        if refusal:
            return refusal
    return None


def _submitted_tasks(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "tasks" in body:
        return list(body["tasks"])
    # The single-task form of runs/submit: cluster and task at the top level.
    return [{**{k: v for k, v in body.items() if k != "run_name"}, "task_key": "run"}]


def _ordered(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in an order that respects depends_on (by task_key otherwise)."""
    pending, done, out = sorted(tasks, key=lambda t: t["task_key"]), set(), []
    while pending:
        ready = [t for t in pending if all(d["task_key"] in done for d in t.get("depends_on", []))]
        task = (ready or pending)[0]
        out.append(task)
        done.add(task["task_key"])
        pending.remove(task)
    return out


def _unpaused_continuous(settings: dict[str, Any]) -> bool:
    continuous = settings.get("continuous")
    return continuous is not None and continuous.get("pause_status", "UNPAUSED") == "UNPAUSED"


def _failure(log: str, code: int) -> tuple[str, str]:
    """(error, error_trace) of a task that exited with `code`: its traceback's last line."""
    at = log.rfind("Traceback (most recent call last):")
    if at < 0:
        return f"Exception: the task exited with code {code}", ""
    trace = log[at:].rstrip()
    return trace.splitlines()[-1], trace


def _secret_denied(message: str) -> Exception:
    # The executor's type: it makes the job's `dbutils.secrets.get` fail as on a cluster.
    from tests.dbr_runtime import SecretDenied

    return SecretDenied(message)


class RuntimeEndpoints:
    """Mixed into FakeJobsApi (tests/fake_databricks.py) when it is given a runtime."""

    url: str
    lock: Any
    state: Any
    workspace: Any
    secrets: SecretsApi
    runtime: Runtime | None

    def _runtime_init(self, runtime: Runtime | None, restart_backoff: tuple[float, float]) -> None:
        self.runtime, self.restart_backoff = runtime, restart_backoff
        self.cluster_runs: dict[int, ExecutedRun] = {}
        self._supervisors: dict[int, threading.Thread] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # --- test helpers -------------------------------------------------------------------------
    def wait_for_run(
        self,
        job_id: int | None = None,
        *,
        run_id: int | None = None,
        state: str = "RUNNING",
        after: int = 0,
        timeout: float = 60.0,
    ) -> int:
        """The id of the oldest run of `job_id` (None: one-time runs) newer than run `after`, or
        of run `run_id`, once its life-cycle or result state is `state` (RUNNING, TERMINATED,
        SUCCESS, FAILED, INTERNAL_ERROR...). Raises WaitTimeout after `timeout` seconds."""

        def found() -> int | None:
            with self.lock:
                runs = sorted(self.cluster_runs.values(), key=lambda r: r.run_id)
                for r in runs:
                    mine = r.run_id == run_id if run_id is not None else r.job_id == job_id
                    if mine and r.run_id > after and state in (r.life_cycle, r.result):
                        return r.run_id
            return None

        what = f"run {run_id}" if run_id is not None else f"a run of job {job_id} after {after}"
        return poll(found, timeout_s=timeout, interval_s=POLL_S, what=f"{what} in state {state}")

    def run_log(self, run_id: int) -> str:
        """The whole driver log of a run (each task's, in order) or of one task run."""
        with self.lock:
            run, task = self._find(run_id)
        return task.log() if task is not None else "".join(t.log() for t in run.tasks)

    def fetch(self, path: str) -> bytes:
        """A file as a cluster reads a library or python_file: from the local Workspace/Files
        state, by its /Volumes/... or /Workspace/... path (dbfs:/Volumes/... too)."""
        p = path.removeprefix("dbfs:")
        with self.lock:
            files = self.workspace.files
            for candidate in (p, p.removeprefix("/Workspace")):
                if candidate in files:
                    return bytes(files[candidate])
        raise FileNotFoundError(
            f"{path}: no such file in the local workspace. Fix: upload it first (Files API "
            f"PUT /api/2.0/fs/files{p}, or workspace import)"
        )

    # --- the API ------------------------------------------------------------------------------
    def handle_runtime(
        self, method: str, ep: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | None:
        if method == "POST" and ep == "run-now":
            return self._run_now(body)
        if method == "POST" and ep == "runs/submit":
            return self._submit(body)
        if method == "POST" and ep in ("runs/cancel", "runs/cancel-all"):
            return self._cancel(body)
        if method == "GET" and ep == "runs/list":
            return self._list(body)
        if method == "GET" and ep in ("runs/get", "runs/get-output"):
            try:
                run, task = self._find(int(body["run_id"]))
            except KeyError as exc:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": str(exc.args[0])}
            return (200, self._run_json(run)) if ep == "runs/get" else self._output(run, task)
        return None

    def _find(self, run_id: int) -> tuple[ExecutedRun, TaskRun | None]:
        if run_id in self.cluster_runs:
            return self.cluster_runs[run_id], None
        for run in self.cluster_runs.values():
            for task in run.tasks:
                if task.run_id == run_id:
                    return run, task
        raise KeyError(f"Run {run_id} does not exist.")

    def _run_now(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        jid = int(body["job_id"])
        settings = self.state.jobs.get(jid)
        if settings is None:
            return 400, {
                "error_code": "INVALID_PARAMETER_VALUE",
                "message": f"Job {jid} does not exist.",
            }
        token = body.get("idempotency_token")
        if token in self.state.tokens:
            return 200, {"run_id": self.state.tokens[token]}
        active = self._active(jid)
        if _unpaused_continuous(settings) and active:  # one run of a continuous job at a time
            run_id = active[0].run_id
        else:
            run = self._new_cluster_run(jid, settings, body, "ONE_TIME")
            self._spawn(self._execute, run)
            run_id = run.run_id
        if token:
            self.state.tokens[token] = run_id
        return 200, {"run_id": run_id}

    def _submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        refusal = submit_refusal(body)
        if refusal:
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": refusal}
        token = body.get("idempotency_token")
        if token in self.state.tokens:
            return 200, {"run_id": self.state.tokens[token]}
        settings = {**body, "tasks": _submitted_tasks(body), "name": body.get("run_name", "")}
        run = self._new_cluster_run(None, settings, {}, "ONE_TIME")
        if token:
            self.state.tokens[token] = run.run_id
        self._spawn(self._execute, run)
        return 200, {"run_id": run.run_id}

    def _cancel(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "job_id" in body:  # runs/cancel-all
            runs = self._active(int(body["job_id"]))
        elif int(body["run_id"]) in self.cluster_runs:
            runs = [self.cluster_runs[int(body["run_id"])]]
        else:
            return 400, {
                "error_code": "INVALID_PARAMETER_VALUE",
                "message": f"Run {body['run_id']} does not exist.",
            }
        for run in runs:
            if not run.ended.is_set():
                run.cancel.set()
                if run.life_cycle == "RUNNING":
                    run.life_cycle = "TERMINATING"
        return 200, {}

    def _list(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        jid = int(body["job_id"]) if "job_id" in body else None
        active_only = str(body.get("active_only", "false")).lower() == "true"
        runs = [
            r
            for r in sorted(self.cluster_runs.values(), key=lambda r: -r.run_id)
            if (jid is None or r.job_id == jid) and not (active_only and r.ended.is_set())
        ]
        summaries = [{k: v for k, v in self._run_json(r).items() if k != "tasks"} for r in runs]
        return 200, ({"runs": summaries, "has_more": False} if runs else {"has_more": False})

    def _output(self, run: ExecutedRun, task: TaskRun | None) -> tuple[int, dict[str, Any]]:
        if task is None and len(run.tasks) != 1:
            return 400, {
                "error_code": "INVALID_PARAMETER_VALUE",
                "message": "Retrieving the output of runs with multiple tasks is not supported. "
                "Please retrieve the output of each individual task run instead.",
            }
        task = task or run.tasks[0]
        log = task.log()
        out: dict[str, Any] = {
            "metadata": {
                **self._run_json(run),
                "run_id": task.run_id,
                "task_key": task.key,
                "tasks": [self._task_json(run, task)],
            },
            "logs": log[-LOG_TAIL:],
            "logs_truncated": len(log) > LOG_TAIL,
        }
        if task.result in ("FAILED", "TIMEDOUT"):
            out["error"] = task.error or task.message
            if task.trace:
                out["error_trace"] = task.trace
        return 200, out

    def _run_json(self, run: ExecutedRun) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": run.run_id,
            "number_in_job": run.run_id,
            "original_attempt_run_id": run.run_id,
            "run_name": run.run_name,
            "creator_user_name": CREATOR,
            "run_type": run.run_type,
            "trigger": run.trigger,
            "attempt_number": 0,
            "format": "MULTI_TASK",
            **run_state(run.life_cycle, run.result, run.message, run.code, _user_ended(run)),
            "start_time": run.start_time,
            "end_time": run.end_time,
            "setup_duration": 0,
            "cleanup_duration": 0,
            "execution_duration": max(0, (run.end_time or _now_ms()) - run.start_time),
            "run_page_url": f"{self.url}/jobs/{run.job_id or 'runs'}/runs/{run.run_id}",
            "tasks": [self._task_json(run, t) for t in run.tasks],
        }
        if run.job_id is not None:
            out["job_id"] = run.job_id
        return out

    def _task_json(self, run: ExecutedRun, task: TaskRun) -> dict[str, Any]:
        return {
            **copy.deepcopy(task.task),
            "run_id": task.run_id,
            "task_key": task.key,
            "attempt_number": 0,
            **run_state(task.life_cycle, task.result, task.message, task.code, _user_ended(run)),
            "start_time": task.start_time,
            "end_time": task.end_time,
            "run_page_url": f"{self.url}/jobs/{run.job_id or 'runs'}/runs/{task.run_id}",
        }

    # --- runs ---------------------------------------------------------------------------------
    def _active(self, job_id: int) -> list[ExecutedRun]:
        return [
            r
            for r in sorted(self.cluster_runs.values(), key=lambda r: r.run_id)
            if r.job_id == job_id and not r.ended.is_set()
        ]

    def _next_id(self) -> int:
        self.state.next_id += 1
        return int(self.state.next_id)

    def _new_cluster_run(
        self, job_id: int | None, settings: dict[str, Any], body: dict[str, Any], trigger: str
    ) -> ExecutedRun:
        """A run of these settings (a snapshot: later changes do not reach it). Under the lock."""
        settings = copy.deepcopy(settings)
        clusters = {
            jc["job_cluster_key"]: jc.get("new_cluster", {})
            for jc in settings.get("job_clusters", [])
        }
        run = ExecutedRun(
            run_id=self._next_id(),
            job_id=job_id,
            run_name=str(settings.get("name", "")),
            run_type="SUBMIT_RUN" if job_id is None else "JOB_RUN",
            trigger=trigger,
            principal=principal_of(settings.get("run_as")),
            tasks=[],
            max_concurrent=0 if job_id is None else int(settings.get("max_concurrent_runs", 1)),
            queue=bool(settings.get("queue", {}).get("enabled")),
            timeout_s=float(settings.get("timeout_seconds") or 0),
        )
        for task in _ordered(settings.get("tasks", [])):
            if "python_params" in body and "spark_python_task" in task:
                task["spark_python_task"]["parameters"] = list(body["python_params"])
            cluster = task.get("new_cluster") or clusters.get(task.get("job_cluster_key", ""), {})
            run.tasks.append(TaskRun(self._next_id(), task["task_key"], task, cluster))
        if self._stopping.is_set():  # the server is closing: this run must not start
            run.cancel.set()
        self.cluster_runs[run.run_id] = run
        return run

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _execute(self, run: ExecutedRun) -> None:
        """Run each task in turn on a cluster of its own; a failed task skips the rest."""
        try:
            if self._queue_turn(run):
                for task in run.tasks:
                    if run.cancel.is_set() or run.result:
                        self._end(
                            task,
                            "SKIPPED" if run.result else "TERMINATED",
                            "UPSTREAM_FAILED" if run.result else "CANCELED",
                            "",
                            "SKIPPED",
                        )
                        continue
                    self._run_task(run, task)
                    if task.result not in ("SUCCESS", "CANCELED"):
                        run.result = "FAILED"
            self._conclude(run)
        except Exception as exc:  # a fault of this fake: the run must still end, saying why
            with self.lock:
                run.life_cycle, run.result = "INTERNAL_ERROR", "FAILED"
                run.message = f"the local runtime failed: {exc!r}"
        finally:
            with self.lock:
                run.end_time = _now_ms()
            run.ended.set()

    def _queue_turn(self, run: ExecutedRun) -> bool:
        """Wait until the job has room for this run (QUEUED), or skip it: False when it ended."""
        while run.max_concurrent:
            with self.lock:
                ahead = [r for r in self._active(run.job_id or 0) if r.run_id < run.run_id]
                if len(ahead) < run.max_concurrent:
                    return True
                if not run.queue:
                    run.life_cycle, run.code = "SKIPPED", "MAX_CONCURRENT_RUNS_EXCEEDED"
                    run.message = (
                        f"Skipped: the job already has {len(ahead)} active run(s), its "
                        "max_concurrent_runs"
                    )
                    for task in run.tasks:
                        task.life_cycle, task.code = "SKIPPED", "SKIPPED"
                    return False
                run.life_cycle = "QUEUED"
            if run.cancel.wait(POLL_S):
                return True  # the tasks end CANCELED without starting
        return True

    def _run_task(self, run: ExecutedRun, task: TaskRun) -> None:
        refusal = single_user_refusal(
            run.principal, task.cluster, f"task {task.key}"
        ) or self.secrets.start_refusal(run.principal, task.cluster)
        process = None
        if refusal is None and self.runtime is not None:
            try:
                process = self.runtime.start(
                    task=copy.deepcopy(task.task),
                    cluster=copy.deepcopy(task.cluster),
                    principal=run.principal,
                    fetch=self.fetch,
                    secret=lambda scope, key: self._cluster_secret(run.principal, scope, key),
                    workspace_url=self.url,
                    token=TOKEN,
                )
            except Exception as exc:  # the cluster did not start: its reason is the message
                refusal = str(exc) or repr(exc)
        if process is None:
            self._end(task, "INTERNAL_ERROR", "FAILED", refusal or "no runtime", "CLUSTER_ERROR")
            task.error = task.message
            return
        with self.lock:
            task.process, task.start_time = process, _now_ms()
            task.life_cycle = "RUNNING"
            if run.life_cycle in ("PENDING", "QUEUED"):
                run.life_cycle = "RUNNING"
        code = self._watch(run, process)
        task.final_log = process.log()
        if run.cancel.is_set() and not run.timed_out:
            self._end(task, "TERMINATED", "CANCELED", "", "USER_CANCELED")
        elif run.timed_out:
            self._end(task, "TERMINATED", "TIMEDOUT", "Task timed out.", "RUN_EXECUTION_ERROR")
        elif code == 0:
            self._end(task, "TERMINATED", "SUCCESS", "", "SUCCESS")
        else:
            task.error, task.trace = _failure(task.final_log, code)
            self._end(task, "TERMINATED", "FAILED", task.error, "RUN_EXECUTION_ERROR")

    def _watch(self, run: ExecutedRun, process: ClusterRun) -> int:
        """The process's exit code; it is cancelled on runs/cancel, timeout or server stop."""
        deadline = time.monotonic() + run.timeout_s if run.timeout_s else None
        while (code := process.poll()) is None:
            late = deadline is not None and time.monotonic() > deadline
            if run.cancel.wait(POLL_S) or late:
                run.timed_out = late
                run.cancel.set()
                process.cancel()
                while (code := process.poll()) is None:
                    self._stopping.wait(POLL_S)
                return code
        return code

    def _end(self, task: TaskRun, life_cycle: str, result: str, message: str, code: str) -> None:
        with self.lock:
            task.life_cycle, task.result, task.message, task.code = (
                life_cycle,
                result,
                message,
                code,
            )
            task.end_time = _now_ms()

    def _conclude(self, run: ExecutedRun) -> None:
        """The run's state from its tasks' (runs/get `state`, as the Airflow provider reads it)."""
        with self.lock:
            if run.life_cycle == "SKIPPED":
                return
            failed = next(
                (
                    t
                    for t in run.tasks
                    if t.result not in ("SUCCESS", "CANCELED", "UPSTREAM_FAILED")
                ),
                None,
            )
            if failed is not None and failed.life_cycle == "INTERNAL_ERROR":
                run.life_cycle, run.result, run.code = "INTERNAL_ERROR", "FAILED", failed.code
                run.message = failed.message
            elif failed is not None:
                run.life_cycle, run.result, run.code = "TERMINATED", failed.result, failed.code
                run.message = (
                    f"Task {failed.key} failed with message: {failed.message}. This caused all "
                    "downstream tasks to get skipped."
                )
            elif run.cancel.is_set():
                run.life_cycle, run.result, run.code = "TERMINATED", "CANCELED", "USER_CANCELED"
                run.message = "Run cancelled."
            else:
                run.life_cycle, run.result, run.code = "TERMINATED", "SUCCESS", "SUCCESS"
                run.message = ""

    def _cluster_secret(self, principal: str, scope: str, key: str) -> str:
        with self.lock:
            try:
                return self.secrets.resolve(principal, scope, key)
            except SecretRefused as exc:
                raise _secret_denied(str(exc)) from None

    # --- continuous jobs ----------------------------------------------------------------------
    def continuous_changed(self, job_id: int) -> None:
        """After create / reset / update (under the lock): an unpaused continuous job runs."""
        settings = self.state.jobs.get(job_id)
        if self.runtime is None or settings is None or not _unpaused_continuous(settings):
            return
        if job_id not in self._supervisors:
            self._supervisors[job_id] = threading.Thread(
                target=self._supervise, args=(job_id,), daemon=True
            )
            self._threads.append(self._supervisors[job_id])
            self._supervisors[job_id].start()

    def _supervise(self, job_id: int) -> None:
        """Keep one run of the job going while it is an unpaused continuous job."""
        failures = 0
        while not self._stopping.is_set():
            with self.lock:
                settings = self.state.jobs.get(job_id)
                if settings is None or not _unpaused_continuous(settings):
                    del self._supervisors[job_id]
                    return
                active = self._active(job_id)
                run = (
                    active[0]
                    if active
                    else self._new_cluster_run(job_id, settings, {}, "CONTINUOUS")
                )
            if active:  # a run-now of the job is the one run: wait for it to end
                while not run.ended.wait(POLL_S) and not self._stopping.is_set():
                    pass
            else:
                self._execute(run)
            failures = 0 if run.result in ("SUCCESS", "CANCELED") else failures + 1
            first, cap = self.restart_backoff
            self._stopping.wait(min(cap, first * 2 ** max(0, failures - 1)))

    def stop_runtime(self) -> None:
        """Cancel every active run and wait (bounded) for their threads: nothing outlives the
        server."""
        self._stopping.set()
        with self.lock:
            for run in self.cluster_runs.values():
                run.cancel.set()
        for thread in self._threads:
            thread.join(timeout=30)


def _user_ended(run: ExecutedRun) -> bool:
    return run.cancel.is_set() or run.timed_out
