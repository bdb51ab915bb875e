"""The bronze query: the only query that reads a job's Kafka source.

Every record is parsed once and given the reason it cannot be used (`quality`), or none; the
writer lands good events in the bronze table and the rest, raw bytes and reason, in the
quarantine table, each batch exactly once (`sinks.BronzeWriter`). `start` returns the started
query; its sink (e.g. a no-op for a rehearsal), checkpoint and trigger (a benchmark's) come from
the caller, and default to the bundle's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamops.bundle.models import Job
from streamops.pipeline.kafka_source import data_loss_error, read_kafka, source_options
from streamops.pipeline.quality import QUALITY, with_reason
from streamops.pipeline.sinks import BatchWrite, BronzeWriter, EndOffsets, SinkSpec, ensure_table
from streamops.pipeline.triggers import Trigger, job_trigger

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.types import StructField, StructType

    from streamops.bundle import Bundle

# A foreachBatch function: the writer, or whatever else a caller has the query write to.
Sink = Callable[["DataFrame", int], None]


def event_schema(fields: dict[str, Any]) -> StructType:
    """The Spark schema of the events, from the bundle's `schema:` mapping."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    return StructType(
        [StructField(n, _parse_datatype_string(f.type), True) for n, f in fields.items()]
    )


def _kafka_coordinates() -> list[StructField]:
    """Where a record came from, as both tables keep it."""
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, TimestampType

    return [
        StructField("kafka_topic", StringType(), True),
        StructField("kafka_partition", IntegerType(), True),
        StructField("kafka_offset", LongType(), True),
        StructField("kafka_timestamp", TimestampType(), True),
    ]


def bronze_schema(job: Job) -> StructType:
    """Columns of the bronze table: the event's fields, then its Kafka coordinates."""
    from pyspark.sql.types import StructType

    return StructType([*event_schema(job.schema_).fields, *_kafka_coordinates()])


def quarantine_schema() -> StructType:
    """Columns of the quarantine table: raw bytes, coordinates, reason, query and batch."""
    from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType

    return StructType(
        [
            StructField("key", BinaryType(), True),
            StructField("value", BinaryType(), True),
            *_kafka_coordinates(),
            StructField("reason", StringType(), True),
            StructField("query_name", StringType(), True),
            StructField("batch_id", LongType(), True),
        ]
    )


def kafka_options(
    bundle: Bundle, job: Job, *, starting_offsets: str | None = None
) -> dict[str, str]:
    """Options of Spark's Kafka source for the job's bronze query; secrets resolved, never log."""
    return source_options(
        bundle,
        job.source,
        reader=job.bronze_query_name,
        starting_offsets=starting_offsets,
        max_offsets=job.max_offsets_per_trigger,
    )


def parse(raw: DataFrame, job: Job) -> DataFrame:
    """Every Kafka row with its parsed event, Kafka coordinates and quarantine reason (or null)."""
    from pyspark.sql import functions as F

    flagged = with_reason(raw, job, event_schema(job.schema_))
    observed = flagged.observe(
        QUALITY,
        F.count(F.lit(1)).alias("input_rows"),
        F.sum(F.col("reason").isNotNull().cast("long")).alias("malformed_rows"),
    )
    return observed.select(
        *[F.col(f"e.{n}").alias(n) for n in job.schema_],
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        "key",
        "value",
        "reason",
    )


def ensure_tables(spark: SparkSession, bundle: Bundle, job: Job) -> None:
    """Create the job's bronze and quarantine tables when missing: the writer appends to them and
    the gold query streams from bronze from its first batch."""
    ensure_table(spark, bundle.bronze_ref(job), bronze_schema(job))
    ensure_table(spark, bundle.quarantine_ref(job), quarantine_schema())


def writer(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    *,
    end_offsets: EndOffsets,
    on_write: Callable[[BatchWrite], None] | None = None,
    after_commit: Callable[[int], None] | None = None,
) -> BronzeWriter:
    """The bronze query's foreachBatch writer, its two tables created when missing.

    `end_offsets` reads a batch's end offsets from the query's checkpoint (recorded in each Delta
    commit, the basis of offset reconstruction).
    """
    ensure_tables(spark, bundle, job)
    return BronzeWriter(
        SinkSpec(bundle.bronze_ref(job), job.bronze_query_name),
        SinkSpec(bundle.quarantine_ref(job), job.bronze_query_name),
        tuple(job.schema_),
        end_offsets,
        on_write=on_write,
        after_commit=after_commit,
        explain_loss=lambda loss: data_loss_error(bundle, job.source, loss),
    )


def start(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    sink: Sink,
    *,
    checkpoint: str | None = None,
    trigger: Trigger | None = None,
    starting_offsets: str | None = None,
) -> StreamingQuery:
    """Start the job's bronze query: its Kafka source -> parse and reason -> `sink`.

    `checkpoint` defaults to the job's bronze checkpoint, `trigger` to the job's (`triggers`);
    `starting_offsets` (reconstructed ones) apply only to a query without a checkpoint yet.
    """
    options = kafka_options(bundle, job, starting_offsets=starting_offsets)
    return (
        parse(read_kafka(spark, options), job)
        .writeStream.queryName(job.bronze_query_name)
        .option("checkpointLocation", checkpoint or bundle.bronze_checkpoint_location(job))
        .foreachBatch(sink)
        .trigger(**(trigger or job_trigger(job)))
        .start()
    )
