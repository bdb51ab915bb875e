"""The job cluster's driver-side storage: checkpoint files, the registry and Delta reads go through
the active Spark session's Hadoop FileSystem (a real SparkSession), never a Python-side login.

The prod bundle's `abfss://` checkpoint root is mapped to a local folder through the session's
own Hadoop conf (ViewFileSystemOverloadScheme, as the local Databricks runtime does), so the same
URIs a cluster uses are read and written here with no change to the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import pytest

from streamops.bundle import load
from streamops.bundle.storage import CLUSTER_SPARK
from streamops.checkpoint.reader import list_checkpoint, read_offsets, read_query_id
from streamops.checkpoint.registry import (
    REGISTRY_NAME,
    QueryNow,
    guard,
    load_registry,
    seed_checkpoint,
    sink_has_data,
)
from streamops.compaction import log
from streamops.pipeline.driver_delta import SparkDelta, open_delta
from tests.unit.helpers import SHIPPED

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JOB = "claims_hourly"
CONTAINER = "checkpoints@streamopsprod.dfs.core.windows.net"


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_STORAGE_OPTIONS", raising=False)


class _Mounts:
    """Maps abfss://<container>/... to local folders through the session's Hadoop conf only,
    and takes the settings back afterwards (the session is shared by the whole test run)."""

    def __init__(self, spark: SparkSession) -> None:
        self.conf = spark._jsc.hadoopConfiguration()
        self.keys: list[str] = []

    def _set(self, key: str, value: str) -> None:
        self.keys.append(key)
        self.conf.set(key, value)

    def __call__(self, container: str, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        self._set("fs.abfss.impl", "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme")
        self._set("fs.abfss.impl.disable.cache", "true")
        self._set(
            "fs.viewfs.overload.scheme.target.file.impl", "org.apache.hadoop.fs.LocalFileSystem"
        )
        # A whole container is the mount table's fallback: ViewFs allows no link on its root.
        self._set(f"fs.viewfs.mounttable.{container}.linkFallback", folder.as_uri())


@pytest.fixture
def mount(spark: SparkSession) -> Iterator[_Mounts]:
    mounts = _Mounts(spark)
    yield mounts
    for key in mounts.keys:
        mounts.conf.unset(key)


def test_the_guard_reads_and_writes_the_registry_through_the_cluster_session(
    mount: _Mounts, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoints"
    mount(CONTAINER, folder)
    mount("lake@streamopsprod.dfs.core.windows.net", tmp_path / "lake")
    prod = dataclasses.replace(load(SHIPPED, "prod"), on_cluster=True)
    assert prod.checkpoint_root.startswith(f"abfss://{CONTAINER}/")
    assert guard(prod, JOB, event="start", now=1000.0) == {}
    # The registry landed where Hadoop maps the cluster's URI: written by Spark, not adlfs.
    written = folder / "streamops" / REGISTRY_NAME
    records = json.loads(written.read_text(encoding="utf-8"))["jobs"][JOB]
    assert {r["event"] for r in records.values()} == {"start"}
    so = prod.runtime.storage(prod.checkpoint_root).adlfs()
    path = f"{prod.checkpoint_root}/{REGISTRY_NAME}"
    assert load_registry(path, so).job(JOB)["gold"].at == 1000.0


def test_checkpoint_files_round_trip_through_the_cluster_session(
    mount: _Mounts, tmp_path: Path
) -> None:
    folder = tmp_path / "ck"
    container = f"ck{uuid.uuid4().hex[:8]}@streamopsprod.dfs.core.windows.net"
    mount(container, folder)
    location = f"abfss://{container}/streamops/claims_hourly_bronze"
    so = CLUSTER_SPARK.adlfs()
    offsets = {"insurance.claims": {"0": 42, "1": 7}}
    seed_checkpoint(location, 5, offsets, so, at=1000.0)
    on_disk = folder / "streamops" / "claims_hourly_bronze"
    # Hadoop's local filesystem writes a hidden .crc beside each file, as Spark's own do.
    written = sorted(p.name for p in (on_disk / "offsets").iterdir())
    assert [n for n in written if not n.startswith(".")] == ["4", "5"]
    qid = read_query_id(location, so)
    assert qid is not None and json.loads((on_disk / "metadata").read_text())["id"] == qid
    listing = list_checkpoint(location, so)
    assert list(listing.commits) == [4, 5]
    assert list(read_offsets(location, 5, so).sources) == [offsets]
    assert read_query_id(f"abfss://{container}/streamops/none", so) is None
    # Backups and restores copy file by file, and move a replaced checkpoint aside.
    fs, _ = fsspec.core.url_to_fs(location, **so)
    fs.copy(f"{location}/offsets/5", f"{location}_copy/offsets/5")
    fs.mv(f"{location}_copy", f"{location}_moved", recursive=True)
    moved = folder / "streamops" / "claims_hourly_bronze_moved" / "offsets" / "5"
    assert moved.read_text() == (on_disk / "offsets" / "5").read_text()


def test_delta_reads_on_the_cluster_go_through_delta_spark(
    spark: SparkSession, tmp_path: Path
) -> None:
    table = str(tmp_path / "gold")
    meta = {"streamops": 1, "query": "claims_hourly", "batchId": 3, "endOffsets": [],
            "txnVersion": 3}  # fmt: skip
    rows = spark.range(6).selectExpr("id", "cast(id % 2 as string) as day")
    (
        rows.write.format("delta")
        .partitionBy("day")
        .option("txnAppId", "claims_hourly")
        .option("txnVersion", "3")
        .option("userMetadata", json.dumps(meta))
        .save(table)
    )
    so = CLUSTER_SPARK.adlfs()
    q = QueryNow("gold", "claims_hourly", str(tmp_path / "ck"), (table,))
    assert sink_has_data(q, so)
    assert not sink_has_data(dataclasses.replace(q, query_name="other"), so)
    assert open_delta(str(tmp_path / "none"), CLUSTER_SPARK) is None
    dt = open_delta(table, CLUSTER_SPARK)
    assert isinstance(dt, SparkDelta) and dt.transaction_version("claims_hourly") == 3
    # Compaction planning reads the same state through Spark as through delta-rs.
    by_spark, by_rs = log.read_state(table, CLUSTER_SPARK), log.read_state(table, None)
    assert by_spark is not None and by_rs is not None
    assert by_spark.version == by_rs.version == 0
    assert by_spark.partition_columns == by_rs.partition_columns == ("day",)
    assert sorted(by_spark.files, key=str) == sorted(by_rs.files, key=str)
