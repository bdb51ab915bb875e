"""The local Databricks runtime's storage and catalog: prod-shaped `abfss://` URIs and Unity
Catalog three-part names, landing in local folders through the runtime's own Spark conf.

The Spark run happens in a subprocess: the runtime's session (a catalog plugin, a parser
extension, a Hadoop scheme mapping) cannot join the test session's shared SparkSession.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamops.pipeline.session import jars_dir, local_jars
from tests.dbr_runtime.storage import (
    CATALOG_CLASS,
    DELTA_EXTENSION,
    NAMES_EXTENSION,
    jars,
    spark_conf,
)

ROOT = Path(__file__).resolve().parents[2]
LAKE = "abfss://lake@streamopstest.dfs.core.windows.net"
CHECKPOINTS = "abfss://checkpoints@streamopstest.dfs.core.windows.net"

# What a job and the nightly compaction do to tables by name, in two sessions (two cluster runs):
# the second finds the first one's tables through the catalog's registry, as in Unity Catalog.
DRIVER = """
import json, sys
from delta.tables import DeltaTable
from pyspark.sql import SparkSession

args = json.loads(sys.argv[1])
LAKE, CHECKPOINTS = args["lake"], args["checkpoints"]
out = {}


def session():
    builder = SparkSession.builder.master("local[1]").appName("dbr-storage")
    for key, value in args["conf"].items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


spark = session()
spark.sql(
    "CREATE TABLE main.claims.events (id BIGINT, kind STRING) USING delta "
    f"LOCATION '{LAKE}/tables/events'"
)
rows = spark.createDataFrame([(1, "a"), (2, "b")], "id long, kind string")
rows.write.format("delta").mode("append").saveAsTable("main.claims.events")
rows.write.format("delta").mode("append").saveAsTable("main.claims.events")
out["by_name"] = spark.table("main.claims.events").count()
out["by_path"] = spark.read.format("delta").load(f"{LAKE}/tables/events").count()
out["for_name"] = DeltaTable.forName(spark, "main.claims.events").toDF().count()
out["exists"] = spark.catalog.tableExists("main.claims.events")
out["missing"] = spark.catalog.tableExists("main.claims.nope")
# As streamops' sinks create a table: Delta's builder, by name, external at a location.
(
    DeltaTable.createIfNotExists(spark)
    .tableName("main.gold.copy")
    .location(f"{LAKE}/tables/copy")
    .addColumns(rows.schema)
    .execute()
)
query = (
    spark.readStream.table("main.claims.events")
    .writeStream.format("delta")
    .option("checkpointLocation", f"{CHECKPOINTS}/copy")
    .trigger(availableNow=True)
    .toTable("main.gold.copy")
)
query.awaitTermination()
out["copied"] = spark.table("main.gold.copy").count()
rows.write.format("delta").option("path", f"{LAKE}/tables/ctas").saveAsTable("main.gold.ctas")
spark.stop()

