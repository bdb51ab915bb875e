"""`streamops deploy --render` (no network call), the reproducible wheel, and both dependency
plans (index, wheelhouse) rendered.

The wheelhouse is downloaded by the real `pip download`, pointed by pip's own environment variables
(PIP_NO_INDEX, PIP_FIND_LINKS) at a folder of two versions of a tiny package built here: what is
tested is the pinning by requirements.lock, the cluster platform options, the cache, the uploads
and the libraries; not the public package index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamops.bundle import load
from streamops.cli import app
from streamops.errors import DeployError
from streamops.shipping import artifacts, wheel

ROOT = Path(__file__).resolve().parents[2]
# prod's databricks.artifact_root: a Unity Catalog volume (workspace files expire for jobs).
ART = "/Volumes/main/streamops/artifacts/streamops-demo"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    opened: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        opened.append(address)
        raise OSError(f"network call during a render: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return opened


def _render(bundle: Path, job: str = "claims_hourly", target: str = "prod") -> Any:
    res = CliRunner().invoke(app, ["deploy", "--job", job, "--target", target, "--render",
                                   "--bundle", str(bundle)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return res


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_render_prints_uploads_and_job_with_no_network_call(
    no_network: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_PASSWORD", "pa55-never-printed")
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_DATABRICKS_TOKEN", "dapi-never-printed")
    doc = json.loads(_render(ROOT / "bundle.yml").stdout)
    assert no_network == []
    wheel_src = ROOT / doc["uploads"][0]["source"]
    # jobs/compact.py and jobs/check.py too: the nightly compaction's and the checkpoint
    # check's one-time runs start them from the same place.
    files = [wheel_src, ROOT / "jobs" / "stream.py", ROOT / "jobs" / "compact.py",
             ROOT / "jobs" / "check.py", ROOT / "bundle.yml"]  # fmt: skip
    assert doc["uploads"] == [
        {"source": str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f),
         "destination": f"{ART}/{_sha(f)[:16]}/{f.name}", "sha256": _sha(f)} for f in files
    ]  # fmt: skip
    assert wheel_src.name == "streamops-0.1.0-py3-none-any.whl"
    # Built in prod's state folder, not in the project (which may be a read-only DAG folder).
    assert wheel_src.is_relative_to(load(ROOT / "bundle.yml", "prod").state_dir)
    assert not wheel_src.is_relative_to(ROOT)
    wheel_dest, entry, _compact, _check, bundle_file = (u["destination"] for u in doc["uploads"])
    settings = doc["job_settings"]
    task = settings["tasks"][0]
    assert task["spark_python_task"]["python_file"] == entry
    assert task["spark_python_task"]["parameters"] == [
        "--bundle", bundle_file, "--target", "prod", "--job", "claims_hourly"]  # fmt: skip
    assert task["libraries"] == [{"whl": wheel_dest}]  # dependencies: index (the default)
    cluster = settings["job_clusters"][0]["new_cluster"]
    assert cluster["spark_version"].startswith("18.")  # DBR 18 LTS = Spark 4.1, what tests run
    import pyspark

    assert pyspark.__version__.startswith("4.1.")
    text = json.dumps(doc)
    assert "never-printed" not in text
    assert "{{secrets/streamops-prod/kafka-password}}" in text  # a reference, resolved there
    for governed in ("run_as", "access_control_list", "health"):
        assert settings.get(governed), governed
    # A streaming job Databricks restarts after any exit; the API takes no task retries there.
    assert settings["continuous"] == {"pause_status": "UNPAUSED", "task_retry_mode": "ON_FAILURE"}
    assert not {"max_retries", "min_retry_interval_millis", "retry_on_timeout"} & set(task)


def _tiny_project(path: Path, name: str, version: str, deps: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {json.dumps(deps)}\n'
        '[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    (path / "src" / name).mkdir(parents=True)
    (path / "src" / name / "__init__.py").write_text(f'VERSION = "{version}"\n')
    return path


def test_wheel_bytes_depend_on_content_only(tmp_path: Path) -> None:
    a = _tiny_project(tmp_path / "a", "tinyproj", "1.0", [])
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.utime(b / "src" / "tinyproj" / "__init__.py", (1_000_000_000, 1_000_000_000))
    (b / "src" / "tinyproj" / "__init__.py").chmod(0o600)
    wa, wb = wheel.build_wheel(a, tmp_path / "cache-a"), wheel.build_wheel(b, tmp_path / "cache-b")
    assert wa.name == "tinyproj-1.0-py3-none-any.whl"
    assert _sha(wa) == _sha(wb)  # other mtimes and permissions, same bytes
    with zipfile.ZipFile(wa) as z:
        assert z.testzip() is None
        assert "tinyproj/__init__.py" in z.namelist()
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert wheel.build_wheel(a, tmp_path / "cache-a") == wa  # cached: no second build
    (b / "src" / "tinyproj" / "__init__.py").write_text('VERSION = "changed"\n')
    assert _sha(wheel.build_wheel(b, tmp_path / "cache-b")) != _sha(wa)


def test_wheelhouse_plan_downloads_once_and_lists_every_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package index made of two versions of a tiny dependency.
    index = tmp_path / "index"
    index.mkdir()
    for version in ("1.0", "2.0"):
        dep = _tiny_project(tmp_path / f"dep-{version}", "tinydep", version, [])
        shutil.copy(wheel.build_wheel(dep, tmp_path / "depcache"), index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    # The project: streamops' bundle.yml and entrypoint, a tiny package depending on tinydep,
    # pinned to 1.0 by its requirements.lock, and `dependencies: wheelhouse` on prod.
    proj = _tiny_project(tmp_path / "proj", "tinyproj", "0.1", ["tinydep>=1"])
    (proj / "requirements.lock").write_text("tinydep==1.0\n")
    shutil.copytree(ROOT / "jobs", proj / "jobs")
    text = (ROOT / "bundle.yml").read_text()
    anchor = "      airflow_conn_id: databricks_prod\n"
    assert text.count(anchor) == 1
    (proj / "bundle.yml").write_text(
        text.replace(anchor, anchor + "      dependencies: wheelhouse\n")
    )

    b = load(proj / "bundle.yml", "prod")
    with pytest.raises(DeployError, match="--prepare"):
        artifacts.collect(b, "claims_hourly")  # a render never downloads
    res = CliRunner().invoke(app, ["deploy", "--job", "claims_hourly", "--target", "prod",
                                   "--prepare", "--bundle", str(proj / "bundle.yml")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "tinydep-1.0-py3-none-any.whl" in res.stdout
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "gone"))  # prepared: no download again
    doc = json.loads(_render(proj / "bundle.yml").stdout)
    names = [Path(u["source"]).name for u in doc["uploads"]]
    assert names == ["tinyproj-0.1-py3-none-any.whl", "tinydep-1.0-py3-none-any.whl",
                     "stream.py", "compact.py", "check.py", "bundle.yml"]  # fmt: skip
    dests = [u["destination"] for u in doc["uploads"]]
    libraries = doc["job_settings"]["tasks"][0]["libraries"]
    assert libraries == [{"whl": dests[1]}, {"whl": dests[0]}]  # dependencies first
    assert all(d.startswith(f"{ART}/") for d in dests)
