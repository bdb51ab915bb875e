"""streamops_deploy from the outside: `airflow standalone`, its REST API, and its UI in Chromium.

Starts Airflow on a free port against a local Jobs API 2.2 server, triggers the DAG with params
through REST and through the UI's trigger form (headless Debian chromium), waits for success,
and keeps a screenshot of the run under docs/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_databricks import FakeJobsApi

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# The documentation's screenshot is refreshed only on request, so a test run leaves the checkout
# as it found it: STREAMOPS_REFRESH_DOCS=1 make test
DOC_SCREENSHOT = ROOT / "docs" / "streamops_deploy_run.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Airflow:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def call(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            self.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        # Airflow standalone runs on SQLite: under load a write can fail with "database is
        # locked" and a 500. A failed write changed nothing, so trying again is safe; bounded.
        for attempt in range(4):
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == 3:
                    raise
                time.sleep(2 * (attempt + 1))
        raise AssertionError("unreachable")

    def wait_run(self, run_id: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        path = f"/api/v2/dags/streamops_deploy/dagRuns/{urllib.request.quote(run_id)}"
        state = ""
        while time.monotonic() < deadline:
            state = self.call("GET", path)["state"]
            if state in ("success", "failed"):
                return str(state)
            time.sleep(1)
        raise AssertionError(f"run {run_id} still {state} after {timeout}s; log: {self.log}")


@pytest.fixture(scope="module")
def api() -> Iterator[FakeJobsApi]:
    with FakeJobsApi() as server:
        yield server


@pytest.fixture(scope="module")
def airflow(api: FakeJobsApi) -> Iterator[Airflow]:
    port = _free_port()
    home = Path(tempfile.mkdtemp(prefix=f"test-airflow-{os.getpid()}-ui-", dir=ROOT / ".cache"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__DEFAULT_CAPACITY": "10",
        "AIRFLOW_CONN_DATABRICKS_DEV": api.connection_uri(),
        "AIRFLOW_CONN_DATABRICKS_PROD": api.connection_uri(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    })  # fmt: skip
    log = home / "standalone.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    af = Airflow(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, f"airflow standalone exited; see {log}"
            try:
                dag = af.call("GET", "/api/v2/dags/streamops_deploy")
                if dag and not dag.get("is_paused"):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:  # a bounded wait for start-up, not a speed check
                pytest.fail(f"airflow standalone not ready in 150 s; see {log}")
            time.sleep(2)
        yield af
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_strays(home)
        shutil.rmtree(home, ignore_errors=True)


def _kill_strays(home: Path) -> None:
    """Kill what `airflow standalone` started outside its process group (its api_server outlived
    the group's SIGTERM and kept a core busy for the rest of the suite)."""
    import psutil

    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AIRFLOW_HOME") == str(home):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def test_trigger_through_rest_api(airflow: Airflow, api: FakeJobsApi) -> None:
    conf = {"job": "telemetry_5min", "target": "prod", "action": "deploy", "dry_run": False,
            "force": False}  # fmt: skip
    run = airflow.call("POST", "/api/v2/dags/streamops_deploy/dagRuns",
                       {"logical_date": None, "conf": conf})  # fmt: skip
    assert airflow.wait_run(run["dag_run_id"]) == "success"
    assert [(p, b.get("name")) for p, b in api.writes() if p == "create"] == [
        ("create", "streamops-demo-prod-telemetry_5min")
    ]


def test_trigger_through_ui_form(airflow: Airflow, api: FakeJobsApi, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    before = {r["dag_run_id"] for r in _runs(airflow)}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{airflow.url}/dags/streamops_deploy")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Run Parameters", exact=False).first.wait_for()
        dialog.get_by_role("button", name="Trigger").last.click()
        deadline = time.monotonic() + 60
        new: set[str] = set()
        while not new and time.monotonic() < deadline:
            new = {r["dag_run_id"] for r in _runs(airflow)} - before
            time.sleep(1)
        assert len(new) == 1, "the UI form did not create a run"
        run_id = new.pop()
        assert airflow.wait_run(run_id) == "success"
        page.goto(f"{airflow.url}/dags/streamops_deploy/runs/{run_id}/tasks/run_action")
        # claims_hourly is a continuous job: Databricks starts its run, the task links the job.
        page.get_by_text("Databricks job:", exact=False).first.wait_for(timeout=30_000)
        shot = tmp_path / DOC_SCREENSHOT.name
        page.screenshot(path=str(shot), full_page=False)
        if os.environ.get("STREAMOPS_REFRESH_DOCS") == "1":
            shutil.copyfile(shot, DOC_SCREENSHOT)
        browser.close()
    conf = airflow.call("GET", f"/api/v2/dags/streamops_deploy/dagRuns/{run_id}")["conf"]
    assert conf["job"] == "claims_hourly" and conf["target"] == "dev"
    assert ("create", "streamops-demo-dev-claims_hourly") in [
        (p, b.get("name")) for p, b in api.writes()
    ]


def _runs(airflow: Airflow) -> list[dict[str, Any]]:
    return list(airflow.call("GET", "/api/v2/dags/streamops_deploy/dagRuns")["dag_runs"])
