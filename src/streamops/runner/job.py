"""Run one streaming job of the bundle: its bronze and gold queries, with checks before and after.

bronze (the only query that reads Kafka): every record -> the bronze table (good events) or the
quarantine table (with the reason), written in one idempotent batch. gold: the bronze table as a
Delta stream -> watermark -> aggregation -> the job's sink table. Each query has its own stable
name and checkpoint.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.checkpoint.reader import read_offsets
from streamops.checkpoint.registry import guard as checkpoint_guard
from streamops.errors import KafkaError, SinkError, StreamopsError
from streamops.kafka.preflight import check_source
from streamops.monitoring.monitor import JobMonitor
from streamops.pipeline import transform as pipeline
from streamops.pipeline.progress import BatchProgress, parse_progress
from streamops.pipeline.sinks import BatchWrite, BronzeWriter, GoldWriter, SinkSpec
from streamops.pipeline.sizing import FileSizeWatch

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle, Job

Say = Callable[[str], None]


@dataclass
class JobRun:
    """What one run of a job did, batch by batch, for both of its queries."""

    job: str
    query_name: str
    table_uri: str
    checkpoint: str
    bronze_uri: str = ""
    quarantine_uri: str = ""
    batches: list[BatchProgress] = field(default_factory=list)  # gold query
    writes: list[BatchWrite] = field(default_factory=list)
    bronze_batches: list[BatchProgress] = field(default_factory=list)
    bronze_writes: list[BatchWrite] = field(default_factory=list)
    skipped_records: int = 0  # lost to retention and skipped (failOnDataLoss: false)
    warnings: list[str] = field(default_factory=list)

    @property
    def input_rows(self) -> int:
        """Kafka records read (by the bronze query, the only one that reads Kafka)."""
        return sum(b.input_rows for b in self.bronze_batches)

    @property
    def malformed_rows(self) -> int:
        """Records quarantined instead of reaching bronze."""
        return self.quarantined_rows

    @property
    def dropped_by_watermark(self) -> int:
        return sum(b.dropped_by_watermark for b in self.batches)

    @property
    def bronze_input_rows(self) -> int:
        return self.input_rows

    @property
    def gold_input_rows(self) -> int:
        """Events the gold query read from the bronze table."""
        return sum(b.input_rows for b in self.batches)

    @property
    def quarantined_rows(self) -> int:
        return sum(w.quarantined for w in self.bronze_writes)

    @property
    def lag_end(self) -> dict[str, dict[str, int]]:
        """Records behind per topic partition after the bronze query's last batch."""
        for b in reversed(self.bronze_batches):
            if b.latest_offsets:
                return b.lag
        return {}


_OUR_ERROR = re.compile(r"streamops\.errors\.(KafkaError|SinkError): (.+)")


def _explain(exc: Exception) -> StreamopsError | None:
    """Pull a streamops error raised inside Spark's Python workers back out of Spark's wrapper."""
    found = _OUR_ERROR.findall(str(exc))
    if not found:
        return None
    kind, msg = found[-1]
    return (KafkaError if kind == "KafkaError" else SinkError)(msg.strip())


