"""Run one streaming job of the bundle: its bronze and gold queries, with checks before and after.

Orchestration only: the checkpoint guard, the queries started through `pipeline.bronze` and
`pipeline.gold` (each with its own stable name and checkpoint), monitoring on their progress,
then the report. bronze (the only query that reads Kafka) lands every record in the bronze table
(good events) or the quarantine table (with the reason); gold reads bronze as a Delta stream.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from streamops.checkpoint.reader import read_offsets
from streamops.checkpoint.registry import guard as checkpoint_guard
from streamops.clock import REAL, Clock, WaitTimeout, poll
from streamops.errors import QueryStoppedError, StreamopsError
from streamops.kafka.preflight import check_source
from streamops.monitoring.monitor import JobMonitor
from streamops.pipeline import bronze, gold
from streamops.pipeline.progress import BatchProgress, parse_progress
from streamops.pipeline.sinks import BatchWrite
from streamops.pipeline.sizing import FileSizeWatch
from streamops.pipeline.triggers import Trigger, is_catch_up, job_trigger
from streamops.runner.stopping import StopRequest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

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

    @classmethod
    def of(cls, bundle: Bundle, job_name: str) -> JobRun:
        """A run of `job_name` with nothing done yet: its tables and checkpoint named."""
        job = bundle.job(job_name)
        return cls(
            job_name,
            job.query_name,
            bundle.table_location(job.sink),
            bundle.checkpoint_location(job),
            bronze_uri=bundle.bronze_location(job),
            quarantine_uri=bundle.quarantine_location(job),
        )

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


class FailingSink(Protocol):
    """What the await loop reads of a query's sink (BronzeWriter, GoldWriter): the typed error
    it failed its query with, if any."""

    failure: StreamopsError | None


@dataclass(frozen=True)
class RunningQuery:
    """A started query of the job, with the sink that writes its batches."""

    kind: str  # "bronze" | "gold"
    query: StreamingQuery
    sink: FailingSink


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
    clock: Clock = REAL,
    stop: StopRequest | None = None,
) -> JobRun:
    """Run `job_name` until it ends (availableNow), `timeout_s` passes, or it fails.

    bronze reads Kafka (the only query that does) into the bronze and quarantine tables; gold
    reads the bronze table as a Delta stream, so gold can never disagree with bronze.
    available_now=None uses the job's trigger from the bundle; True forces a catch-up run (bronze
    to the end of the topic first, then gold to the end of bronze). `after_commit` runs after each
    gold Delta commit, before Spark writes its commit file (crash tests inject it). `reset_from`:
    an offsets file from `streamops checkpoint reconstruct`, the only way past the checkpoint
    guard (docs/checkpoint.md). A query's failure is raised as the typed error behind it
    (e.g. DataLossError). A continuous run ends without error only when `stop` is requested
    (SIGTERM, see runner.stopping) or `timeout_s` passes: a query that stops on its own raises
    QueryStoppedError, so the run exits non-zero and Databricks restarts it.
    """
    say = say or (lambda _m: None)
    stop = stop or StopRequest()
    job = bundle.job(job_name)
    starting = checkpoint_guard(bundle, job_name, event="start", reset_from=reset_from, say=say)
    run = JobRun.of(bundle, job_name)
    if "bronze" in queries:
        _preflight(spark, bundle, run, say)
    trigger = job_trigger(job, available_now=available_now)
    catch_up = is_catch_up(trigger)
    period = job.trigger.processing_time
    trigger_s = None if catch_up or period is None else period.seconds
    # Metrics, fast-path alerts and the consumer-group commit ride on the polled progress.
    kafka = bundle.runtime.kafka_for(job.source)
    monitor = JobMonitor.for_job(bundle, job_name, kafka=kafka, say=say, trigger_seconds=trigger_s)
    on_bronze_write = _bronze_writes(bundle, job, run, trigger_s, say)
    running: list[RunningQuery] = []
    try:
        for kind in (k for k in ("bronze", "gold") if k in queries):
            if stop.requested:  # asked to stop (e.g. while bronze caught up): start no more
                break
            if kind == "bronze":
                started = _start_bronze(spark, bundle, job, trigger, starting, on_bronze_write)
            else:
                started = _start_gold(spark, bundle, job, trigger, run, after_commit)
            running.append(started)
            if catch_up:  # bronze to the end of the topic, then gold to the end of bronze
                await_queries([started], run, monitor.wrap(on_batch), timeout_s, True, clock, stop)
        if not catch_up:
            await_queries(running, run, monitor.wrap(on_batch), timeout_s, False, clock, stop)
    finally:
        for r in running:
            if r.query.isActive:
                r.query.stop()
        monitor.close()
    _count_skipped(run, say)
    return run


def _preflight(spark: SparkSession, bundle: Bundle, run: JobRun, say: Say) -> None:
    """The source's topic, partitions and the cluster's cores checked before bronze reads."""
    cores = spark.sparkContext.defaultParallelism
    for warning in check_source(bundle, run.job, cores=cores, say=say):
        run.warnings.append(warning)
        say(f"warning: {warning}")


def _count_skipped(run: JobRun, say: Say) -> None:
    run.skipped_records = sum(b.skipped_records for b in run.bronze_batches)
    if run.skipped_records:
        say(
            f"warning: [{run.job}] {run.skipped_records} records were lost to retention and "
            "skipped (failOnDataLoss: false)"
        )


def _bronze_writes(
    bundle: Bundle, job: Job, run: JobRun, trigger_s: float | None, say: Say
) -> Callable[[BatchWrite], None]:
    """Records each bronze write in the run, warning when its files leave the target's band."""
    lo, hi = bundle.target.file_size_band_mb
    watch = FileSizeWatch(
        band_mb=(lo, hi), trigger_seconds=trigger_s, max_offsets=job.max_offsets_per_trigger
    )

    def on_write(w: BatchWrite) -> None:
        run.bronze_writes.append(w)
        advice = watch.add(w.file_sizes)
        if advice:
            run.warnings.append(advice)
            say(f"warning: [{run.job}] {advice}")

    return on_write


