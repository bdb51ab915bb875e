"""`streamops deploy` end to end (subprocess) against a local Jobs API 2.2 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fake_databricks import FakeJobsApi

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "streamops")


def _run(api: FakeJobsApi, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_CONN_DATABRICKS_PROD": api.connection_uri()}
    return subprocess.run([CLI, "deploy", "--job", "claims_hourly", "--target", "prod", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_dry_run_prints_plan_then_drift_is_refused() -> None:
    with FakeJobsApi() as api:
        dry = _run(api, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "does not exist: it will be created" in dry.stdout
        assert '+  "name": "streamops-demo-prod-claims_hourly",' in dry.stdout
        assert api.writes() == []
        done = _run(api, "--no-start")
        assert done.returncode == 0, done.stderr
        job_id = next(iter(api.state.jobs))
        api.state.jobs[job_id]["max_concurrent_runs"] = 3  # edited in the workspace
        refused = _run(api)
        assert refused.returncode == 1
        assert "edited outside bundle.yml" in refused.stderr and "--force" in refused.stderr
        assert [p for p, _ in api.writes()] == ["create"]
