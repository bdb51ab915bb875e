"""The gold query: the job's bronze table as a Delta stream -> its steps -> its sink table.

Steps run in bundle.yml's order: watermark, window aggregate (MERGEd by window and group), or a
stream-stream join with another source (read from Kafka as it comes, with that source's own
settings). The sink table is created here, once, in the layout bundle.yml gives it. `start`
returns the started query; its sink (e.g. a no-op for a rehearsal), checkpoint and trigger come
from the caller, and default to the bundle's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamops.bundle.models import Job, WindowAggregateSpec
from streamops.pipeline.bronze import Sink, bronze_schema, ensure_tables, event_schema
from streamops.pipeline.delta_tables import table_exists
from streamops.pipeline.kafka_source import data_loss_error, read_kafka, source_options
from streamops.pipeline.quality import malformed
from streamops.pipeline.sinks import BatchWrite, EndOffsets, GoldWriter, SinkSpec, ensure_table
from streamops.pipeline.triggers import Trigger, job_trigger

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.types import StructType

    from streamops.bundle import Bundle

# Spark's Kafka source columns that a join reads of its other side (for the sink's schema).
_KAFKA_ROW = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


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


def read_join_side(spark: SparkSession, bundle: Bundle, job: Job) -> DataFrame | None:
    """The raw Kafka stream of the join's other source (None without a join), read with that
    source's brokers, login, starting offsets and data-loss policy, not the job's."""
    if job.join is None:
        return None
    other = job.join.source
    options = source_options(
        bundle, other, reader=f"{job.query_name}-{other}", max_offsets=job.max_offsets_per_trigger
    )
    return read_kafka(spark, options)


def aggregate(events: DataFrame, job: Job, agg: WindowAggregateSpec) -> DataFrame:
    """Windowed aggregation keyed by window and group_by columns."""
    from pyspark.sql import functions as F

    fns = {
        "count": F.count,
        "sum": F.sum,
        "avg": F.avg,
        "min": F.min,
        "max": F.max,
        "approx_count_distinct": F.approx_count_distinct,
    }
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


def join(left: DataFrame, job: Job, other_raw: DataFrame) -> DataFrame:
    """Stream-stream join bounded in time on both sides, so its state can be dropped."""
    from pyspark.sql import functions as F

    spec = job.join
    assert spec is not None
    right = (
        other_raw.select(
            F.from_json(F.col("value").cast("string"), event_schema(spec.schema_)).alias("e")
        )
        .filter(malformed(spec.schema_, F.col("e")) == F.lit(False))
        .select("e.*")
        .withWatermark(spec.watermark.column, spec.watermark.delay.text)
    )
    lt, rt = job.event_time, spec.watermark.column
    cols_r = [
        F.col(f"r.{c}").alias(c if c not in job.schema_ else f"{spec.source}_{c}")
        for c in spec.schema_
        if c not in spec.on
    ]
    within = F.expr(f"INTERVAL {int(spec.within.seconds)} SECONDS")
    cond = [F.col(f"l.{k}") == F.col(f"r.{k}") for k in spec.on]
    cond.append(F.col(f"r.{rt}").between(F.col(f"l.{lt}") - within, F.col(f"l.{lt}") + within))
    joined = left.alias("l").join(right.alias("r"), on=cond, how=spec.how.replace("_", ""))
    return joined.select(*[F.col(f"l.{c}") for c in job.schema_], *cols_r)


def steps(events: DataFrame, job: Job, other_raw: DataFrame | None = None) -> DataFrame:
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


def output_mode(job: Job) -> str:
    """Update for aggregations (windows refine until the watermark closes them), else append."""
    return "update" if job.aggregate is not None else "append"


def merge_keys(job: Job) -> tuple[str, ...]:
    """The columns that identify one output row of an aggregation."""
    agg = job.aggregate
    return ("window_start", "window_end", *agg.group_by) if agg else ()


def sink_schema(spark: SparkSession, job: Job) -> StructType:
    """What the job's steps make of its events: the plan built on empty batches."""
    events = spark.createDataFrame([], bronze_schema(job))
    other = spark.createDataFrame([], _KAFKA_ROW) if job.join is not None else None
    return steps(events, job, other).schema


def ensure_sink_table(spark: SparkSession, bundle: Bundle, job: Job) -> None:
    """Create the job's sink table when missing, partitioned or clustered as bundle.yml says
    (both are chosen at CREATE, so the first batch cannot choose them). An existing sink
    clustered otherwise keeps its layout, with a warning."""
    table = bundle.table(job.sink)
    ref = bundle.table_ref(job.sink)
    if not table_exists(spark, ref):
        ensure_table(spark, ref, sink_schema(spark, job), table.partition_by, table.cluster_by)
        return
    if not table.cluster_by:
        return
    detail = spark.sql(f"DESCRIBE DETAIL {ref.sql}").first()
    have = list(detail["clusteringColumns"] or []) if detail else []
    if have == table.cluster_by:
        return
    if have:
        now = f"clustered by {', '.join(have)}"
    elif detail and detail["partitionColumns"]:
        now = f"partitioned by {', '.join(detail['partitionColumns'])}"
    else:
        now = "not clustered"
    cols = ", ".join(f"`{c}`" for c in table.cluster_by)
    logging.getLogger("streamops.pipeline").warning(
        "%s: tables.%s.cluster_by is %s but the table at %s is %s; its layout stays as it is. "
        "Fix: ALTER TABLE %s CLUSTER BY (%s) (a partitioned table must be recreated instead)",
        bundle.path.name,
        job.sink,
        table.cluster_by,
        ref.label,
        now,
        ref.sql,
        cols,
    )


def writer(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    *,
    end_offsets: EndOffsets,
    on_write: Callable[[BatchWrite], None] | None = None,
    after_commit: Callable[[int], None] | None = None,
) -> GoldWriter:
    """The gold query's foreachBatch writer (MERGE for aggregates, else append), its sink table
    created when missing. `end_offsets` reads a batch's end offsets from the query's checkpoint;
    `after_commit` runs after each Delta commit, before Spark's commit file (crash tests)."""
    ensure_sink_table(spark, bundle, job)
    spec = SinkSpec(
        table_uri=bundle.table_ref(job.sink),
        app_id=job.query_name,
        mode="merge" if job.aggregate is not None else "append",
        merge_keys=merge_keys(job),
        partition_by=tuple(bundle.table(job.sink).partition_by),
    )
    other = job.join.source if job.join is not None else None
    return GoldWriter(
        spec,
        end_offsets,
        on_write,
        after_commit,
        # Only a join's other side is Kafka here: its records are the ones that can be lost.
        explain_loss=(lambda loss: data_loss_error(bundle, other, loss)) if other else None,
    )


def start(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    sink: Sink,
    *,
    checkpoint: str | None = None,
    trigger: Trigger | None = None,
) -> StreamingQuery:
    """Start the job's gold query: the bronze table as a stream -> the job's steps -> `sink`.

    `checkpoint` defaults to the job's, `trigger` to the job's (`triggers`). The bronze table is
    created first when missing: gold streams from it from its first batch.
    """
    if not table_exists(spark, bundle.bronze_ref(job)):
        ensure_tables(spark, bundle, job)
    frame = steps(read_bronze(spark, bundle, job), job, read_join_side(spark, bundle, job))
    return (
        frame.writeStream.queryName(job.query_name)
        .outputMode(output_mode(job))
        .option("checkpointLocation", checkpoint or bundle.checkpoint_location(job))
        .foreachBatch(sink)
        .trigger(**(trigger or job_trigger(job)))
        .start()
    )
