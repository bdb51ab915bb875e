"""Deploy ships what runs: the wheel, jobs/stream.py and bundle.yml, uploaded with the real
databricks-sdk to a local Workspace / Files API server, then the job created with the provider hook
against the same server's Jobs API 2.2. Exact request bodies are asserted."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import configure

configure()

from streamops.bundle import load  # noqa: E402
from streamops.clock import FakeClock  # noqa: E402
from streamops.databricks_access import DatabricksAccess, RetryPolicy  # noqa: E402
from streamops.deploy import actions, client, specs  # noqa: E402
from streamops.deploy.plan import make_plan, with_fingerprint  # noqa: E402
from streamops.shipping import artifacts  # noqa: E402
from tests.fake_databricks import FakeJobsApi, Fault  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
JOB = "claims_hourly"
# prod's databricks.artifact_root (a Unity Catalog volume), and a workspace folder set instead.
VOL = "/Volumes/main/streamops/artifacts/streamops-demo"
ART = "/Workspace/Shared/streamops-demo/.streamops/artifacts"


@pytest.fixture(scope="module")
def bundle() -> Any:
    return load(ROOT / "bundle.yml", "prod")


@pytest.fixture
def access(api: FakeJobsApi) -> DatabricksAccess:
    policy = RetryPolicy(attempts=3, clock=FakeClock())
    return DatabricksAccess(conn_id="databricks_prod", timeout_s=1, policy=policy)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel(bundle: Any) -> Path:
    return Path(artifacts.collect(bundle, JOB).uploads[0].source)


def _expected_files(bundle: Any, root: str = VOL) -> list[tuple[Path, str]]:
    """(local file, remote path) of each upload, worked out here from the files' own bytes."""
    files = [_wheel(bundle), ROOT / "jobs" / "stream.py", ROOT / "jobs" / "compact.py",
             ROOT / "jobs" / "check.py", ROOT / "bundle.yml"]  # fmt: skip
    return [(f, f"{root}/{_sha(f)[:16]}/{f.name}") for f in files]


def _with_root(bundle: Any, root: str) -> Any:
    db = bundle.target.databricks.model_copy(update={"artifact_root": root})
    target = bundle.target.model_copy(update={"databricks": db})
    spec = bundle.spec.model_copy(update={"targets": {**bundle.spec.targets, "prod": target}})
    return type(bundle)(spec=spec, target_name="prod", path=bundle.path)


def test_first_deploy_uploads_then_creates_second_sends_nothing(
    api: FakeJobsApi, access: Any, bundle: Any
) -> None:
    """A workspace folder (still possible, with a validation warning): the Workspace API."""
    bundle = _with_root(bundle, ART)
    res = actions.deploy(access, bundle, JOB, start=False)
    assert res.plan is not None and res.plan.action == "create"
    files = _expected_files(bundle, ART)
    expected: list[tuple[str, str, dict[str, Any]]] = []
    for local, remote in files:
        expected += [
            ("POST", "workspace/mkdirs", {"path": remote.rsplit("/", 1)[0]}),
            ("POST", "workspace/import", {"path": remote, "format": "AUTO", "overwrite": "true",
                                          "content_sha256": _sha(local),
                                          "content_size": local.stat().st_size}),
        ]  # fmt: skip
    assert api.uploads() == expected
    assert {p: api.workspace.files[p] for _, p in files} == {p: f.read_bytes() for f, p in files}
    # The job runs exactly the uploaded files.
    (_, body), = api.writes()  # fmt: skip
    wheel, entry, _compact, _check, bundle_file = (p for _, p in files)
    task = body["tasks"][0]
    assert task["spark_python_task"]["python_file"] == entry
    assert task["spark_python_task"]["parameters"][:2] == ["--bundle", bundle_file]
    assert task["libraries"] == [{"whl": wheel}]
    arts = artifacts.collect(bundle, JOB)
    desired = with_fingerprint(specs.build_job_settings(bundle, JOB, arts)).as_dict()
    # (the create's access_control_list is the job's permissions: tests of governance)
    assert {k: v for k, v in body.items() if k != "access_control_list"} == desired

    api.state.calls.clear()
    again = actions.deploy(access, bundle, JOB)
    assert again.plan is not None and again.plan.action == "unchanged" and not again.plan.drift
    assert again.message == "nothing to do"
    assert api.uploads() == [] and api.writes() == []  # no upload, no reset, no restart
    assert "already there: bundle.yml -> " + bundle_file in again.render()


