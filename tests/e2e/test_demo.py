"""`make run` as a new user sees it: every job end to end, and the summary agrees with the data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack_fixtures import PROJECT


@pytest.mark.slow
def test_demo_runs_every_job_and_its_summary_checks_out(tmp_path: Path) -> None:
    # A copy of the project's bundle in its own folder, so the demo's data and broker are its own;
    # Azurite and the pinned jars are shared from the project's install.
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "node").symlink_to(PROJECT / ".cache" / "node")
    (tmp_path / ".cache" / "jvm").symlink_to(PROJECT / ".cache" / "jvm")
    (tmp_path / "bundle.yml").write_text((PROJECT / "bundle.yml").read_text())
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    for var in (
        "STREAMOPS_KAFKA_BOOTSTRAP_SERVERS",
        "STREAMOPS_LOCAL_STACK_DIR",
        "STREAMOPS_JVM_DIR",
    ):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "streamops.cli", "demo", "--bundle", str(tmp_path / "bundle.yml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│ ")]
    assert len(rows) == 3 and all(line.rstrip().endswith("OK    │") for line in rows), out[-4000:]
    assert "MISMATCH" not in out and "Traceback" not in out
    # The demo stops what it started.
    assert "local stack stopped" in proc.stdout
    assert (
        not (tmp_path / ".cache" / "demo-stack" / "state.json").exists()
        or '"pid"' not in (tmp_path / ".cache" / "demo-stack" / "state.json").read_text()
    )
