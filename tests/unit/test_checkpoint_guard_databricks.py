"""The checkpoint guard where the job really runs: on a Databricks cluster it reads the registry
with the cluster's own storage login, refuses to start (one line: the registry, the fix) when it
cannot, and the bundle's switch turns it off with a line in every run's log."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import fsspec
import pytest

from streamops.bundle import load
from streamops.checkpoint.registry import REGISTRY_NAME, guard
from streamops.deploy.guard import check_before_deploy, restart_blockers
from streamops.errors import CheckpointGuardError
from tests.unit.helpers import SHIPPED, edited, write

JOB = "claims_hourly"
PROD_CK = "checkpoint_root: abfss://checkpoints@streamopsprod.dfs.core.windows.net/streamops"
DEV_CK = "abfss://checkpoints@streamopsdev.dfs.core.windows.net/streamops"
MEMORY_OPTIONS = '{"skip_instance_cache": "true"}'


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_STORAGE_OPTIONS", raising=False)


def _guard_off(tmp_path: Path, target: str) -> Path:
    head = f"  {target}:\n    mode: {'local' if target == 'local' else 'databricks'}\n"
    return write(tmp_path, edited((head, head + "    checkpoints: {guard: false}\n")))


def test_the_switch_turns_the_guard_off_and_every_run_says_so(tmp_path: Path) -> None:
    bundle = load(_guard_off(tmp_path, "local"), "local")
    said: list[str] = []
    for _ in range(2):  # two runs, two lines
        assert guard(bundle, JOB, event="start", say=said.append) == {}
    assert (
        said
        == [
            "warning: [claims_hourly] checkpoint guard is OFF (targets.local.checkpoints.guard: "
            "false in bundle.yml): a reset or moved checkpoint will not be noticed"
        ]
        * 2
    )
    assert not (bundle.root / ".cache").exists()  # nothing read, nothing recorded
    prod = load(_guard_off(tmp_path, "prod"), "prod")
    (p,) = check_before_deploy(prod, JOB)
    assert p.severity == "warning" and p.path == "targets.prod.checkpoints.guard"
    assert restart_blockers(prod, JOB) == []


def test_a_databricks_start_without_a_storage_login_is_refused_in_one_line() -> None:
    bundle = load(SHIPPED, "prod")
    with pytest.raises(CheckpointGuardError) as info:
        guard(bundle, JOB, event="start", say=print)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(
        "cannot read the checkpoint registry abfss://checkpoints@streamopsprod.dfs.core.windows."
        f"net/streamops/{REGISTRY_NAME} (no storage login); not starting"
    )
    assert "targets.prod.databricks.storage" in msg and "checkpoints.guard: false" in msg


def test_an_unreadable_registry_refuses_the_start_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"memory://ck-{uuid.uuid4().hex[:8]}/streamops"
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", MEMORY_OPTIONS)
    bundle = load(write(tmp_path, edited((PROD_CK, f"checkpoint_root: {root}"))), "prod")
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/{REGISTRY_NAME}", b"\xff\xfe not utf-8")
    with pytest.raises(CheckpointGuardError) as info:
        guard(bundle, JOB, event="start")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot read the checkpoint registry {root}/{REGISTRY_NAME} (")
    assert "Fix: give the job cluster read/write access" in msg


def test_on_the_cluster_the_readers_log_in_as_the_cluster_does() -> None:
    # Unity Catalog (prod) and a service principal (dev) alike: through the cluster's own Spark
    # session (its Hadoop login), never a second Python-side login (issue 19).
    prod = dataclasses.replace(load(SHIPPED, "prod"), on_cluster=True)
    assert prod.runtime.storage(prod.checkpoint_root).adlfs() == {"protocol": "streamops-spark"}
    dev = dataclasses.replace(load(SHIPPED, "dev"), on_cluster=True)
    assert dev.runtime.storage(DEV_CK).adlfs() == {"protocol": "streamops-spark"}
    # Off the cluster (Airflow, a laptop) nothing is guessed: the deploy check says it skipped.
    (p,) = check_before_deploy(load(SHIPPED, "prod"), JOB)
    assert p.severity == "warning" and "checkpoint guard skipped" in p.message
