"""One storage login per location, one rendering per library: a real Delta table read through
delta-rs (`.deltalake()`) and listed through fsspec/adlfs (`.adlfs()`) for every kind of target
location: a local folder (local target), Azurite with an account key given the way a deploy
gives it ($STREAMOPS_STORAGE_OPTIONS, on a Databricks target), and a service principal, which
cannot log in here: its renderings are checked for what each library needs (every delta-rs value
a string, nothing missing). On the job cluster the readers go through the cluster's Spark session
(tests/integration/test_cluster_fs.py)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest
from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable, write_deltalake

from streamops.bundle import StorageLogin, load
from streamops.localstack import AzuriteEndpoint
from tests.stack_fixtures import PROJECT

SHIPPED = PROJECT / "bundle.yml"
ROWS = pa.table({"id": [1, 2, 3], "region": ["eu", "us", "eu"]})


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_STORAGE_OPTIONS", raising=False)


def _write_table(url: str, storage_options: dict[str, str] | None = None) -> None:
    """Two commits, so both readers see a log of more than one version."""
    write_deltalake(url, ROWS, storage_options=storage_options)
    write_deltalake(url, ROWS.slice(0, 1), mode="append", storage_options=storage_options)


def _read_through_both_libraries(url: str, login: StorageLogin) -> None:
    table = DeltaTable(url, storage_options=login.deltalake())
    assert table.version() == 1
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [1, 1, 2, 3]
    fs, root = fsspec.core.url_to_fs(url, **login.adlfs())
    names = {Path(p).name for p in fs.find(root)}
    assert {"00000000000000000000.json", "00000000000000000001.json"} <= names
    assert sum(n.endswith(".parquet") for n in names) == 2


def test_a_local_folder_through_delta_rs_and_fsspec(tmp_path: Path) -> None:
    bundle = load(SHIPPED, "local")
    url = str(tmp_path / "events")
    _write_table(url)
    login = bundle.runtime.storage(url)
    assert login.kind == "local" and login.deltalake() == {} and login.adlfs() == {}
    _read_through_both_libraries(url, login)


@pytest.mark.parametrize("form", ["endpoint", "connection_string"])
def test_azurite_with_an_account_key_from_the_environment_through_both_libraries(
    azurite: AzuriteEndpoint, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    # The deploy's form of a storage login: $STREAMOPS_STORAGE_OPTIONS, in either library's
    # terms (delta-rs's endpoint, adlfs's connection string); each rendering follows.
    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    url = f"abfss://{container}@{azurite.account_name}.dfs.core.windows.net/tables/events"
    _write_table(f"az://{container}/tables/events", azurite.deltalake_storage_options())
    given = {"account_name": azurite.account_name, "account_key": azurite.account_key}
    if form == "endpoint":
        given["endpoint"] = azurite.blob_url
    else:
        given["connection_string"] = azurite.connection_string
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", json.dumps(given))
    login = load(SHIPPED, "prod").runtime.storage(url)
    assert login.kind == "account_key"
    assert all(isinstance(v, str) for v in login.deltalake().values())
    _read_through_both_libraries(url, login)


def test_the_job_clusters_logins_render_complete_string_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import adlfs

    # A service principal given to a reader off the cluster: every option a complete string.
    sp_options = {
        "account_name": "streamopsdev",
        "tenant_id": "0f1e2d3c-4b5a-4968-8776-655443322110",
        "client_id": "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        "client_secret": "sp-secret",
    }
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", json.dumps(sp_options))
    dev = load(SHIPPED, "dev")
    sp = dev.runtime.storage(f"{dev.checkpoint_root}/claims_hourly")
    assert sp.kind == "service_principal"
    for rendered in (sp.deltalake(), sp.adlfs()):
        assert rendered == sp_options
    # adlfs takes the options as they are (building the filesystem does no I/O; logging in
    # would need Entra ID, which is not reachable from here).
    fs = adlfs.AzureBlobFileSystem(**sp.adlfs(), skip_instance_cache=True)
    assert fs.account_name == "streamopsdev"
    # On the job cluster (issue 19) both logins go through the cluster's Spark session: no
    # Python-side login, so no option of either library to get wrong (a bool, a missing key).
    monkeypatch.delenv("STREAMOPS_STORAGE_OPTIONS")
    for target in ("dev", "prod"):
        bundle = dataclasses.replace(load(SHIPPED, target), on_cluster=True)
        login = bundle.runtime.storage(bundle.checkpoint_root)
        assert login.kind == "cluster_spark"
        assert login.adlfs() == {"protocol": "streamops-spark"}
