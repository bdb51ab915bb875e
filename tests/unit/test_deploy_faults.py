"""`streamops deploy` against a workspace that fails: one line naming the host and the fix, exit 1,
no traceback (the real CLI in a subprocess, the local Jobs / Workspace server on the far side)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_databricks import FakeJobsApi, Fault

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "streamops")
LIST = ("GET", "/api/2.2/jobs/list")


def _deploy(conn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_CONN_DATABRICKS_PROD": conn}
    return subprocess.run(
        [CLI, "deploy", "--job", "claims_hourly", "--target", "prod", "--timeout", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_unreachable_workspace() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = json.dumps({"conn_type": "databricks", "host": "127.0.0.1", "port": port,
                       "schema": "http", "password": "dapi-test-token"})  # fmt: skip
    line = _one_error_line(_deploy(conn))
    assert f"cannot reach the Databricks workspace at http://127.0.0.1:{port}" in line
    assert "Fix: check the host in the Airflow connection 'databricks_prod'" in line


@pytest.mark.parametrize(
    ("faults", "needle"),
    [
        ([], "refused the token (HTTP 401). Fix: renew the token"),
        ([Fault(status=403, error_code="PERMISSION_DENIED")], "denied the call (HTTP 403)"),
        ([Fault(status=429, error_code="REQUEST_LIMIT_EXCEEDED", retry_after=1)] * 3,
         "kept throttling requests (HTTP 429) after 3 attempts"),
        ([Fault(status=200, sleep=1.5)] * 3, "did not answer within 1 s (3 attempts"),
    ],
    ids=["401", "403", "429", "timeout"],
)  # fmt: skip
def test_workspace_faults(faults: list[Fault], needle: str) -> None:
    with FakeJobsApi() as api:
        api.fail(*LIST, *faults)
        conn = api.connection_uri()
        if not faults:
            conn = conn.replace("dapi-test-token", "dapi-expired")
        line = _one_error_line(_deploy(conn))
        assert f"the Databricks workspace at {api.url}" in line
        assert needle in line and "Fix: " in line
        assert api.writes() == [] and api.uploads() == []
        assert "dapi-" not in line  # the token is never printed
