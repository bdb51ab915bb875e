"""Deploy actions against a local Jobs API 2.2 server, through the real provider hook (the
Databricks access's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import configure

configure()

from streamops.bundle import load  # noqa: E402
from streamops.clock import FakeClock  # noqa: E402
from streamops.databricks_access import DatabricksAccess, RetryPolicy  # noqa: E402
from streamops.deploy import actions, specs  # noqa: E402
from streamops.deploy.plan import SPEC_TAG, fingerprint, with_fingerprint  # noqa: E402
from streamops.errors import DeployError, DriftError  # noqa: E402
from streamops.shipping import artifacts  # noqa: E402
from tests.fake_databricks import FakeJobsApi, Fault  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
JOB = "claims_hourly"
NAME = "streamops-demo-prod-claims_hourly"
ROOTW = "/Workspace/Shared/streamops-demo"
RUN_AS = "9e7d5c3b-1a2f-4b6c-8d4e-0f1a2b3c4d5e"
ACL = [{"group_name": "streamops-prod-operators", "permission_level": "CAN_MANAGE_RUN"},
       {"group_name": "data-platform-admins", "permission_level": "CAN_MANAGE"},
       {"group_name": "data-engineers", "permission_level": "CAN_VIEW"}]  # fmt: skip
PARAMS = ["--bundle", f"{ROOTW}/bundle.yml", "--target", "prod", "--job", JOB]
EXPECTED_SETTINGS: dict[str, Any] = {
    "name": NAME,
    "description": "Insurance claims per hour, by claim type and region.",
    "max_concurrent_runs": 1,
    "timeout_seconds": 0,
    "queue": {"enabled": False},
    # A streaming job is continuous by default: Databricks restarts it after any exit.
    "continuous": {"pause_status": "UNPAUSED", "task_retry_mode": "ON_FAILURE"},
    "tags": {
        "managed_by": "streamops",
        "streamops_project": "streamops-demo",
        "streamops_target": "prod",
        "streamops_job": JOB,
        "streamops_query": "claims_hourly",
        "streamops_acl": "5358ade139d167fc",  # the permissions' fingerprint (deploy.governance)
    },
    "job_clusters": [{"job_cluster_key": "streamops", "new_cluster": {
        "spark_version": "18.0.x-scala2.13", "node_type_id": "Standard_E8ds_v5", "num_workers": 4,
        "data_security_mode": "SINGLE_USER", "single_user_name": RUN_AS,
        "spark_conf": {"spark.sql.streaming.stateStore.providerClass":
                       "com.databricks.sql.streaming.state.RocksDBStateStoreProvider"},
        "spark_env_vars": {"PYSPARK_PYTHON": "/databricks/python3/bin/python3",
            "STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER": "{{secrets/streamops-prod/kafka-user}}",
            "STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_PASSWORD":
                "{{secrets/streamops-prod/kafka-password}}",
            "STREAMOPS_SECRET_STREAMOPS_PROD_PAGERDUTY_ROUTING_KEY":
                "{{secrets/streamops-prod/pagerduty-routing-key}}"}}}],
    "run_as": {"service_principal_name": RUN_AS},
    "email_notifications": {"on_failure": ["streamops-oncall@example.com"],
                            "on_streaming_backlog_exceeded": ["streamops-oncall@example.com"]},
    "health": {"rules": [
        {"metric": "STREAMING_BACKLOG_RECORDS", "op": "GREATER_THAN", "value": 400000},
        {"metric": "STREAMING_BACKLOG_SECONDS", "op": "GREATER_THAN", "value": 900}]},
    "tasks": [{
        "task_key": JOB,
        "description": "Insurance claims per hour, by claim type and region.",
        "job_cluster_key": "streamops",
        "spark_python_task": {"python_file": f"{ROOTW}/jobs/stream.py", "parameters": PARAMS},
        "libraries": [{"whl": f"{ROOTW}/dist/streamops-0.1.0-py3-none-any.whl"}],
        "timeout_seconds": 0,  # no task retry fields: the Jobs API refuses them on continuous jobs
    }],
}  # fmt: skip


# Fixed remote paths for the settings tests; a deploy computes the real, content-addressed ones.
ARTIFACTS = artifacts.Artifacts(
    entrypoint=f"{ROOTW}/jobs/stream.py",
    bundle_file=f"{ROOTW}/bundle.yml",
    wheel=f"{ROOTW}/dist/streamops-0.1.0-py3-none-any.whl",
)


@pytest.fixture(scope="module")
def bundle() -> Any:
    return load(ROOT / "bundle.yml", "prod")


def _deployed_settings(bundle: Any) -> dict[str, Any]:
    """EXPECTED_SETTINGS at the paths a deploy of this checkout uploads to."""
    arts = artifacts.collect(bundle, JOB)
    task = {**EXPECTED_SETTINGS["tasks"][0], "libraries": [{"whl": arts.wheel}],
            "spark_python_task": {"python_file": arts.entrypoint,
                                  "parameters": [*PARAMS[:1], arts.bundle_file, *PARAMS[2:]]}}  # fmt: skip
    return {**EXPECTED_SETTINGS, "tasks": [task]}


@pytest.fixture
def access(api: FakeJobsApi) -> DatabricksAccess:
    # The access's own retry policy, its waits on a clock that never sleeps.
    policy = RetryPolicy(attempts=4, clock=FakeClock())
    return DatabricksAccess(conn_id="databricks_prod", timeout_s=1, policy=policy)


def _expected_body(bundle: Any) -> dict[str, Any]:
    settings = _deployed_settings(bundle)
    body = {**settings, "tags": {**settings["tags"]}}
    body["tags"][SPEC_TAG] = fingerprint(settings)
    return body


def test_job_settings_from_bundle(bundle: Any) -> None:
    assert specs.build_job_settings(bundle, JOB, ARTIFACTS).as_dict() == EXPECTED_SETTINGS


def test_available_now_and_continuous_jobs(bundle: Any) -> None:
    d = specs.build_job_settings(bundle, "transactions_backfill", ARTIFACTS).as_dict()
    assert d["tasks"][0]["max_retries"] == specs.AVAILABLE_NOW_RETRIES
    cont = bundle.spec.model_copy(update={"jobs": {**bundle.spec.jobs, JOB: bundle.job(JOB).model_copy(update={"continuous": True})}})  # fmt: skip
    b2 = type(bundle)(spec=cont, target_name="prod", path=bundle.path)
    d2 = specs.build_job_settings(b2, JOB, ARTIFACTS).as_dict()
    assert d2["continuous"] == {"pause_status": "UNPAUSED", "task_retry_mode": "ON_FAILURE"}
    assert "max_retries" not in d2["tasks"][0]


def test_local_target_is_refused() -> None:
    b = load(ROOT / "bundle.yml", "local")
    with pytest.raises(DeployError, match="mode 'local'"):
        specs.build_job_settings(b, JOB, ARTIFACTS)


def test_create_then_noop_redeploy(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    res = actions.deploy(access, bundle, JOB, token="t1")
    assert res.plan is not None and res.plan.action == "create"
    writes = api.writes()
    # A continuous job starts when it is created (unpaused): no run-now.
    assert writes == [("create", _expected_body(bundle))]
    assert res.run_id is None
    api.state.calls.clear()
    again = actions.deploy(access, bundle, JOB)
    assert again.plan is not None and again.plan.action == "unchanged"
    assert api.writes() == []  # nothing changed, nothing restarted
    paths = [c.path for c in api.calls()]
    assert paths[:2] == ["/api/2.2/jobs/list", "/api/2.2/jobs/get"]
    # one HEAD per artifact: wheel, entrypoint, bundle, compaction job, checkpoint check
    names = sorted(p.rsplit("/", 1)[-1] for p in paths[2:])
    assert len(names) == 5 and {"compact.py", "check.py"} <= set(names), names
    # prod's artifacts are in a Unity Catalog volume: checked with the Files API (HEAD).
    assert all(p.startswith("/api/2.0/fs/files/Volumes/") for p in paths[2:])
    assert api.uploads() == []  # every file already there


def test_changed_bundle_resets_but_restarts_only_after_the_checkpoint_check(
    api: FakeJobsApi, access: Any, bundle: Any
) -> None:
    old = {**EXPECTED_SETTINGS, "max_concurrent_runs": 2}
    job_id = api.add_job(with_fingerprint(specs_from(old)).as_dict())
    run = api.start_run(job_id)
    dry = actions.deploy(access, bundle, JOB, dry_run=True)
    assert dry.plan is not None and dry.plan.action == "update" and not dry.plan.drift
    assert '-  "max_concurrent_runs": 2,' in dry.plan.diff
    assert '+  "max_concurrent_runs": 1,' in dry.plan.diff
    assert api.writes() == []
    res = actions.deploy(access, bundle, JOB, token="t2", poll_s=0.01)
    # prod's checkpoints (abfss) cannot be read from here: the job is updated, the running run
    # is left alone. The restart once the check passes: tests/unit/test_deploy_governance.py.
    assert api.writes() == [
        ("reset", {"job_id": str(job_id), "new_settings": _expected_body(bundle)}),
        (f"/api/2.0/permissions/jobs/{job_id}", {"access_control_list": ACL}),
    ]
    assert res.run_id is None and "NOT restarted" in res.message
    assert api.state.runs[run].state == "RUNNING"


def specs_from(d: dict[str, Any]) -> Any:
    from databricks.sdk.service import jobs

    return jobs.JobSettings.from_dict(d)


def test_drift_is_refused_unless_forced(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    deployed = with_fingerprint(specs_from(EXPECTED_SETTINGS)).as_dict()
    deployed["tasks"][0]["max_retries"] = 5  # edited in the workspace UI; the tag still says -1
    job_id = api.add_job(deployed)
    with pytest.raises(DriftError, match=r"edited outside bundle\.yml") as exc:
        actions.deploy(access, bundle, JOB)
    assert '-      "max_retries": 5,' in str(exc.value)
    assert api.writes() == []
    actions.deploy(access, bundle, JOB, force=True, start=False)
    assert api.writes() == [
        ("reset", {"job_id": str(job_id), "new_settings": _expected_body(bundle)}),
        (f"/api/2.0/permissions/jobs/{job_id}", {"access_control_list": ACL}),
    ]


def test_restart_cancels_waits_then_starts(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    job_id = api.add_job(with_fingerprint(specs_from(EXPECTED_SETTINGS)).as_dict())
    run = api.start_run(job_id)
    api.state.calls.clear()
    res = actions.restart(access, bundle, JOB, token="r1", poll_s=0.01)
    seq = [(c.method, c.path.removeprefix("/api/2.2/jobs/"), c.body.get("run_id"))
           for c in api.calls() if "runs" in c.path or "run-now" in c.path]  # fmt: skip
    assert seq == [
        ("GET", "runs/list", None),
        ("POST", "runs/cancel", run),
        ("GET", "runs/get", str(run)),  # TERMINATING
        ("GET", "runs/get", str(run)),  # TERMINATED: only now a new run starts
        ("POST", "run-now", None),
        ("GET", "runs/get", str(res.run_id)),  # the run page link
    ]
    assert api.state.runs[run].state == "TERMINATED"


def test_backfill_runs_once_available_now(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    job_id = api.add_job(with_fingerprint(specs_from(EXPECTED_SETTINGS)).as_dict())
    res = actions.backfill(access, bundle, JOB, token="b1")
    assert api.writes() == [("run-now", {"job_id": job_id, "idempotency_token": "b1",
                                         "python_params": [*PARAMS, "--available-now"]})]  # fmt: skip
    assert res.run_url and str(res.run_id) in res.run_url
    with pytest.raises(DeployError, match="active run"):
        actions.backfill(access, bundle, JOB)  # the first is still running: same checkpoint


def test_recover_stops_then_starts_a_recovery_run(
    api: FakeJobsApi, access: Any, bundle: Any
) -> None:
    job_id = api.add_job(with_fingerprint(specs_from(EXPECTED_SETTINGS)).as_dict())
    run = api.start_run(job_id)
    res = actions.recover(access, bundle, JOB, token="r1", poll_s=0.01)
    # Order matters: the old run must have ended before a run with rebuilt offsets starts.
    assert api.writes() == [
        ("runs/cancel", {"run_id": run}),
        (
            "run-now",
            {"job_id": job_id, "idempotency_token": "r1", "python_params": [*PARAMS, "--recover"]},
        ),
    ]
    assert api.state.runs[run].state == "TERMINATED"
    assert res.action == "recover" and res.run_url and str(res.run_id) in res.run_url


def test_stop(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    job_id = api.add_job(with_fingerprint(specs_from(EXPECTED_SETTINGS)).as_dict())
    run = api.start_run(job_id)
    res = actions.stop(access, bundle, JOB, poll_s=0.01)
    # Continuous: paused first, or Databricks would start a new run after the cancel.
    assert api.writes() == [
        ("update", {"job_id": job_id, "new_settings": {"continuous": {"pause_status": "PAUSED"}}}),
        ("runs/cancel", {"run_id": run}),
    ]
    assert res.run_id == run and api.state.runs[run].state == "TERMINATED"


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=500),
        Fault(status=429),
        Fault(status=503, commit=True),
        Fault(status=200, sleep=1.5, commit=True),
    ],
    ids=["500", "429", "500-after-commit", "timeout-after-commit"],
)
def test_create_retried_never_duplicated(
    api: FakeJobsApi, access: Any, bundle: Any, fault: Fault
) -> None:
    api.fail("POST", "/api/2.2/jobs/create", fault)
    api.fail("GET", "/api/2.2/jobs/list", Fault(status=500))
    res = actions.deploy(access, bundle, JOB, start=False)
    assert list(api.state.jobs) == [res.job_id]  # exactly one job, whatever was lost
    creates = [c for c in api.calls() if c.path.endswith("/create")]
    assert len(creates) == (1 if fault.commit else 2)


def test_run_now_retry_starts_one_run(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    job_id = api.add_job(with_fingerprint(specs_from(EXPECTED_SETTINGS)).as_dict())
    api.fail("POST", "/api/2.2/jobs/run-now", Fault(status=502, commit=True), Fault(status=429))
    actions.backfill(access, bundle, JOB, token="once")
    assert len(api.state.runs) == 1
    assert len([c for c in api.calls() if c.path.endswith("run-now")]) == 3
    assert api.state.runs[next(iter(api.state.runs))].job_id == job_id


def test_create_gives_up_with_clear_error(api: FakeJobsApi, access: Any, bundle: Any) -> None:
    api.fail("POST", "/api/2.2/jobs/create", *[Fault(status=500)] * 4)
    with pytest.raises(DeployError, match=r"failed 4 times.*Nothing was created twice"):
        actions.deploy(access, bundle, JOB, start=False)
    assert api.state.jobs == {}


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"job": "claimz", "target": "prod", "action": "deploy"}, "job: 'claimz' is not a job"),
        ({"job": JOB, "target": "local", "action": "deploy"}, "not on Databricks; use one of dev, prod"),
        ({"job": JOB, "target": "prod", "action": "explode"}, "action: 'explode' is unknown"),
        ({"job": JOB, "target": "prod", "action": "restart", "dry_run": True}, "only 'deploy' has a dry run"),
    ],
)  # fmt: skip
def test_bad_params(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(DeployError, match=needle.replace("(", r"\(")):
        actions.check_request({"local": "local", "dev": "databricks", "prod": "databricks"},
                              ["claims_hourly", "telemetry_5min"], params)  # fmt: skip