def _end_offsets(bundle: Bundle, checkpoint: str) -> Callable[[int], list[Any]]:
    """Reads a batch's end offsets from the query's own checkpoint (`offsets/N`, written by Spark
    before the batch runs), so the sink can record them in the batch's Delta commit."""
    so = bundle.runtime.storage(checkpoint).adlfs()

    def read(batch_id: int) -> list[Any]:
        try:
            f = read_offsets(checkpoint, batch_id, storage_options=so)
        except (OSError, ValueError):
            return []
        return [s for s in f.sources if s is not None]

    return read


def _start_bronze(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    trigger: Trigger,
    starting: dict[str, str],
    on_write: Callable[[BatchWrite], None],
) -> RunningQuery:
    checkpoint = bundle.bronze_checkpoint_location(job)
    sink = bronze.writer(
        spark, bundle, job, end_offsets=_end_offsets(bundle, checkpoint), on_write=on_write
    )
    query = bronze.start(
        spark,
        bundle,
        job,
        sink,
        checkpoint=checkpoint,
        trigger=trigger,
        starting_offsets=starting.get(job.bronze_query_name),
    )
    return RunningQuery("bronze", query, sink)


def _start_gold(
    spark: SparkSession,
    bundle: Bundle,
    job: Job,
    trigger: Trigger,
    run: JobRun,
    after_commit: Callable[[int], None] | None,
) -> RunningQuery:
    sink = gold.writer(
        spark,
        bundle,
        job,
        end_offsets=_end_offsets(bundle, run.checkpoint),
        on_write=run.writes.append,
        after_commit=after_commit,
    )
    query = gold.start(spark, bundle, job, sink, checkpoint=run.checkpoint, trigger=trigger)
    return RunningQuery("gold", query, sink)


def await_queries(
    running: list[RunningQuery],
    run: JobRun,
    on_batch: Callable[[BatchProgress], None] | None,
    timeout_s: float | None,
    catch_up: bool,
    clock: Clock,
    stop: StopRequest,
) -> None:
    """Watch the queries until they end, `timeout_s` passes, `stop` is requested, or one fails; a
    failure is raised as the typed error its sink failed it with (Spark hands that back only as
    text). A continuous query that ends on its own raises QueryStoppedError."""

    def over() -> list[str] | None:
        for r in running:
            _collect(r, run, on_batch)
            error = r.query.exception()
            if error is not None:
                raise error
        if stop.requested:
            return []
        # A job is both of its queries: when a continuous one is stopped, the other is not left
        # running half a job. (Catch-up queries each end on their own at the end.)
        ended = [r.query.name or r.kind for r in running if not r.query.isActive]
        if catch_up:
            return None if len(ended) < len(running) else []
        return ended or None

    ended: list[str] = []
    try:
        # Poll the queries' own progress logs rather than a listener: they hold every batch of
        # this run, in order, even the ones that finish while a query shuts down. When the run's
        # time is up (WaitTimeout), its queries are stopped like ended ones.
        with contextlib.suppress(WaitTimeout):
            ended = poll(
                over, timeout_s=timeout_s, interval_s=0.2, what=f"job '{run.job}'", clock=clock
            )
        for r in running:
            r.query.stop()
        for r in running:
            r.query.awaitTermination()  # raises the query's error, if it failed
    except KeyboardInterrupt:
        for r in running:
            r.query.stop()
        raise
    except Exception:
        failure = next((r.sink.failure for r in running if r.sink.failure is not None), None)
        if failure is not None:
            raise failure from None
        raise
    finally:
        for r in running:
            _collect(r, run, on_batch)
    if ended and not stop.requested:
        raise _stopped_on_its_own(run.job, ended[0])


def _stopped_on_its_own(job: str, query: str) -> QueryStoppedError:
    return QueryStoppedError(
        f"[{job}] query '{query}' stopped without an error while no stop was requested "
        "(SIGTERM or a cancelled run); exiting non-zero so that Databricks restarts the run "
        "(continuous job). Fix: see the driver log for what stopped it; stop a job with "
        "`action=stop` or a cancel, never by stopping its query",
        job=job,
        query=query,
    )


def _collect(
    r: RunningQuery, run: JobRun, on_batch: Callable[[BatchProgress], None] | None
) -> None:
    """Add the query's batches not in the run yet (of several events of one batch, the first)."""
    batches = run.bronze_batches if r.kind == "bronze" else run.batches
    # Batch ids only grow within a run: the newest one kept is all there is to remember.
    last = batches[-1].batch_id if batches else -1
    # One cheap call first: converting the whole progress log (up to 1000 kept events) crosses
    # py4j once per field of every event, and this runs five times a second per query.
    latest = r.query.lastProgress
    if latest is None or latest.batchId <= last:
        return
    for p in r.query.recentProgress:
        if p.batchId <= last:
            continue
        bp = parse_progress(json.loads(p.json))
        last = bp.batch_id
        batches.append(bp)
        if on_batch is not None:
            on_batch(bp)