def run_job(
    bundle: Bundle,
    job_name: str,
    spark: SparkSession,
    *,
    available_now: bool | None = None,
    timeout_s: float | None = None,
    on_batch: Callable[[BatchProgress], None] | None = None,
    say: Say | None = None,
    after_commit: Callable[[int], None] | None = None,
    queries: tuple[str, ...] = ("bronze", "gold"),
    reset_from: Path | None = None,
) -> JobRun:
    """Run `job_name` until it ends (availableNow), `timeout_s` passes, or it fails.

    bronze reads Kafka (the only query that does) into the bronze and quarantine tables; gold
    reads the bronze table as a Delta stream, so gold can never disagree with bronze.
    available_now=None uses the job's trigger from the bundle; True forces a catch-up run (bronze
    to the end of the topic first, then gold to the end of bronze). `after_commit` runs after each
    gold Delta commit, before Spark writes its commit file (crash tests inject it). `reset_from`:
    an offsets file from `streamops checkpoint reconstruct`, the only way past the checkpoint
    guard (docs/checkpoint.md).
    """
    say = say or (lambda _m: None)
    job = bundle.job(job_name)
    starting = checkpoint_guard(bundle, job_name, event="start", reset_from=reset_from, say=say)
    run = JobRun(
        job_name,
        job.query_name,
        bundle.table_location(job.sink),
        bundle.checkpoint_location(job),
        bronze_uri=bundle.bronze_location(job),
        quarantine_uri=bundle.quarantine_location(job),
    )
    kafka = bundle.runtime.kafka_for(job.source)
    if "bronze" in queries:
        cores = spark.sparkContext.defaultParallelism
        for warning in check_source(bundle, job_name, cores=cores, say=say):
            run.warnings.append(warning)
            say(f"warning: {warning}")
    use_available_now = job.trigger.available_now if available_now is None else available_now
    trigger_s = (
        None
        if use_available_now or not job.trigger.processing_time
        else job.trigger.processing_time.seconds
    )
    lo, hi = bundle.target.file_size_band_mb
    watch = FileSizeWatch(band_mb=(lo, hi), trigger_seconds=trigger_s,
                          max_offsets=job.max_offsets_per_trigger)  # fmt: skip

    def on_bronze_write(w: BatchWrite) -> None:
        run.bronze_writes.append(w)
        advice = watch.add(w.file_sizes)
        if advice:
            run.warnings.append(advice)
            say(f"warning: [{job_name}] {advice}")

    # Metrics, fast-path alerts and the consumer-group commit ride on the polled progress.
    monitor = JobMonitor.for_job(bundle, job_name, kafka=kafka, say=say, trigger_seconds=trigger_s)
    # Both tables exist before any query starts: gold streams from bronze from its first batch.
    pipeline.ensure_tables(spark, bundle, job)
    plans: list[tuple[str, Any]] = []
    if "bronze" in queries:
        plans.append(("bronze", _bronze_stream(spark, bundle, job, starting, run, on_bronze_write)))
    if "gold" in queries:
        plans.append(("gold", _gold_stream(spark, bundle, job, run, after_commit)))
    started: list[tuple[str, Any]] = []
    try:
        if use_available_now:
            # Catch-up: bronze to the end of the topic, then gold to the end of bronze.
            for kind, stream in plans:
                started.append((kind, _start(stream, job, True)))
                _await(started[-1:], run, monitor.wrap(on_batch), timeout_s, True)
        else:
            for kind, stream in plans:
                started.append((kind, _start(stream, job, False)))
            _await(started, run, monitor.wrap(on_batch), timeout_s, False)
    except KafkaError as exc:
        if str(exc).startswith("data loss:"):
            raise data_loss_error(bundle, job, str(exc)) from None
        raise
    finally:
        for _, q in started:
            if q.isActive:
                q.stop()
        monitor.close()
    run.skipped_records = sum(b.skipped_records for b in run.bronze_batches)
    if run.skipped_records:
        say(f"warning: [{job_name}] {run.skipped_records} records were lost to retention and "
            "skipped (failOnDataLoss: false)")  # fmt: skip
    return run


_LOSS = re.compile(r"data loss: (\S+)\[(\d+)\] offsets (\d+)\.\.(\d+) of batch (\d+)")


def data_loss_error(bundle: Bundle, job: Job, detail: str) -> KafkaError:
    """The failure for records deleted by retention before the job read them: which partition,
    which offsets (up to where the broker starts now), and the two ways on."""
    m = _LOSS.search(detail)
    if m is None:
        return KafkaError(detail)
    topic, part, start, last, batch = (
        m.group(1),
        int(m.group(2)),
        int(m.group(3)),
        int(m.group(4)),
        m.group(5),
    )
    from streamops.kafka.offsets import earliest_offset

    # The broker narrows Spark's batch range to what retention really removed; if it cannot be
    # asked, Spark's range stands and the message says why.
    unsure = ""
    try:
        low = earliest_offset(bundle.runtime.kafka_for(job.source).librdkafka(), topic, part)
        lost_to = min(last, low - 1)
    except KafkaError as exc:
        lost_to, unsure = last, f" (at most; the broker's earliest offset is unknown: {exc})"
    return KafkaError(
        f"{topic}[{part}]: offsets {start}..{lost_to}{unsure} were deleted from Kafka (retention) before "
        f"query '{job.bronze_query_name}' read them (batch {batch}); nothing of that batch was "
        "written. Fix: replay those records into the topic if they can be, or set "
        f"`sources.{job.source}.fail_on_data_loss: false` in {bundle.path.name} to skip them "
        "(every skipped record is counted and reported), then restart the job"
    )


