"""One SparkSession per process, configured for the bundle's target.

Locally the session loads the pinned Kafka connector and Delta jars from `.cache/jvm/spark`
(installed by `make setup`; nothing is fetched when a job starts). Databricks runtimes ship both,
so there the cluster's own session is used as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streamops.errors import LocalStackError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
# The jars `make setup` resolves from src/streamops/localstack/jvm/spark/pom.xml.
REQUIRED_JARS = ("spark-sql-kafka-0-10_", "delta-spark_", "kafka-clients-")


def jars_dir(jvm_dir: Path) -> Path:
    """Where `make setup` puts the pinned Spark jars, inside the bundle's JVM folder."""
    return jvm_dir / "spark"


def local_jars(directory: Path) -> list[Path]:
    """The pinned jars, or a LocalStackError that says how to install them."""
    jars = sorted(directory.glob("*.jar")) if directory.is_dir() else []
    missing = [p for p in REQUIRED_JARS if not any(j.name.startswith(p) for j in jars)]
    if missing:
        raise LocalStackError(
            f"the Spark Kafka connector and Delta jars are not in {directory} (missing: "
            f"{', '.join(m.rstrip('_-') for m in missing)}). Fix: run `make setup`"
        )
    return jars


def default_shuffle(cores: int) -> int:
    """Shuffle partitions for `cores`: two tasks per core. A stateful query keeps the count its
    checkpoint was started with, and each partition is one state store per batch, so Spark's
    default of 200 (a Databricks cluster's too) makes a small cluster's batches crawl."""
    return max(2, cores * 2)


def local_session(
    *,
    jars: Path,
    cores: int = 2,
    app_name: str = "streamops",
    shuffle_partitions: int | None = None,
    driver_memory: str = "1g",
) -> SparkSession:
    """A local[cores] session with Kafka, Delta Lake and the RocksDB state store."""
    # Python workers must run the same interpreter (and so see the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.jars", ",".join(str(j) for j in local_jars(jars)))
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Small shuffles: a local batch has thousands of rows, not millions.
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions or default_shuffle(cores)))
        .config("spark.sql.streaming.stateStore.providerClass", ROCKSDB)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.streaming.numRecentProgressUpdates", "1000")
        # Local tables are small; Delta's per-commit checksum and stats collection stay on.
        .config("spark.databricks.delta.snapshotPartitions", "2")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _quiet_query_failures(spark)
    return spark


def _quiet_query_failures(spark: SparkSession) -> None:
    # A failed query is reported by streamops with the place and the fix; Spark's own ERROR log
    # of the same failure is a JVM stack trace that buries that message.
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    level = jvm.org.apache.logging.log4j.Level.OFF
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    for logger in (
        "org.apache.spark.sql.execution.streaming.runtime.MicroBatchExecution",
        "org.apache.spark.sql.execution.streaming.MicroBatchExecution",
        "org.apache.spark.sql.execution.streaming.runtime.StreamExecution",
    ):
        configurator.setLevel(logger, level)


def session_for(bundle: Bundle, *, app_name: str) -> SparkSession:
    """The session for the bundle's target: local[N] locally, the cluster's on Databricks."""
    if bundle.target.mode == "local":
        return local_session(
            jars=jars_dir(bundle.jvm_dir),
            cores=bundle.target.cluster.total_cores,
            app_name=app_name,
        )
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(app_name).getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # Sized from the bundle's cluster, as locally (a new query's state keeps this count).
    spark.conf.set(
        "spark.sql.shuffle.partitions", str(default_shuffle(bundle.target.cluster.total_cores))
    )
    return spark
