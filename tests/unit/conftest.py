"""Fixtures shared by the deploy tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_databricks import FakeJobsApi


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJobsApi]:
    """The local Jobs/Workspace API server, as the Airflow connection `databricks_prod`."""
    with FakeJobsApi() as server:
        monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_PROD", server.connection_uri())
        yield server
