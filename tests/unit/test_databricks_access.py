"""The one way into Databricks (streamops.databricks_access), against the local workspace server:
one hook and one sdk client per bundle, one retry policy (Retry-After honoured) for both, a PAT
and a service principal login, bundle.yml's own host/token with nothing put in the environment,
and no secret in a repr or a log line."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import pytest

from tests.airflow_env import configure

configure()

from streamops.bundle import Bundle, load  # noqa: E402
from streamops.bundle.secrets import parse_secret  # noqa: E402
from streamops.clock import FakeClock  # noqa: E402
from streamops.databricks_access import DatabricksAccess, RetryPolicy, access_for  # noqa: E402
from streamops.errors import WorkspaceAccessError  # noqa: E402
from tests.fake_databricks import FakeJobsApi, Fault  # noqa: E402
from tests.fake_workspace import SERVICE_PRINCIPALS  # noqa: E402
from tests.unit.helpers import SHIPPED  # noqa: E402

LIST = ("GET", "/api/2.2/jobs/list")
STATUS = ("GET", "/api/2.0/workspace/get-status")
TOKEN_VAR = "STREAMOPS_TEST_DATABRICKS_TOKEN"


def _access(clock: FakeClock, attempts: int = 3, conn_id: str = "databricks_prod") -> Any:
    return DatabricksAccess(
        conn_id=conn_id, timeout_s=2, policy=RetryPolicy(attempts=attempts, clock=clock)
    )


def _bundle(**databricks: Any) -> Bundle:
    """The shipped prod bundle with `targets.prod.databricks` fields replaced."""
    b = load(SHIPPED, "prod")
    assert b.target.databricks is not None
    db = b.target.databricks.model_copy(update=databricks)
    t = b.target.model_copy(update={"databricks": db})
    spec = b.spec.model_copy(update={"targets": {**b.spec.targets, "prod": t}})
    return dataclasses.replace(b, spec=spec)


def _status(access: Any, path: str = "/Workspace/Shared") -> str:
    ws = access.workspace()
    return str(access.retrying(lambda: ws.workspace.get_status(path)).object_type.value)


def test_one_hook_and_one_sdk_client_per_bundle(api: FakeJobsApi) -> None:
    bundle = load(SHIPPED, "prod")
    access = access_for(bundle)
    assert access_for(bundle) is access and access.conn_id == "databricks_prod"
    hook = access.hook()
    assert api.calls() == []  # built lazily: no call until one is asked for
    assert access.hook() is hook and access.workspace() is access.workspace()
    assert hook.list_jobs() == [] and _status(access) == "DIRECTORY"
    assert access_for(load(SHIPPED, "prod")) is not access  # another bundle, its own clients


def test_both_clients_wait_as_long_as_retry_after(api: FakeJobsApi) -> None:
    clock = FakeClock()
    access = _access(clock)
    throttled = Fault(status=429, error_code="REQUEST_LIMIT_EXCEEDED", retry_after=7)
    api.fail(*LIST, throttled, Fault(status=503, retry_after=3))
    assert access.hook().list_jobs() == []
    assert clock.slept == [7.0, 3.0]
    api.fail(*STATUS, Fault(status=429, error_code="REQUEST_LIMIT_EXCEEDED", retry_after=5))
    assert _status(access) == "DIRECTORY"
    assert clock.slept == [7.0, 3.0, 5.0]  # the sdk itself waited nothing
    assert [c.path for c in api.calls()].count(STATUS[1]) == 2  # one refused, one answered


def test_backoff_without_retry_after_and_a_cap_on_it(api: FakeJobsApi) -> None:
    clock = FakeClock()
    access = _access(clock, attempts=4)
    api.fail(*LIST, Fault(status=500), Fault(status=502), Fault(status=429, retry_after=3600))
    assert access.hook().list_jobs() == []
    assert clock.slept == [1.0, 2.0, 120.0]  # backoff, backoff, Retry-After capped


def test_gives_up_after_the_policy_attempts_and_not_on_a_refusal(api: FakeJobsApi) -> None:
    clock = FakeClock()
    access = _access(clock)
    api.fail(*LIST, *[Fault(status=500)] * 3)
    with pytest.raises(Exception, match="500"):
        access.hook().list_jobs()
    assert [c.path for c in api.calls()].count(LIST[1]) == 3 and clock.slept == [1.0, 2.0]
    api.fail(*STATUS, Fault(status=403, error_code="PERMISSION_DENIED"))
    with pytest.raises(Exception, match="scripted fault"):
        _status(access)
    assert [c.path for c in api.calls()].count(STATUS[1]) == 1  # a refusal is not retried


@pytest.mark.parametrize("login", ["pat", "oauth-m2m"])
def test_a_pat_and_a_service_principal_each_reach_the_workspace(
    api: FakeJobsApi, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    uri = api.connection_uri() if login == "pat" else api.service_principal_uri()
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_SP", uri)
    access = _access(FakeClock(), conn_id="databricks_sp")
    assert access.login.kind == login and access.url == api.url
    assert _status(access) == "DIRECTORY"
    expected = [] if login == "pat" else list(SERVICE_PRINCIPALS)
    assert api.token_requests == expected


def test_bundle_host_and_token_with_nothing_in_the_environment(
    api: FakeJobsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Airflow connection: bundle.yml's host and token, held in memory only."""
    monkeypatch.setenv(TOKEN_VAR, "dapi-test-token")
    bundle = _bundle(
        host=api.url, token=parse_secret(f"{{{{env/{TOKEN_VAR}}}}}"), airflow_conn_id="nowhere"
    )
    before = dict(os.environ)
    access = DatabricksAccess.of(bundle, policy=RetryPolicy(clock=FakeClock()))
    assert access.hook().list_jobs() == [] and _status(access) == "DIRECTORY"
    assert access.login.source == f"targets.prod.databricks in {SHIPPED.name}"
    assert dict(os.environ) == before  # no AIRFLOW_CONN_*, no token written anywhere


def test_no_secret_in_a_repr_or_a_log_line(
    api: FakeJobsApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(TOKEN_VAR, "dapi-test-token")
    bundle = _bundle(
        host=api.url, token=parse_secret(f"{{{{env/{TOKEN_VAR}}}}}"), airflow_conn_id="nowhere"
    )
    access = DatabricksAccess.of(bundle, policy=RetryPolicy(clock=FakeClock()))
    api.fail(*LIST, Fault(status=503, retry_after=1))
    with caplog.at_level(logging.DEBUG):
        access.hook().list_jobs()
        _status(access)
    shown = [repr(access), repr(access.login), str(access.login), repr(access.workspace().config)]
    assert caplog.records and all("dapi-test-token" not in s for s in [*shown, caplog.text])
    assert TOKEN_VAR in repr(access)  # the reference is shown, never its value


def test_no_way_in_names_both_ways_and_the_fix() -> None:
    access = DatabricksAccess.of(_bundle(host=None, token=None, airflow_conn_id="nowhere"))
    access.hook()  # built lazily: the login is looked for on first use
    with pytest.raises(WorkspaceAccessError) as exc:
        _ = access.url
    message = str(exc.value)
    assert "Airflow connection 'nowhere' is not defined" in message
    assert "bundle.yml sets no targets.prod.databricks.host and token" in message
    assert "Fix: define the connection" in message