spark = session()
out["later_exists"] = spark.catalog.tableExists("main.claims.events")
out["later_ctas"] = spark.table("main.gold.ctas").count()
out["location"] = spark.sql("DESCRIBE DETAIL main.claims.events").first()["location"]
metrics = spark.sql("OPTIMIZE main.claims.events ZORDER BY (id)").first()["metrics"]
out["optimized_files"] = metrics["numFilesRemoved"]
history = DeltaTable.forName(spark, "main.claims.events").history(1).first()
out["last_operation"] = history["operation"]
spark.stop()
print("RESULT " + json.dumps(out))
"""


def test_conf_maps_each_container_to_its_folder_and_names_to_the_catalog(tmp_path: Path) -> None:
    conf = spark_conf(
        {LAKE: tmp_path / "lake", f"{CHECKPOINTS}/jobs": tmp_path / "ck"},
        catalogs=("main", "dev"),
        registry=tmp_path / "uc",
    )
    table = "spark.hadoop.fs.viewfs.mounttable"
    assert conf[f"{table}.lake@streamopstest.dfs.core.windows.net.linkFallback"] == (
        (tmp_path / "lake").as_uri()
    )
    assert conf[f"{table}.checkpoints@streamopstest.dfs.core.windows.net.link./jobs"] == (
        (tmp_path / "ck").as_uri()
    )
    assert conf["spark.sql.catalog.main"] == conf["spark.sql.catalog.dev"] == CATALOG_CLASS
    # The name parser wraps Delta's, so it comes after it.
    assert conf["spark.sql.extensions"].split(",") == [DELTA_EXTENSION, NAMES_EXTENSION]
    assert conf["spark.sql.catalog.dev.registry"] == str(tmp_path / "uc" / "dev")
    assert "spark.sql.catalog.main.registry" not in spark_conf({LAKE: tmp_path})


def test_a_mount_that_is_not_a_container_url_is_refused_with_the_form(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"abfss://<container>@<account>\.dfs\.core"):
        spark_conf({"abfss://streamopstest.dfs.core.windows.net": tmp_path})
    with pytest.raises(ValueError, match="not an ADLS Gen2 container URL"):
        spark_conf({"s3://bucket": tmp_path})


def _run_driver(tmp_path: Path, conf: dict[str, str]) -> dict[str, Any]:
    python = ROOT / ".cache" / "venv" / "bin" / "python"
    interpreter = str(python) if python.is_file() else sys.executable
    env = {**os.environ, "PYSPARK_PYTHON": interpreter, "PYSPARK_DRIVER_PYTHON": interpreter}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    args = {"conf": conf, "lake": LAKE, "checkpoints": CHECKPOINTS}
    done = subprocess.run(
        [interpreter, str(script), json.dumps(args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and results, done.stderr[-6000:]
    out: dict[str, Any] = json.loads(results[-1].removeprefix("RESULT "))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)  # two Spark sessions and a javac, on a shared 2-core machine
def test_tables_by_unity_catalog_name_at_abfss_locations_land_in_local_folders(
    tmp_path: Path,
) -> None:
    lake, checkpoints, registry = tmp_path / "lake", tmp_path / "ck", tmp_path / "uc"
    conf = spark_conf({LAKE: lake, CHECKPOINTS: checkpoints}, registry=registry)
    pinned = local_jars(jars_dir(ROOT / ".cache" / "jvm"))
    conf |= {
        "spark.jars": ",".join(str(j) for j in [*pinned, *jars(ROOT / ".cache" / "dbr")]),
        # What a Databricks runtime has anyway; small and quiet for a shared 2-core machine.
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.warehouse.dir": str(tmp_path / "warehouse"),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "1",
        "spark.databricks.delta.snapshotPartitions": "1",
    }

    out = _run_driver(tmp_path, conf)

    assert out["by_name"] == out["by_path"] == out["for_name"] == 4
    assert out["exists"] is True and out["missing"] is False
    assert out["copied"] == 4
    # A later session (the nightly compaction's run) finds the tables by name.
    assert out["later_exists"] is True and out["later_ctas"] == 2
    assert out["location"] == f"{LAKE}/tables/events"  # the table keeps its prod-shaped URI
    assert out["optimized_files"] >= 2 and out["last_operation"] == "OPTIMIZE"
    # The files are in the containers' local folders, nowhere else.
    for table in ("events", "copy", "ctas"):
        assert (lake / "tables" / table / "_delta_log" / "00000000000000000000.json").is_file()
        assert list((lake / "tables" / table).glob("*.parquet")), table
    assert (checkpoints / "copy" / "metadata").is_file()
    assert (checkpoints / "copy" / "offsets" / "0").is_file()
    assert (checkpoints / "copy" / "commits" / "0").is_file()
    assert not list((tmp_path / "warehouse").rglob("*.parquet"))
    entry = registry / "main" / "claims" / "events"
    assert entry.read_text().strip() == f"{LAKE}/tables/events"
