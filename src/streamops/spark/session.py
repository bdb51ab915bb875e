"""One SparkSession per process, configured for the bundle's target."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle


def local_session(
    *, cores: int = 2, app_name: str = "streamops", shuffle_partitions: int | None = None
) -> SparkSession:
    """A local[cores] session with RocksDB state and the streamops Kafka source registered."""
    # Python workers must run the same interpreter (and so see the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Small shuffles: a local batch has thousands of rows, not millions.
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions or max(2, cores * 2)))
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.streaming.numRecentProgressUpdates", "1000")
        .config("spark.python.worker.reuse", "true")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _quiet_query_failures(spark)
    register_sources(spark)
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
    ):
        configurator.setLevel(logger, level)


def register_sources(spark: SparkSession) -> None:
    """Make format('streamops_kafka') available in this session."""
    from streamops.spark.kafka_source import KafkaDataSource

    spark.dataSource.register(KafkaDataSource)


def session_for(bundle: Bundle, *, app_name: str) -> SparkSession:
    """The session for the bundle's target: local[N] locally, the cluster's on Databricks."""
    if bundle.target.mode == "local":
        return local_session(cores=bundle.target.cluster.total_cores, app_name=app_name)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(app_name).getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    if bundle.target.resolved_engines.source == "python-kafka":
        register_sources(spark)
    return spark
