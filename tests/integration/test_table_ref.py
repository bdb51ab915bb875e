"""Tables addressed by name, as on Databricks, through the same sink and stream code that runs
locally by path: real Spark and Delta, the session catalog standing in for Unity Catalog (a
two-part name; the code never branches on the target, only on the resolved TableRef)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from streamops.bundle import load
from streamops.bundle.tables import TableRef
from streamops.pipeline.delta_tables import delta_table, table_exists
from streamops.pipeline.sinks import GoldWriter, SinkSpec, ensure_table
from tests.unit.helpers import SHIPPED

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_a_named_external_table_is_created_written_once_and_streamed(
    spark: SparkSession, tmp_path: Path
) -> None:
    ref = TableRef(str(tmp_path / "gold"), f"default.ref_{uuid.uuid4().hex[:8]}")
    df = spark.createDataFrame([("a", 1), ("b", 2)], "k string, n long")
    ensure_table(spark, ref, df.schema)
    assert table_exists(spark, ref)
    assert (tmp_path / "gold" / "_delta_log").is_dir()  # external: files at the location
    writer = GoldWriter(SinkSpec(ref, "ref_query", mode="merge", merge_keys=("k",)), lambda _b: [])
    writer(df, 0)
    writer._last = None  # a restarted query: batch 0 again, Delta skips it
    writer(df, 0)
    assert sorted(r["k"] for r in delta_table(spark, ref).toDF().collect()) == ["a", "b"]
    assert spark.sql(f"SELECT count(*) AS c FROM {ref.sql}").first()["c"] == 2  # type: ignore[index]
    # The same table by path (what delta-rs readers and compaction planning use).
    assert spark.read.format("delta").load(ref.location).count() == 2
    stream = ref.read_stream(spark.readStream.format("delta"))
    q = stream.writeStream.format("memory").queryName(f"q_{uuid.uuid4().hex[:6]}")
    q = q.trigger(availableNow=True).start()
    q.awaitTermination()
    assert q.lastProgress["numInputRows"] == 2


def test_refs_resolve_by_name_on_databricks_and_by_path_locally() -> None:
    prod = load(SHIPPED, "prod")
    job = prod.job("claims_hourly")
    lake = "abfss://lake@streamopsprod.dfs.core.windows.net/streamops/tables"
    assert prod.table_ref("claims_hourly") == TableRef(
        f"{lake}/claims_hourly", "main.claims.claims_hourly"
    )
    assert prod.table_ref("claims_hourly").sql == "`main`.`claims`.`claims_hourly`"
    assert prod.bronze_ref(job) == TableRef(
        f"{lake}/claims_hourly_bronze", "main.claims.claims_hourly_bronze"
    )
    assert prod.quarantine_ref(job).name == "main.claims.claims_hourly_quarantine"
    local = load(SHIPPED, "local")
    ref = local.table_ref("claims_hourly")
    assert ref.name is None and ref.location == local.table_location("claims_hourly")
    assert ref.sql == f"delta.`{ref.location}`"
    assert dataclasses.asdict(local.bronze_ref(job))["name"] is None