def _end_offsets(bundle: Bundle, checkpoint: str) -> Callable[[int], list[Any]]:
    """Reads a batch's end offsets from the query's own checkpoint (`offsets/N`, written by Spark
    before the batch runs), so the sink can record them in the batch's Delta commit."""
    so = bundle.runtime.storage_options(checkpoint)

    def read(batch_id: int) -> list[Any]:
        try:
            f = read_offsets(checkpoint, batch_id, storage_options=so)
        except (OSError, ValueError):
            return []
        return [s for s in f.sources if s is not None]

    return read


def _bronze_stream(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    starting: dict[str, str],
    run: JobRun,
    on_write: Callable[[BatchWrite], None],
) -> Any:
    checkpoint = bundle.bronze_checkpoint_location(job)
    opts = pipeline.kafka_options(bundle, job, starting_offsets=starting.get(job.bronze_query_name))
    writer = BronzeWriter(
        SinkSpec(bundle.bronze_ref(job), job.bronze_query_name),
        SinkSpec(bundle.quarantine_ref(job), job.bronze_query_name),
        tuple(job.schema_),
        _end_offsets(bundle, checkpoint),
        on_write=on_write,
    )
    return (
        pipeline.bronze(pipeline.read_kafka(spark, opts), job)
        .writeStream.queryName(job.bronze_query_name)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(writer)
    )


def _gold_stream(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    run: JobRun,
    after_commit: Callable[[int], None] | None,
) -> Any:
    other = None
    if job.join is not None:
        # The other side of a join is another topic; it is read as it comes (no bronze of its own).
        other_opts = dict(pipeline.kafka_options(bundle, job),
                          subscribe=bundle.spec.sources[job.join.source].topic)  # fmt: skip
        other = pipeline.read_kafka(spark, other_opts)
    spec = SinkSpec(
        table_uri=bundle.table_ref(job.sink),
        app_id=job.query_name,
        mode="merge" if job.aggregate is not None else "append",
        merge_keys=pipeline.merge_keys(job),
        partition_by=tuple(bundle.table(job.sink).partition_by),
    )
    writer = GoldWriter(spec, _end_offsets(bundle, run.checkpoint), run.writes.append, after_commit)
    return (
        pipeline.gold(pipeline.read_bronze(spark, bundle, job), job, other)
        .writeStream.queryName(job.query_name)
        .outputMode(pipeline.output_mode(job))
        .option("checkpointLocation", run.checkpoint)
        .foreachBatch(writer)
    )


def _at(opts: dict[str, str], starting: dict[str, str], query_name: str) -> dict[str, str]:
    """Source options with the reconstructed startingOffsets of `query_name`, if it has them."""
    return dict(opts, startingOffsets=starting[query_name]) if query_name in starting else opts


def _start(stream: Any, job: Any, available_now: bool) -> Any:
    if available_now:
        return stream.trigger(availableNow=True).start()
    assert job.trigger.processing_time is not None
    return stream.trigger(processingTime=job.trigger.processing_time.text).start()


def _await(
    started: list[tuple[str, Any]],
    run: JobRun,
    on_batch: Callable[[BatchProgress], None] | None,
    timeout_s: float | None,
    available_now: bool,
) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        # Poll the queries' own progress logs rather than a listener: they hold every batch of
        # this run, in order, even the ones that finish while a query shuts down.
        while any(q.isActive for _, q in started):
            for kind, q in started:
                _collect(q, run, kind, on_batch)
                if q.exception() is not None:
                    raise q.exception()
            # A job is both of its queries: when a continuous one is stopped, the other is not left
            # running half a job. (availableNow queries each end on their own at the end.)
            if not available_now and any(not q.isActive for _, q in started):
                for _, q in started:
                    q.stop()
                break
            if deadline is not None and time.monotonic() > deadline:
                for _, q in started:
                    q.stop()
                break
            time.sleep(0.2)
        for _, q in started:
            q.awaitTermination()  # raises the query's error, if it failed
    except KeyboardInterrupt:
        for _, q in started:
            q.stop()
        raise
    except Exception as exc:
        ours = _explain(exc)
        if ours is not None:
            raise ours from None
        raise
    finally:
        for kind, q in started:
            _collect(q, run, kind, on_batch)


def _collect(
    query: Any, run: JobRun, kind: str, on_batch: Callable[[BatchProgress], None] | None
) -> None:
    batches = run.bronze_batches if kind == "bronze" else run.batches
    seen = {b.batch_id for b in batches}
    for p in query.recentProgress:
        raw = p.json if hasattr(p, "json") else json.dumps(p)
        bp = parse_progress(json.loads(raw))
        if bp.batch_id in seen:
            continue
        seen.add(bp.batch_id)
        batches.append(bp)
        if on_batch is not None:
            on_batch(bp)