def test_volume_goes_through_the_files_api(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    """The default: prod's artifact_root is a Unity Catalog volume; the job reads its code there."""
    b = bundle
    assert artifacts.artifact_root(b) == VOL
    actions.deploy(access, b, JOB, start=False)
    files = _expected_files(bundle, VOL)
    assert not [c for c in api.calls() if "/workspace/" in c.path]  # no Workspace API call
    heads = [c.path for c in api.calls() if c.method == "HEAD"]
    assert heads == [f"/api/2.0/fs/files{p}" for _, p in files]
    assert api.uploads() == [("PUT", f"fs/files{p}", {"overwrite": "true",
                                                      "content_sha256": _sha(f),
                                                      "content_size": f.stat().st_size})
                             for f, p in files]  # fmt: skip
    api.state.calls.clear()
    actions.deploy(access, b, JOB, start=False)
    assert api.uploads() == [] and api.writes() == []


def test_lost_upload_answer_is_not_sent_twice(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    """The server stored the wheel but the answer never came (timeout): the retry finds it."""
    bundle = _with_root(bundle, ART)
    api.fail("POST", "/api/2.0/workspace/import", Fault(status=200, sleep=1.5, commit=True))
    actions.deploy(access, bundle, JOB, start=False)
    wheel_path = _expected_files(bundle, ART)[0][1]
    imports = [b["path"] for m, ep, b in api.uploads() if ep == "workspace/import"]
    assert imports.count(wheel_path) == 1 and len(imports) == 5
    assert [p for p, _ in api.writes()] == ["create"]


def test_throttled_volume_upload_waits_and_retries(
    api: FakeJobsApi, access: Any, bundle: Any
) -> None:
    b = bundle
    first = _expected_files(bundle, VOL)[0][1]
    api.fail("PUT", f"/api/2.0/fs/files{first}",
             Fault(status=429, error_code="REQUEST_LIMIT_EXCEEDED", retry_after=1))  # fmt: skip
    actions.deploy(access, b, JOB, start=False)
    puts = [ep for m, ep, _ in api.uploads() if m == "PUT"]
    assert puts.count(f"fs/files{first}") == 2  # refused once, then stored once
    assert first in api.workspace.files


def test_changed_file_gets_a_new_path_the_job_then_points_to(
    tmp_path: Path, api: FakeJobsApi, access: Any
) -> None:
    for name in ("pyproject.toml", "README.md", "bundle.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    shutil.copytree(ROOT / "src", tmp_path / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    b = load(tmp_path / "bundle.yml", "prod")
    actions.deploy(access, b, JOB, start=False)
    old = artifacts.collect(b, JOB)
    (tmp_path / "bundle.yml").write_text((tmp_path / "bundle.yml").read_text() + "# edited\n")
    b2 = load(tmp_path / "bundle.yml", "prod")
    new = artifacts.collect(b2, JOB)
    assert (new.wheel, new.entrypoint) == (old.wheel, old.entrypoint)
    assert new.bundle_file != old.bundle_file
    api.state.calls.clear()
    p, _ = actions.plan(access, b2, JOB)
    assert p.action == "update" and not p.drift
    assert [s.upload.destination for s in p.uploads if not s.present] == [new.bundle_file]
    assert [d.strip(' -",') for d in p.diff if d.startswith("-") and "artifacts" in d] == [
        old.bundle_file
    ]
    assert [d.strip(' +",') for d in p.diff if d.startswith("+") and "artifacts" in d] == [
        new.bundle_file
    ]
    assert api.uploads() == [] and api.writes() == []  # a plan changes nothing


def test_untouched_job_as_the_api_returns_it_is_no_drift(
    api: FakeJobsApi, access: Any, bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jobs/get fills in defaults and reorders fields (tests/fake_jobs_shapes.py); a job nobody
    touched is unchanged. Without the server's defaults the same check would call it drift."""
    actions.deploy(access, bundle, JOB, start=False)
    live = client.find_job(access.hook(), specs.job_name(bundle, JOB))
    assert live is not None
    assert live.settings["tasks"][0]["run_if"] == "ALL_SUCCESS"  # filled in by the server
    assert live.settings["format"] == "MULTI_TASK"
    desired = specs.build_job_settings(bundle, JOB, artifacts.collect(bundle, JOB))
    p = make_plan(desired, live.settings, live.job_id)
    assert (p.action, p.drift) == ("unchanged", False)
    from streamops.deploy import plan as plan_module

    defaults = {k: v for k, v in plan_module._TASK_DEFAULTS.items() if k != "run_if"}
    monkeypatch.setattr(plan_module, "_TASK_DEFAULTS", defaults)
    api.state.jobs.clear()
    actions.deploy(access, bundle, JOB, start=False)
    p, _ = actions.plan(access, bundle, JOB)
    assert p.drift and "edited outside bundle.yml" in p.drift_reason


def test_edit_in_the_workspace_is_still_drift(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    actions.deploy(access, bundle, JOB, start=False)
    job_id = next(iter(api.state.jobs))
    api.state.jobs[job_id]["tasks"][0]["run_if"] = "AT_LEAST_ONE_SUCCESS"
    p, _ = actions.plan(access, bundle, JOB)
    assert p.drift and "edited outside bundle.yml" in p.drift_reason
    assert '-      "run_if": "AT_LEAST_ONE_SUCCESS",' in p.diff


def test_hook_retries_wait_as_long_as_retry_after(api: FakeJobsApi) -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=3, clock=clock)
    access = DatabricksAccess(conn_id="databricks_prod", timeout_s=1, policy=policy)
    api.fail("GET", "/api/2.2/jobs/list",
             Fault(status=429, error_code="REQUEST_LIMIT_EXCEEDED", retry_after=7))  # fmt: skip
    assert client.find_job(access.hook(), "nope") is None
    assert clock.slept == [7.0]
