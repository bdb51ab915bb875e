"""The streamops_deploy DAG: imports cleanly with no network, runs actions via dag.test()."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import configure

HOME = configure()
ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

from tests.fake_databricks import FakeJobsApi  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the SQLite metadata database once per test session."""
    if str(ROOT / "plugins") not in sys.path:
        sys.path.append(str(ROOT / "plugins"))
    if not (HOME / ".migrated").exists():
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                       check=True, env=os.environ.copy(), capture_output=True)  # fmt: skip
        (HOME / ".migrated").touch()
    return HOME


def test_every_dag_file_imports_without_network(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    opened: list[Any] = []

    def no_connect(self: socket.socket, address: Any) -> None:
        opened.append(address)
        raise OSError(f"network call at DAG import: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "streamops_deploy" in bag.dag_ids
    assert opened == []


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "streamops_deploy.py"))
    return bag.get_dag("streamops_deploy")


def _states(dr: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_bad_params_fail_first_task_before_any_remote_call(
    airflow_db: Path, api: FakeJobsApi
) -> None:
    dr = _dag().test(run_conf={"job": "claims_hourly", "target": "local", "action": "deploy"})
    assert _states(dr)["check_params"] == "failed"
    assert _states(dr)["run_action"] in ("upstream_failed", "None")
    assert api.calls() == []


def test_deploy_then_backfill_through_the_dag(airflow_db: Path, api: FakeJobsApi) -> None:
    dag = _dag()
    conf = {"job": "transactions_backfill", "target": "prod", "action": "deploy"}
    dr = dag.test(run_conf=conf)
    assert _states(dr) == {"check_params": "success", "run_action": "success"}
    assert [w[0] for w in api.writes()] == ["create"]  # a catch-up job is not started on deploy
    # ...after its wheel, entrypoint and bundle.yml were uploaded (databricks-sdk), where it runs
    # (prod's artifact_root is a Unity Catalog volume: the Files API, one PUT per file)
    imported = [ep.removeprefix("fs/files") for m, ep, _ in api.uploads() if m == "PUT"]
    assert [p.rsplit("/", 1)[1] for p in imported] == [
        "streamops-0.1.0-py3-none-any.whl", "stream.py", "compact.py", "check.py",
        "bundle.yml"]  # fmt: skip
    task = api.writes()[0][1]["tasks"][0]
    assert task["spark_python_task"]["python_file"] == imported[1]
    assert task["libraries"] == [{"whl": imported[0]}]
    api.state.finish_runs_after = 1
    for t in dag.tasks:
        if hasattr(t, "polling_period_seconds"):
            t.polling_period_seconds = 1
    dr = dag.test(run_conf={**conf, "action": "backfill"})
    assert _states(dr) == {"check_params": "success", "run_action": "success"}
    run_now = [b for path, b in api.writes() if path == "run-now"]
    assert len(run_now) == 1 and run_now[0]["python_params"][-1] == "--available-now"
    # the deferred wait polled with the provider's trigger (run_id in a JSON body on GET)
    assert any(c.path.endswith("runs/get") and c.body.get("run_id") for c in api.calls())
