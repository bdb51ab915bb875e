"""A local HTTP server that speaks the Databricks Jobs API 2.2 (the far side of the wire).

Tests run the real Airflow Databricks provider against it and assert the exact requests.
Faults are scripted per endpoint: `server.fail("POST", "/api/2.2/jobs/create", Fault(...))`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Fault:
    status: int = 500  # answer with this status...
    sleep: float = 0.0  # ...after sleeping this long (longer than the client's timeout: a timeout)
    commit: bool = False  # do the work anyway (the answer is lost, the change is not)


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


@dataclass
class JobsApiState:
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    runs: dict[int, Run] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: dict[tuple[str, str], list[Fault]] = field(default_factory=dict)
    next_id: int = 100
    finish_runs_after: int | None = None  # None: streaming runs never end on their own


class FakeJobsApi:
    def __init__(self) -> None:
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
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- test helpers -------------------------------------------------------------------
    def fail(self, method: str, path: str, *faults: Fault) -> None:
        self.state.faults.setdefault((method, path), []).extend(faults)

    def calls(self, *, reads: bool = True) -> list[Call]:
        return [c for c in self.state.calls if reads or c.method != "GET"]

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(c.path.removeprefix("/api/2.2/jobs/"), c.body) for c in self.calls(reads=False)]

    def add_job(self, settings: dict[str, Any]) -> int:
        with self.lock:
            return self._create(settings)

    def start_run(self, job_id: int) -> int:
        with self.lock:
            return self._new_run(job_id, {})

    def connection_uri(self) -> str:
        """An Airflow connection (JSON form) for this server: schema http, port apart."""
        return json.dumps({"conn_type": "databricks", "host": "127.0.0.1", "port": self.port,
                           "schema": "http", "password": "dapi-test-token"})  # fmt: skip

    # --- the API ---------------------------------------------------------------------------
    def _create(self, settings: dict[str, Any]) -> int:
        self.state.next_id += 1
        self.state.jobs[self.state.next_id] = json.loads(json.dumps(settings))
        return self.state.next_id

    def _new_run(self, job_id: int, body: dict[str, Any]) -> int:
        self.state.next_id += 1
        run = Run(self.state.next_id, job_id, body)
        if self.state.finish_runs_after is not None:
            run.finishing, run.polls_left = True, self.state.finish_runs_after
        self.state.runs[run.run_id] = run
        return run.run_id

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        s = self.state
        ep = path.removeprefix("/api/2.2/jobs/")
        if method == "GET" and ep == "list":
            name = body.get("name")
            jobs = [{"job_id": i, "settings": {"name": st.get("name")}}
                    for i, st in s.jobs.items() if name in (None, st.get("name"))]  # fmt: skip
            return 200, {"jobs": jobs} if jobs else {}
        if method == "GET" and ep == "get":
            jid = int(body["job_id"])
            if jid not in s.jobs:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "no job"}
            return 200, {"job_id": jid, "settings": {**s.jobs[jid], "format": "MULTI_TASK"}}
        if method == "POST" and ep == "create":
            return 200, {"job_id": self._create(body)}
        if method == "POST" and ep in ("reset", "update"):
            jid = int(body["job_id"])
            if ep == "reset":
                s.jobs[jid] = body["new_settings"]
            else:
                for k, v in body["new_settings"].items():
                    base = s.jobs[jid].get(k)
                    s.jobs[jid][k] = {**base, **v} if isinstance(base, dict) else v
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
            runs = [{"run_id": r.run_id, "job_id": r.job_id} for r in s.runs.values()
                    if r.job_id == int(body["job_id"]) and r.state != "TERMINATED"]  # fmt: skip
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
            return 200, {"run_id": r.run_id, "job_id": r.job_id, "state": state, "tasks": [],
                         "run_page_url": f"{self.url}/jobs/{r.job_id}/runs/{r.run_id}"}  # fmt: skip
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} {path}"}


def _handler(api: FakeJobsApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body: dict[str, Any] = dict(parse_qsl(url.query))
            if raw:  # the deferrable poller sends run_id as a JSON body even on GET
                body.update(json.loads(raw))
            if self.headers.get("Authorization") != "Bearer dapi-test-token":
                return self._send(401, {"error_code": "UNAUTHENTICATED"})
            with api.lock:
                api.state.calls.append(Call(method, url.path, body))
                queue = api.state.faults.get((method, url.path))
                fault = queue.pop(0) if queue else None
                if fault is None or fault.commit:
                    status, out = api.handle(method, url.path, body)
            if fault is not None:
                time.sleep(fault.sleep)
                status, out = fault.status, {"error_code": "TEMPORARILY_UNAVAILABLE",
                                             "message": "scripted fault"}  # fmt: skip
            self._send(status, out)

        def _send(self, status: int, out: dict[str, Any]) -> None:
            data = json.dumps(out).encode()
            try:
                self.send_response(status)
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

    return Handler
