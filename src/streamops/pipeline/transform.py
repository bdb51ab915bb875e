"""Build a job's streaming DataFrame from the bundle: source -> parse -> watermark -> aggregate.

Building does no I/O; only starting the query touches the broker and storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamops.bundle.models import Job, WindowAggregateSpec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructField, StructType

    from streamops.bundle import Bundle

# Name of the observed metrics in each progress event (input vs malformed rows per batch).
QUALITY = "streamops_quality"


def event_schema(fields: dict[str, Any]) -> StructType:
    """The Spark schema of the events, from the bundle's `schema:` mapping."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    return StructType(
        [StructField(n, _parse_datatype_string(f.type), True) for n, f in fields.items()]
    )


def kafka_options(
    bundle: Bundle, job: Job, *, starting_offsets: str | None = None
) -> dict[str, str]:
    """Options of Spark's Kafka source for the job's bronze query; secrets resolved, never log."""
    src = bundle.source(job)
    opts = bundle.runtime.kafka_for(job.source).spark_options()
    opts.update({
        "subscribe": src.topic,
        "startingOffsets": starting_offsets or src.starting_offsets,
        "failOnDataLoss": str(src.fail_on_data_loss).lower(),
        # Consumer group ids of Spark's own consumers say which query they belong to.
        "groupIdPrefix": f"spark-{job.bronze_query_name}",
    })  # fmt: skip
    if job.max_offsets_per_trigger:
        opts["maxOffsetsPerTrigger"] = str(job.max_offsets_per_trigger)
    return opts


def read_kafka(spark: SparkSession, options: dict[str, str]) -> DataFrame:
    """The raw Kafka stream (key, value, topic, partition, offset, timestamp, ...)."""
    return spark.readStream.format("kafka").options(**options).load()


def read_bronze(spark: SparkSession, bundle: Bundle, job: Job) -> DataFrame:
    """The job's bronze table as a Delta stream: the gold query's only input.

    A bronze batch writes one file per Kafka partition it read, so admitting at most that many
    files per trigger gives gold about one bronze batch per batch: the watermark advances as
    often as it did when each query read Kafka under maxOffsetsPerTrigger, and a catch-up run
    drops too-late events the same way a live one does.
    """
    return bundle.bronze_ref(job).read_stream(
        spark.readStream.format("delta").option(
            "maxFilesPerTrigger", str(bundle.source(job).partitions)
        )
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

    return StructType([
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        *_kafka_coordinates(),
        StructField("reason", StringType(), True),
        StructField("query_name", StringType(), True),
        StructField("batch_id", LongType(), True),
    ])  # fmt: skip


def _with_reason(raw: DataFrame, job: Job) -> DataFrame:
    from streamops.pipeline.quality import with_reason

    return with_reason(raw, job, event_schema(job.schema_))


def bronze(raw: DataFrame, job: Job) -> DataFrame:
    """Every Kafka row with its parsed event, Kafka coordinates and quarantine reason (or null)."""
    from pyspark.sql import functions as F

    flagged = _with_reason(raw, job)
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


def aggregate(events: DataFrame, job: Job, agg: WindowAggregateSpec) -> DataFrame:
    """Windowed aggregation keyed by window and group_by columns."""
    from pyspark.sql import functions as F

    fns = {"count": F.count, "sum": F.sum, "avg": F.avg, "min": F.min, "max": F.max,
           "approx_count_distinct": F.approx_count_distinct}  # fmt: skip
    window = (
        F.window(F.col(job.event_time), agg.window.text, agg.slide.text)
        if agg.slide
        else F.window(F.col(job.event_time), agg.window.text)
    )
    exprs = [
        (
            F.count(F.lit(1))
            if m.fn == "count" and not m.column
            else fns[m.fn](F.col(m.column or "*"))
        ).alias(m.name)
        for m in agg.metrics
    ]
    out = events.groupBy(window.alias("window"), *[F.col(c) for c in agg.group_by]).agg(*exprs)
    return out.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        *agg.group_by,
        *[m.name for m in agg.metrics],
    )


def gold(events: DataFrame, job: Job, other_raw: DataFrame | None = None) -> DataFrame:
    """Apply the job's steps in order to its good events (the bronze table read as a stream).

    `other_raw`: the raw Kafka stream of a join's other side.
    """
    df = events.select(*job.schema_)
    if job.repartition:
        df = df.repartition(job.repartition)
    for step in job.steps:
        if hasattr(step, "watermark"):
            df = df.withWatermark(step.watermark.column, step.watermark.delay.text)
        elif hasattr(step, "window_aggregate"):
            df = aggregate(df, job, step.window_aggregate)
        elif hasattr(step, "join"):
            if other_raw is None:
                raise ValueError(f"job '{job.query_name}': a join step needs the other stream")
            df = join(df, job, other_raw)
    return df


