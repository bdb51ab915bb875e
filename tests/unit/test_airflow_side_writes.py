"""The Airflow side of a Databricks target writes nothing under the project or DAG folder, and a
running task without $STREAMOPS_TARGET is an error naming it.

A git-synced DAG folder (or an Airflow 3 DAG bundle) is read-only: the deploy task builds the
wheel, and the tasks keep pages, alert state and reports, in the target's state folder
(`targets.<t>.state_dir`, else $STREAMOPS_STATE_DIR, else the OS temp dir).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow_env import configure

HOME = configure()
ROOT = Path(__file__).resolve().parents[2]

from streamops.bundle import load, task_bundle  # noqa: E402
from streamops.compaction.run_report import reports_dir  # noqa: E402
from streamops.errors import BundleError, UsageError  # noqa: E402
from streamops.monitoring.alerts.state import state_file  # noqa: E402
from streamops.monitoring.exporters import metrics_dir  # noqa: E402
from streamops.monitoring.paging import pages_log  # noqa: E402
from streamops.shipping import artifacts  # noqa: E402
from tests.fake_databricks import FakeJobsApi  # noqa: E402
from tests.unit.test_deploy_dag import airflow_db  # noqa: E402, F401

# What a project checkout holds that a deploy reads (the wheel's sources, entrypoints, DAGs).
PROJECT_FILES = ("bundle.yml", "pyproject.toml", "README.md", "requirements.lock")
PROJECT_DIRS = ("src", "jobs", "dags")
AIRFLOW_TASK = {"AIRFLOW_CTX_DAG_ID": "streamops_alerts", "AIRFLOW_CTX_TASK_ID": "watchdog"}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    # Python skips __pycache__ by itself on a read-only folder; as root (this sandbox) chmod does
    # not stop a write, so the snapshot is what proves nothing was written.
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if "__pycache__" not in p.parts
    }


@pytest.fixture
def read_only_project(tmp_path: Path) -> Iterator[Path]:
    """A copy of the project, every folder and file read-only, as a git-synced DAG folder is."""
    proj = tmp_path / "project"
    proj.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, proj / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, proj / name, ignore=ignore)
    paths = [proj, *proj.rglob("*")]
    for p in paths:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield proj
    finally:
        for p in paths:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_deploy_task_on_a_read_only_project_writes_nothing_there(
    airflow_db: Path,  # noqa: F811
    api: FakeJobsApi,
    read_only_project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    state = tmp_path / "state"
    monkeypatch.setenv("STREAMOPS_STATE_DIR", str(state))
    before = _snapshot(read_only_project)
    bag = DagBag(dag_folder=str(read_only_project / "dags" / "streamops_deploy.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("streamops_deploy")
    dr = dag.test(run_conf={"job": "transactions_backfill", "target": "prod", "action": "deploy"})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states == {"check_params": "success", "run_action": "success"}
    assert [w[0] for w in api.writes()] == ["create"]
    assert _snapshot(read_only_project) == before
    # The wheel was built from the read-only project into the state folder, and uploaded.
    built = sorted((state / "streamops-demo" / "prod" / "dist").glob("*/*.whl"))
    assert [w.name for w in built] == ["streamops-0.1.0-py3-none-any.whl"]
    # (a workspace import names it in the body, a volume upload in the Files API path)
    sent = [f"{ep} {body}" for _, ep, body in api.uploads()]
    assert any("/streamops-0.1.0-py3-none-any.whl" in s for s in sent), sent


def test_every_airflow_side_writer_uses_the_state_folder(
    read_only_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMOPS_STATE_DIR", str(tmp_path / "state"))
    b = load(read_only_project / "bundle.yml", "prod")
    assert b.state_dir == tmp_path / "state" / "streamops-demo" / "prod"
    writers = [
        artifacts.cache_dir(b),  # the wheel and the wheelhouse
        pages_log(b),
        state_file(b.state_dir),
        reports_dir(b),
        metrics_dir(b.state_dir),
    ]
    for path in writers:
        assert path.is_relative_to(b.state_dir), path
        assert not path.is_relative_to(read_only_project), path


def test_state_folder_defaults_and_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_STATE_DIR", raising=False)
    local = load(ROOT / "bundle.yml", "local")
    assert local.state_dir == ROOT / ".cache"  # the developer's machine: unchanged
    prod = load(ROOT / "bundle.yml", "prod")
    assert prod.state_dir.is_relative_to(tempfile.gettempdir())
    assert prod.state_dir.name == "prod" and not prod.state_dir.is_relative_to(ROOT)
    # Another checkout of the same project on the same worker gets a folder of its own.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(ROOT / "bundle.yml", other / "bundle.yml")
    assert load(other / "bundle.yml", "prod").state_dir != prod.state_dir
    # targets.<t>.state_dir wins, and must be absolute (a relative one lands in the project).
    text = (ROOT / "bundle.yml").read_text()
    anchor = "  prod:\n    mode: databricks\n"
    assert text.count(anchor) == 1
    for value, ok in (("/var/lib/streamops/prod", True), ("state", False)):
        edited = text.replace(anchor, f"{anchor}    state_dir: {value}\n")
        (tmp_path / "bundle.yml").write_text(edited)
        if ok:
            b = load(tmp_path / "bundle.yml", "prod")
            assert b.state_dir == Path(value)
        else:
            with pytest.raises(BundleError, match=r"targets\.prod\.state_dir: 'state' is not an"):
                load(tmp_path / "bundle.yml", "prod")


def test_a_running_task_without_a_target_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_TARGET", raising=False)
    parsed = load(ROOT / "bundle.yml", "local")  # what a DAG file parses for, unset
    for name in AIRFLOW_TASK:
        monkeypatch.delenv(name, raising=False)
    assert task_bundle(parsed) is parsed  # the CLI, a job, a test: 'local' stays the default
    for name, value in AIRFLOW_TASK.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as info:
        task_bundle(parsed)
    message = str(info.value)
    assert "STREAMOPS_TARGET is not set on this Airflow worker" in message
    assert "Fix: set STREAMOPS_TARGET=<target>" in message
    monkeypatch.setenv("STREAMOPS_TARGET", "prod")
    assert task_bundle(parsed).target_name == "prod"
    monkeypatch.setenv("STREAMOPS_TARGET", "local")
    assert task_bundle(parsed) is parsed


def test_alerts_dag_without_a_target_fails_its_task(
    airflow_db: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("STREAMOPS_TARGET", raising=False)
    for name in AIRFLOW_TASK:  # set by Airflow itself while the task runs (dag.test() too)
        monkeypatch.setenv(name, "")  # so that they are gone again after this test
        monkeypatch.delenv(name)
    bag = DagBag(dag_folder=str(ROOT / "dags" / "streamops_alerts.py"))
    assert bag.import_errors == {}  # parsing falls back to 'local'
    dr = bag.dags["streamops_alerts"].test()
    assert {ti.task_id: str(ti.state) for ti in dr.get_task_instances()} == {"watchdog": "failed"}
    assert all(os.environ.get(name) for name in AIRFLOW_TASK)  # how the task was recognised
