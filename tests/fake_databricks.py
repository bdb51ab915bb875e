"""A local HTTP server that speaks the Databricks Jobs API 2.2 (the far side of the wire).

Tests run the real Airflow Databricks provider against it and assert the exact requests.
Faults are scripted per endpoint: `server.fail("POST", "/api/2.2/jobs/create", Fault(...))`.

`FakeJobsApi(runtime)` also acts as the job cluster: run-now, runs/submit and continuous jobs
really execute through the runtime (tests/fake_runs.py), with secrets from the local Secrets API
(tests/fake_secrets.py). Without a runtime, job runs are scripted (`Run`, `finish_runs_after`)
and runs/submit calls `on_submit`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_jobs_shapes import job_response, list_entry, stored_settings
from tests.fake_runs import Runtime, RuntimeEndpoints, submit_refusal
from tests.fake_secrets import SECRETS, SecretsApi, masked
from tests.fake_workspace import SERVICE_PRINCIPALS, WorkspaceFilesMixin


@dataclass
class Fault:
    status: int = 500  # answer with this status...
    sleep: float = 0.0  # ...after sleeping this long (longer than the client's timeout: a timeout)
    commit: bool = False  # do the work anyway (the answer is lost, the change is not)
    error_code: str = (
        "TEMPORARILY_UNAVAILABLE"  # PERMISSION_DENIED (403), REQUEST_LIMIT_EXCEEDED...
    )
    retry_after: int | None = None  # seconds, sent as a Retry-After header (429, 503)


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any]


@dataclass
class Run:
    run_id: int
    job_id: int
    params: dict[str, Any]
    state: str = "RUNNING"
    result: str = ""
    polls_left: int = 1  # runs/get answers before a cancelled/finishing run is TERMINATED
    finishing: bool = False


PERMISSIONS = "/api/2.0/permissions/jobs/"


@dataclass
class JobsApiState:
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    runs: dict[int, Run] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: dict[tuple[str, str], list[Fault]] = field(default_factory=dict)
    next_id: int = 100
    finish_runs_after: int | None = None  # None: streaming runs never end on their own
    # Permissions API: job id -> {group: level} (the create's access_control_list, then PATCHes).
    acl: dict[int, dict[str, str]] = field(default_factory=dict)


# --- compaction: one-time runs (runs/submit, runs/get-output) and Unity Catalog tables ---------


@dataclass
class SubmittedRun:
    run_id: int
    task_run_id: int
    body: dict[str, Any]
    logs: str = ""
    result: str = ""  # SUCCESS / FAILED once the task function returned


class CompactionEndpoints:
    """`POST /api/2.2/jobs/runs/submit` runs `on_submit(body) -> (exit code, stdout)` in a thread
    (a test plugs in the real cluster entrypoint on local Spark); `runs/get` and `runs/get-output`
    report it. `GET /api/2.1/unity-catalog/tables/{full_name}` answers from `uc_tables`."""

    url: str
    on_submit: Any = None
    uc_tables: dict[str, dict[str, Any]]
    submitted: dict[int, SubmittedRun]
    _next_submit = 9000

    def _compaction_init(self) -> None:
        self.uc_tables, self.submitted = {}, {}

    def add_uc_table(self, full_name: str, flag: str | None = None, **inherited: str) -> None:
        """A UC table whose `effective_predictive_optimization_flag` is `flag` (ENABLE/DISABLE)."""
        catalog, schema, name = full_name.split(".")
        info: dict[str, Any] = {
            "full_name": full_name,
            "catalog_name": catalog,
            "schema_name": schema,
            "name": name,
            "table_type": "MANAGED",
            "data_source_format": "DELTA",
        }
        if flag is not None:
            info["effective_predictive_optimization_flag"] = {"value": flag, **inherited}
        self.uc_tables[full_name] = info

    def _finish(self, run: SubmittedRun) -> None:
        code, out = self.on_submit(run.body) if self.on_submit else (0, "")
        run.logs, run.result = out, "SUCCESS" if code == 0 else "FAILED"

    def handle_compaction(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | None:
        uc = "/api/2.1/unity-catalog/tables/"
        if method == "GET" and path.startswith(uc):
            info = self.uc_tables.get(path.removeprefix(uc))
            if info is None:
                return 404, {
                    "error_code": "TABLE_DOES_NOT_EXIST",
                    "message": f"Table '{path.removeprefix(uc)}' does not exist.",
                }
            return 200, info
        ep = path.removeprefix("/api/2.2/jobs/")
        if method == "POST" and ep == "runs/submit":
            refusal = submit_refusal(body)
            if refusal:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": refusal}
            CompactionEndpoints._next_submit += 2
            run = SubmittedRun(self._next_submit, self._next_submit + 1, body)
            self.submitted[run.run_id] = run
            threading.Thread(target=self._finish, args=(run,), daemon=True).start()
            return 200, {"run_id": run.run_id}
        if method == "GET" and ep == "runs/get" and int(body["run_id"]) in self.submitted:
            run = self.submitted[int(body["run_id"])]
            state = {
                "life_cycle_state": "TERMINATED" if run.result else "RUNNING",
                "state_message": "",
            }
            if run.result:
                state["result_state"] = run.result
            return 200, {
                "run_id": run.run_id,
                "state": state,
                "run_page_url": f"{self.url}/runs/{run.run_id}",
                "tasks": [{"run_id": run.task_run_id, "task_key": "compact", "state": state}],
            }
        if method == "GET" and ep == "runs/get-output":
            tid = int(body["run_id"])
            run = next((r for r in self.submitted.values() if r.task_run_id == tid), None)
            if run is None:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "no task run"}
            out: dict[str, Any] = {"logs": run.logs, "metadata": {"run_id": tid}}
            if run.result == "FAILED":
                out["error"] = "Exception: the task exited with code 1"
            return 200, out
        return None


class FakeJobsApi(CompactionEndpoints, RuntimeEndpoints, WorkspaceFilesMixin):
    def __init__(
        self, runtime: Runtime | None = None, *, restart_backoff: tuple[float, float] = (0.05, 1.0)
    ) -> None:
        """`runtime` runs what run-now / runs/submit / continuous jobs ask for; a continuous job
        restarts after `restart_backoff[0]` s, doubling per failure in a row up to `[1]`."""
        self._compaction_init()
        self._runtime_init(runtime, restart_backoff)
        self.secrets = SecretsApi()
        self.state = JobsApiState()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeJobsApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_runtime()  # first: a running job may still be calling this server
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- test helpers -------------------------------------------------------------------
    def fail(self, method: str, path: str, *faults: Fault) -> None:
        self.state.faults.setdefault((method, path), []).extend(faults)

    def calls(self, *, reads: bool = True) -> list[Call]:
        return [c for c in self.state.calls if reads or c.method != "GET"]

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        """Writes to the Jobs API (uploads: `uploads()`, tests/fake_workspace.py)."""
        return [
            (c.path.removeprefix("/api/2.2/jobs/"), c.body)
            for c in self.calls(reads=False)
            if not self.serves(c.path)
        ]

    def add_job(self, settings: dict[str, Any]) -> int:
        with self.lock:
            return self._create(settings)

    def start_run(self, job_id: int) -> int:
        with self.lock:
            if self.runtime is not None:
                return int(self._run_now({"job_id": job_id})[1]["run_id"])
            return self._new_run(job_id, {})

    def put_secret(
        self, scope: str, key: str, value: str, readers: list[str] | None = None
    ) -> None:
        """A secret in the local Secrets API (its scope created if missing, managed by the
        creator), readable by each of `readers` (users, groups, service principals' ids)."""
        with self.lock:
            self.secrets.put(scope, key, value, tuple(readers or ()))

    def connection_uri(self) -> str:
        """An Airflow connection (JSON form) for this server: schema http, port apart."""
        return json.dumps(
            {
                "conn_type": "databricks",
                "host": "127.0.0.1",
                "port": self.port,
                "schema": "http",
                "password": "dapi-test-token",
            }
        )

    def service_principal_uri(self) -> str:
        """An Airflow connection for this server that logs in as a Databricks service principal
        (OAuth M2M: login = client id, password = secret), as the provider documents it."""
        client_id, secret = next(iter(SERVICE_PRINCIPALS.items()))
        return json.dumps(
            {
                "conn_type": "databricks",
                "host": "127.0.0.1",
                "port": self.port,
                "schema": "http",
                "login": client_id,
                "password": secret,
                "extra": json.dumps({"service_principal_oauth": True}),
            }
        )

    # --- the API ---------------------------------------------------------------------------
    def handle_permissions(
        self, method: str, job_id: int, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """GET / PATCH /api/2.0/permissions/jobs/{id}: the documented ObjectPermissions shape,
        the creator as IS_OWNER and workspace admins' inherited CAN_MANAGE beside the groups."""
        have = self.state.acl.setdefault(job_id, {})
        if method == "PATCH":
            have.update(
                {
                    e["group_name"]: e["permission_level"]
                    for e in body.get("access_control_list", [])
                }
            )
        elif method != "GET":
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} permissions"}
        owner = {
            "user_name": "deployer@example.com",
            "all_permissions": [{"permission_level": "IS_OWNER", "inherited": False}],
        }
        admins = {
            "group_name": "admins",
            "all_permissions": [
                {
                    "permission_level": "CAN_MANAGE",
                    "inherited": True,
                    "inherited_from_object": ["/jobs/"],
                }
            ],
        }
        groups = [
            {"group_name": g, "all_permissions": [{"permission_level": lvl, "inherited": False}]}
            for g, lvl in have.items()
        ]
        return 200, {
            "object_id": f"/jobs/{job_id}",
            "object_type": "job",
            "access_control_list": [owner, admins, *groups],
        }

    def _create(self, settings: dict[str, Any]) -> int:
        self.state.next_id += 1
        self.state.jobs[self.state.next_id] = stored_settings(json.loads(json.dumps(settings)))
        return self.state.next_id

    def _new_run(self, job_id: int, body: dict[str, Any]) -> int:
        self.state.next_id += 1
        run = Run(self.state.next_id, job_id, body)
        if self.state.finish_runs_after is not None:
            run.finishing, run.polls_left = True, self.state.finish_runs_after
        self.state.runs[run.run_id] = run
        return run.run_id

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path.startswith(SECRETS):
            return self.secrets.handle(method, path, body)
        s = self.state
        ep = path.removeprefix("/api/2.2/jobs/")
        if self.runtime is not None:  # runs really execute: tests/fake_runs.py
            answered = self.handle_runtime(method, ep, body)
            if answered is not None:
                return answered
        compaction = self.handle_compaction(method, path, body)
        if compaction is not None:
            return compaction
        if path.startswith(PERMISSIONS):
            return self.handle_permissions(method, int(path.removeprefix(PERMISSIONS)), body)
        if method == "GET" and ep == "list":
            name = body.get("name")
            jobs = [list_entry(i, st) for i, st in s.jobs.items() if name in (None, st.get("name"))]
            return 200, {"jobs": jobs} if jobs else {}
        if method == "GET" and ep == "get":
            jid = int(body["job_id"])
            if jid not in s.jobs:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "no job"}
            return 200, job_response(
                jid, s.jobs[jid]
            )  # documented shape: tests/fake_jobs_shapes.py
        if method == "POST" and ep == "create":
            # The access_control_list of a create is the job's permissions, not a setting.
            acl = body.pop("access_control_list", [])
            job_id = self._create(body)
            s.acl[job_id] = {e["group_name"]: e["permission_level"] for e in acl}
            self.continuous_changed(job_id)
            return 200, {"job_id": job_id}
        if method == "POST" and ep in ("reset", "update"):
            jid = int(body["job_id"])
            if ep == "reset":
                s.jobs[jid] = stored_settings(body["new_settings"])
            else:
                for k, v in body["new_settings"].items():
                    base = s.jobs[jid].get(k)
                    s.jobs[jid][k] = {**base, **v} if isinstance(base, dict) else v
            self.continuous_changed(jid)
            return 200, {}
        if method == "POST" and ep == "run-now":
            token = body.get("idempotency_token")
            if token in s.tokens:
                return 200, {"run_id": s.tokens[token]}
            run_id = self._new_run(int(body["job_id"]), body)
            if token:
                s.tokens[token] = run_id
            return 200, {"run_id": run_id}
        if method == "GET" and ep == "runs/list":
            runs = [
                {"run_id": r.run_id, "job_id": r.job_id}
                for r in s.runs.values()
                if r.job_id == int(body["job_id"]) and r.state != "TERMINATED"
            ]
            return 200, {"runs": runs} if runs else {}
        if method == "POST" and ep == "runs/cancel":
            r = s.runs[int(body["run_id"])]
            if r.state != "TERMINATED":
                r.state, r.result, r.finishing, r.polls_left = "TERMINATING", "CANCELED", True, 1
            return 200, {}
        if method == "GET" and ep == "runs/get":
            r = s.runs[int(body["run_id"])]
            if r.finishing:
                if r.polls_left <= 0:
                    r.state, r.result = "TERMINATED", r.result or "SUCCESS"
                r.polls_left -= 1
            state = {"life_cycle_state": r.state, "state_message": ""}
            if r.result and r.state == "TERMINATED":
                state["result_state"] = r.result
            return 200, {
                "run_id": r.run_id,
                "job_id": r.job_id,
                "state": state,
                "tasks": [],
                "run_page_url": f"{self.url}/jobs/{r.job_id}/runs/{r.run_id}",
            }
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} {path}"}


def _handler(api: FakeJobsApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            if api.serves(url.path):  # Workspace / Files API: tests/fake_workspace.py
                return api.serve_workspace(self, method)
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body: dict[str, Any] = dict(parse_qsl(url.query))
            if raw:  # the deferrable poller sends run_id as a JSON body even on GET
                body.update(json.loads(raw))
            if self.headers.get("Authorization") != "Bearer dapi-test-token":
                return self._send(401, {"error_code": "UNAUTHENTICATED"})
            with api.lock:
                api.state.calls.append(Call(method, url.path, masked(body)))
                queue = api.state.faults.get((method, url.path))
                fault = queue.pop(0) if queue else None
                if fault is None or fault.commit:
                    status, out = api.handle(method, url.path, body)
            headers: dict[str, str] = {}
            if fault is not None:
                time.sleep(fault.sleep)
                status, out = (
                    fault.status,
                    {"error_code": fault.error_code, "message": "scripted fault"},
                )
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
            self._send(status, out, headers)

        def _send(
            self, status: int, out: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(out).encode()
            try:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_PATCH(self) -> None:  # Permissions API update
            self._serve("PATCH")

    return Handler
