"""Build a job's streaming DataFrame from the bundle: source -> parse -> watermark -> aggregate.

Building does no I/O; only starting the query touches the broker and storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamops.bundle.models import Job, WindowAggregateSpec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from streamops.bundle import Bundle

# Name of the observed metrics in each progress event (input vs malformed rows per batch).
QUALITY = "streamops_quality"


def event_schema(fields: dict[str, Any]) -> StructType:
    """The Spark schema of the events, from the bundle's `schema:` mapping."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    return StructType(
        [StructField(n, _parse_datatype_string(f.type), True) for n, f in fields.items()]
    )


def source_options(
    bundle: Bundle, job: Job, bootstrap_servers: str, secrets: dict[str, str]
) -> dict[str, str]:
    """Options for format('kafka') or format('streamops_kafka'): the built-in source's names."""
    src = bundle.source(job)
    opts = {
        "kafka.bootstrap.servers": bootstrap_servers,
        "subscribe": src.topic,
        "startingOffsets": src.starting_offsets,
        "failOnDataLoss": str(src.fail_on_data_loss).lower(),
    }
    if job.max_offsets_per_trigger:
        opts["maxOffsetsPerTrigger"] = str(job.max_offsets_per_trigger)
    opts.update(secrets)
    return opts


def read_source(
    spark: SparkSession, bundle: Bundle, job: Job, options: dict[str, str]
) -> DataFrame:
    """The raw Kafka stream for `job` with the target's source engine."""
    from streamops.spark.kafka_source import FORMAT

    fmt = "kafka" if bundle.target.resolved_engines.source == "spark-kafka" else FORMAT
    return spark.readStream.format(fmt).options(**options).load()


def _with_reason(raw: DataFrame, job: Job) -> DataFrame:
    from pyspark.sql import functions as F

    from streamops.spark.quality import reason_column

    schema = event_schema(job.schema_)
    parsed = raw.withColumn(
        "e", F.from_json(F.col("value").cast("string"), schema, {"mode": "PERMISSIVE"})
    )
    return parsed.withColumn("reason", reason_column(job, F.col("e")))


def parse(raw: DataFrame, job: Job) -> DataFrame:
    """Kafka rows -> good typed events; counts input and quarantined rows per batch (observed)."""
    from pyspark.sql import functions as F

    flagged = _with_reason(raw, job)
    observed = flagged.observe(
        QUALITY,
        F.count(F.lit(1)).alias("input_rows"),
        F.sum(F.col("reason").isNotNull().cast("long")).alias("malformed_rows"),
    )
    return observed.filter(F.col("reason").isNull()).select("e.*")


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


def transform(raw: DataFrame, job: Job, other_raw: DataFrame | None = None) -> DataFrame:
    """Apply the job's steps in order to the raw Kafka stream (`other_raw`: a join's other side)."""
    df = parse(raw, job)
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
