"""Governing the deployed job through the real provider hook against the local Jobs API server:
permissions sent with the create and through the Permissions API afterwards (a change of
permissions alone restarts nothing), and a changed streaming job restarted only once its
checkpoints check out."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from tests.airflow_env import configure

configure()

from streamops.bundle import Bundle, load  # noqa: E402
from streamops.clock import FakeClock  # noqa: E402
from streamops.databricks_access import DatabricksAccess, RetryPolicy  # noqa: E402
from streamops.deploy import actions, governance, specs  # noqa: E402
from streamops.deploy.plan import with_fingerprint  # noqa: E402
from tests.fake_databricks import FakeJobsApi  # noqa: E402
from tests.unit.helpers import SHIPPED  # noqa: E402

JOB = "claims_hourly"
PERMS = "/api/2.0/permissions/jobs/"


@pytest.fixture
def access(api: FakeJobsApi) -> DatabricksAccess:
    policy = RetryPolicy(attempts=2, clock=FakeClock())
    return DatabricksAccess(conn_id="databricks_prod", timeout_s=2, policy=policy)


def _bundle(**target: Any) -> Bundle:
    """The shipped prod bundle with target fields replaced (path kept: jobs/ and the wheel)."""
    b = load(SHIPPED, "prod")
    t = b.target.model_copy(update=target)
    spec = b.spec.model_copy(update={"targets": {**b.spec.targets, "prod": t}})
    return dataclasses.replace(b, spec=spec)


def _perm_calls(api: FakeJobsApi) -> list[tuple[str, dict[str, Any]]]:
    return [(c.method, c.body) for c in api.state.calls if c.path.startswith(PERMS)]


def test_create_sends_the_permissions_and_a_later_change_updates_them(
    api: FakeJobsApi, access: Any
) -> None:
    bundle = load(SHIPPED, "prod")
    res = actions.deploy(access, bundle, JOB, token="t1")
    create = next(c for c in api.state.calls if c.path == "/api/2.2/jobs/create")
    assert res.job_id is not None
    assert api.state.acl[res.job_id] == {"streamops-prod-operators": "CAN_MANAGE_RUN",
                                   "data-platform-admins": "CAN_MANAGE",
                                   "data-engineers": "CAN_VIEW"}  # fmt: skip
    assert "access_control_list" not in api.state.jobs[res.job_id]  # not a job setting
    assert create.body["run_as"] == {"service_principal_name": bundle.target.databricks.run_as}  # type: ignore[union-attr]
    assert _perm_calls(api) == []

    # A permissions change alone is a change of the job (its acl tag), applied by update.
    db = bundle.target.databricks
    assert db is not None
    perms = [p.model_copy(update={"level": "CAN_MANAGE"}) if p.group == "data-engineers" else p
             for p in db.permissions if p.group != "streamops-prod-operators"]  # fmt: skip
    changed = _bundle(databricks=db.model_copy(update={"permissions": perms}))
    api.state.calls.clear()
    out = actions.deploy(access, changed, JOB)
    assert out.plan is not None and out.plan.action == "update" and out.plan.permissions_only
    # Who may see or run the job changed, not what runs: the running run is left alone.
    assert not [c for c in api.state.calls if "/runs/" in c.path or c.path.endswith("run-now")]
    assert "its run was not restarted" in out.message
    assert _perm_calls(api) == [
        ("GET", {}),
        ("PATCH", {"access_control_list": [
            {"group_name": "data-platform-admins", "permission_level": "CAN_MANAGE"},
            {"group_name": "data-engineers", "permission_level": "CAN_MANAGE"}]}),
    ]  # fmt: skip
    # The update cannot revoke: the group the bundle dropped is named, with the fix.
    assert "group 'streamops-prod-operators' still has CAN_MANAGE_RUN" in out.message
    api.state.calls.clear()
    again = actions.deploy(access, changed, JOB)
    assert again.plan is not None and again.plan.action == "unchanged"
    assert _perm_calls(api) == [] and api.writes() == []


def _memory_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Bundle, str]:
    """Checkpoints on fsspec's memory store (reachable from here, as ADLS is with storage
    options); tables under an empty folder (no sink data yet, as for a new job)."""
    root = f"memory://ck-{uuid.uuid4().hex[:8]}/streamops"
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", '{"skip_instance_cache": "true"}')
    return _bundle(checkpoint_root=root, storage_root=str(tmp_path / "lake")), root


def _live_job(api: FakeJobsApi, bundle: Bundle) -> tuple[int, int]:
    """A deployed job one setting behind the bundle, with a run going."""
    d = specs.build_job_settings(bundle, JOB).as_dict()
    job_id = api.add_job(with_fingerprint(specs_from({**d, "max_concurrent_runs": 2})).as_dict())
    return job_id, api.start_run(job_id)


def specs_from(d: dict[str, Any]) -> Any:
    from databricks.sdk.service import jobs

    return jobs.JobSettings.from_dict(d)


def test_a_changed_job_restarts_once_its_checkpoints_check_out(
    api: FakeJobsApi, access: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle, _ = _memory_bundle(monkeypatch, tmp_path)
    _, run = _live_job(api, bundle)
    res = actions.deploy(access, bundle, JOB, token="t2", poll_s=0.01)
    assert [w[0] for w in api.writes() if not w[0].startswith("/")][-3:] == [
        "reset", "runs/cancel", "run-now"]  # fmt: skip
    assert res.run_id not in (None, run)


def test_a_changed_job_with_a_damaged_checkpoint_is_updated_but_not_restarted(
    api: FakeJobsApi, access: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle, root = _memory_bundle(monkeypatch, tmp_path)
    ck = f"{root}/{bundle.job(JOB).query_name}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{ck}/metadata", json.dumps({"id": str(uuid.uuid4())}).encode())
    meta = json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": 1, "conf": {}})
    for n in (0, 1, 3):  # batch 2 is gone
        fs.pipe(f"{ck}/offsets/{n}", f'v1\n{meta}\n{{"t":{{"0":{n}}}}}'.encode())
        fs.pipe(f"{ck}/commits/{n}", b'v1\n{"nextBatchWatermarkMs":0}')
    job_id, _ = _live_job(api, bundle)
    res = actions.deploy(access, bundle, JOB, token="t3", poll_s=0.01)
    ops = [w[0] for w in api.writes() if not w[0].startswith("/")]
    assert "reset" in ops and "runs/cancel" not in ops and "run-now" not in ops
    assert res.run_id is None
    assert "NOT restarted" in res.message and "CK110" in res.message
    assert "offsets jump from batch 1 to 3" in res.message
    assert res.message.rstrip().endswith("then restart it (action=restart)")
    assert governance.ACL_TAG in api.state.jobs[job_id]["tags"]