def join(left: DataFrame, job: Job, other_raw: DataFrame) -> DataFrame:
    """Stream-stream join bounded in time on both sides, so its state can be dropped."""
    from pyspark.sql import functions as F

    spec = job.join
    assert spec is not None
    schema = event_schema(spec.schema_)
    right = (
        other_raw.select(F.from_json(F.col("value").cast("string"), schema).alias("e"))
        .filter(malformed_condition_fields(spec.schema_, F.col("e")) == F.lit(False))
        .select("e.*")
        .withWatermark(spec.watermark.column, spec.watermark.delay.text)
    )
    lt, rt = job.event_time, spec.watermark.column
    cols_r = [
        F.col(f"r.{c}").alias(c if c not in job.schema_ else f"{spec.source}_{c}")
        for c in spec.schema_
        if c not in spec.on
    ]
    cond = [F.col(f"l.{k}") == F.col(f"r.{k}") for k in spec.on]
    cond.append(F.col(f"r.{rt}").between(
        F.col(f"l.{lt}") - F.expr(f"INTERVAL {int(spec.within.seconds)} SECONDS"),
        F.col(f"l.{lt}") + F.expr(f"INTERVAL {int(spec.within.seconds)} SECONDS"),
    ))  # fmt: skip
    joined = left.alias("l").join(right.alias("r"), on=cond, how=spec.how.replace("_", ""))
    return joined.select(*[F.col(f"l.{c}") for c in job.schema_], *cols_r)


def malformed_condition_fields(fields: dict[str, Any], parsed: Column) -> Column:
    """True for a parsed struct that is null or misses a required field."""
    cond = parsed.isNull()
    for name, f in fields.items():
        if f.required:
            cond = cond | parsed[name].isNull()
    return cond


def output_mode(job: Job) -> str:
    """Update for aggregations (windows refine until the watermark closes them), else append."""
    return "update" if job.aggregate is not None else "append"


def merge_keys(job: Job) -> tuple[str, ...]:
    """The columns that identify one output row of an aggregation."""
    agg = job.aggregate
    return ("window_start", "window_end", *agg.group_by) if agg else ()


def ensure_tables(spark: SparkSession, bundle: Bundle, job: Job) -> None:
    """Create the job's bronze and quarantine tables when missing (gold streams from bronze),
    and its sink table when bundle.yml clusters it: liquid clustering is chosen at CREATE, so
    the first batch cannot create it. An existing sink clustered otherwise gets a warning."""
    import logging

    from delta.tables import DeltaTable

    from streamops.pipeline.delta_tables import table_exists
    from streamops.pipeline.sinks import ensure_table

    ensure_table(spark, bundle.bronze_ref(job), bronze_schema(job))
    ensure_table(spark, bundle.quarantine_ref(job), quarantine_schema())
    table = bundle.spec.tables.get(job.sink)
    if table is None or not table.cluster_by:
        return
    ref = bundle.table_ref(job.sink)
    uri = ref.label
    if table_exists(spark, ref):
        detail = spark.sql(f"DESCRIBE DETAIL {ref.sql}").first()
        have = list(detail["clusteringColumns"] or []) if detail else []
        if have != table.cluster_by:
            now = (f"clustered by {', '.join(have)}" if have
                   else f"partitioned by {', '.join(detail['partitionColumns'])}"
                   if detail and detail["partitionColumns"] else "not clustered")  # fmt: skip
            cols = ", ".join(f"`{c}`" for c in table.cluster_by)
            logging.getLogger("streamops.pipeline").warning(
                "%s: tables.%s.cluster_by is %s but the table at %s is %s; its layout stays as "
                "it is. Fix: ALTER TABLE %s CLUSTER BY (%s) (a partitioned table must be "
                "recreated instead)", bundle.path.name, job.sink, table.cluster_by, uri, now, ref.sql,
                cols,
            )  # fmt: skip
        return
    # The sink's schema is what the job's steps make of its events: built on empty batches.
    raw = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    events = spark.createDataFrame([], bronze_schema(job))
    other = spark.createDataFrame([], raw) if job.join is not None else None
    schema = gold(events, job, other).schema
    (
        ref.create_builder(DeltaTable.createIfNotExists(spark)).addColumns(schema)
        .clusterBy(*table.cluster_by).execute()
    )  # fmt: skip
