"""Driver-side storage on the job cluster and off it: one login model, every delta-rs option a str,
and a missing or refused login as one line naming the location and the fix (issue 19)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fsspec
import pytest

from streamops.bundle import load
from streamops.bundle.storage import CLUSTER_SPARK, SPARK_PROTOCOL, login_from_fsspec
from streamops.checkpoint.registry import storage_options_for
from streamops.errors import StorageAccessError
from streamops.pipeline.cluster_fs import SparkHadoopFileSystem
from streamops.pipeline.driver_delta import open_delta
from tests.unit.helpers import SHIPPED

ABFSS = "abfss://checkpoints@streamopsprod.dfs.core.windows.net/streamops"


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_STORAGE_OPTIONS", raising=False)


def test_a_unity_catalog_cluster_reader_goes_through_spark_not_a_bool_option() -> None:
    # Before: {"account_name": ..., "anon": False} went to delta-rs, which raised TypeError.
    prod = dataclasses.replace(load(SHIPPED, "prod"), on_cluster=True)
    so = storage_options_for(prod.checkpoint_root, prod)
    assert so == {"protocol": SPARK_PROTOCOL}
    assert login_from_fsspec(so) == CLUSTER_SPARK
    fs, path = fsspec.core.url_to_fs(f"{ABFSS}/claims_hourly", **so)
    assert isinstance(fs, SparkHadoopFileSystem)
    assert path == f"{ABFSS}/claims_hourly"  # Hadoop resolves the whole URI
    with pytest.raises(StorageAccessError, match="delta-spark"):
        prod.runtime.storage(ABFSS).deltalake()


def test_every_delta_rs_option_is_a_string_whatever_the_fsspec_options_held() -> None:
    for so in (
        {"account_name": "acct", "anon": False},
        {"account_name": "acct", "anon": True},
        {"account_name": "acct", "account_key": "k", "max_retries": 3},
    ):
        login = login_from_fsspec(so)
        assert login is not None
        rendered = login.deltalake()
        assert rendered and all(isinstance(v, str) for v in rendered.values()), rendered
    assert login_from_fsspec({}) is None


def test_with_no_spark_session_the_cluster_reader_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyspark.sql import SparkSession

    # The suite's shared session may be up (tests run in one process): hide it, as on a driver
    # whose code runs before any session exists.
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.setattr(SparkSession, "_instantiatedSession", None)
    fs, _ = fsspec.core.url_to_fs(ABFSS, **CLUSTER_SPARK.adlfs())
    with pytest.raises(StorageAccessError) as info:
        fs.exists(f"{ABFSS}/claims_hourly/metadata")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot read {ABFSS}/claims_hourly/metadata: ")
    assert "Fix: start the session first" in msg


def test_a_delta_table_without_a_known_login_is_one_line_naming_the_fix() -> None:
    prod = load(SHIPPED, "prod")  # off the cluster: Airflow or a laptop
    table = "abfss://lake@streamopsprod.dfs.core.windows.net/streamops/tables/claims"
    with pytest.raises(StorageAccessError) as info:
        open_delta(table, prod.runtime.storage(table))
    msg = str(info.value)
    assert "\n" not in msg and table in msg and "$STREAMOPS_STORAGE_OPTIONS" in msg


def test_a_delta_rs_refusal_is_a_typed_error_not_a_traceback(tmp_path: Path) -> None:
    # A login delta-rs refuses while configuring itself (here: a value it cannot parse) surfaces
    # as StorageAccessError naming the table, not as the library's own exception.
    table = "az://lake/streamops/tables/claims"
    login = login_from_fsspec({"account_name": "acct", "azure_storage_use_emulator": "maybe"})
    with pytest.raises(StorageAccessError) as info:
        open_delta(table, login)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot read the Delta table {table} (")
    assert "Fix: check its login" in msg


def test_a_local_folder_is_read_by_delta_rs_and_a_missing_table_is_none(tmp_path: Path) -> None:
    assert open_delta(str(tmp_path / "none"), None) is None
    assert json.loads(json.dumps(CLUSTER_SPARK.adlfs())) == {"protocol": SPARK_PROTOCOL}
