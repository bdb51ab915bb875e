"""The checkpoint-integrity check from an Airflow worker with no storage login for the checkpoints:
the job cluster runs it (`jobs/check.py`, submitted like the nightly compaction's run) and Airflow
reads its one result line. The "cluster" here is the fake Jobs API's `on_submit`, calling the
real cluster entrypoint on a local copy of the bundle (empty local checkpoints: no Spark)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import configure

configure()

from streamops.bundle import load  # noqa: E402
from streamops.checkpoint.cluster_check import cluster_check_main  # noqa: E402
from streamops.checkpoint.integrity import IntegrityResult, check_and_page  # noqa: E402
from streamops.checkpoint.on_cluster import ERROR_LINE, RESULT_LINE, check_on_cluster  # noqa: E402
from streamops.clock import RealClock  # noqa: E402
from streamops.errors import CheckpointError  # noqa: E402
from tests.fake_databricks import FakeJobsApi  # noqa: E402
from tests.unit.helpers import SHIPPED, shipped_text, write  # noqa: E402

JOB = "claims_hourly"


class _BriefPolls(RealClock):
    """The run finishes in the fake's thread: poll it every 0.05 s rather than every 15 s."""

    def sleep(self, seconds: float) -> None:
        super().sleep(min(seconds, 0.05))


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # No storage login on this "Airflow worker": the prod checkpoints are out of its reach.
    monkeypatch.delenv("STREAMOPS_STORAGE_OPTIONS", raising=False)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)


def _params(body: dict[str, Any]) -> dict[str, str]:
    params = body["tasks"][0]["spark_python_task"]["parameters"]
    return dict(zip(params[::2], params[1::2], strict=True))


def test_a_worker_without_a_storage_login_gets_the_result_from_a_cluster_run(
    tmp_path: Path, api: FakeJobsApi
) -> None:
    local = load(write(tmp_path, shipped_text()), "local")
    seen: list[dict[str, str]] = []

    def on_cluster(body: dict[str, Any]) -> tuple[int, str]:
        args = _params(body)
        seen.append(args)
        lines: list[str] = []
        code = cluster_check_main(str(local.path), "local", args["--job"], out=lines.append)
        return code, "\n".join(lines)

    api.on_submit = on_cluster
    prod = load(SHIPPED, "prod")
    got = check_and_page(prod, JOB, clock=_BriefPolls())
    # The cluster's result, parsed: both queries, not there yet (the job never ran there).
    assert got["job"] == JOB and got["healthy"] is True
    assert [q["status"] for q in got["queries"]] == ["missing", "missing"]
    assert {q["kind"] for q in got["queries"]} == {"bronze", "gold"}
    (submitted,) = api.submitted.values()
    body = submitted.body
    task = body["tasks"][0]
    # The run starts the uploaded code (content-addressed, uploaded before the submit), as the
    # target's service principal (the single-user cluster's), with the job and target asked for.
    sent = {path.rsplit("/", 1)[-1]: path for path in api.workspace.files}
    assert {"check.py", "bundle.yml"} <= set(sent)
    assert task["spark_python_task"]["python_file"] == sent["check.py"]
    assert seen == [{"--bundle": sent["bundle.yml"], "--target": "prod", "--job": JOB}]
    (wheel,) = [path for name, path in sent.items() if name.startswith("streamops-")]
    assert {"whl": wheel} in task["libraries"]
    assert task["new_cluster"]["data_security_mode"] == "SINGLE_USER"
    assert body["run_as"]["service_principal_name"] == (task["new_cluster"]["single_user_name"])


def test_problems_found_on_the_cluster_come_back_as_problems(api: FakeJobsApi) -> None:
    found = {
        "job": JOB,
        "target": "prod",
        "healthy": False,
        "broker": "ran against broker:9093",
        "dedup_key": f"streamops/prod/checkpoint/{JOB}",
        "queries": [
            {
                "kind": "bronze",
                "query_name": "claims_bronze",
                "location": "abfss://c@a/x",
                "status": "problems",
                "report": {"batches": 3},
                "problems": ["offsets/2 has no commits/2"],
                "backup": None,
                "backup_files": None,
            },
        ],
    }
    api.on_submit = lambda body: (0, "checked\n" + RESULT_LINE + json.dumps(found))
    found_here = check_on_cluster(load(SHIPPED, "prod"), JOB, clock=_BriefPolls())
    result = IntegrityResult.from_dict(found_here)
    assert not result.healthy
    assert result.problems == ["claims_bronze: offsets/2 has no commits/2"]
    assert result.as_dict() == found


def test_a_failed_cluster_run_is_an_error_naming_the_run(api: FakeJobsApi) -> None:
    prod = load(SHIPPED, "prod")
    api.on_submit = lambda body: (
        1,
        ERROR_LINE + json.dumps({"kind": "BundleError", "message": "bundle.yml: no job 'x'"}),
    )
    with pytest.raises(CheckpointError, match=r"bundle.yml: no job 'x' \(Databricks run \d+: "):
        check_on_cluster(prod, JOB, clock=_BriefPolls())
    api.on_submit = lambda body: (1, "Traceback: ImportError")
    with pytest.raises(CheckpointError, match=r"ended FAILED without a result.*Fix: read the run"):
        check_on_cluster(prod, JOB, clock=_BriefPolls())


def test_the_cluster_side_prints_one_result_line_and_a_failure_as_an_error_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, shipped_text())
    lines: list[str] = []
    assert cluster_check_main(str(path), "local", JOB, out=lines.append) == 0
    (line,) = [ln for ln in lines if ln.startswith(RESULT_LINE)]
    assert json.loads(line.removeprefix(RESULT_LINE))["job"] == JOB
    lines.clear()
    assert cluster_check_main(str(path), "local", "no_such_job", out=lines.append) == 1
    (line,) = [ln for ln in lines if ln.startswith(ERROR_LINE)]
    assert "no_such_job" in json.loads(line.removeprefix(ERROR_LINE))["message"]
