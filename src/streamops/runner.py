"""Run one streaming job of the bundle: build the query, start it, collect its progress."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamops.errors import KafkaError, SinkError, StreamopsError
from streamops.kafka.connect import bootstrap_servers, security_options
from streamops.spark import pipeline
from streamops.spark.delta_sink import BatchWrite, SinkSpec, writer_for
from streamops.spark.progress import BatchProgress, parse_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.bundle import Bundle


@dataclass
class JobRun:
    """What one run of a job did, batch by batch."""

    job: str
    query_name: str
    table_uri: str
    checkpoint: str
    batches: list[BatchProgress] = field(default_factory=list)
    writes: list[BatchWrite] = field(default_factory=list)

    @property
    def input_rows(self) -> int:
        return sum(b.input_rows for b in self.batches)

    @property
    def malformed_rows(self) -> int:
        return sum(b.malformed_rows for b in self.batches)

    @property
    def dropped_by_watermark(self) -> int:
        return sum(b.dropped_by_watermark for b in self.batches)

    @property
    def lag_end(self) -> dict[str, dict[str, int]]:
        for b in reversed(self.batches):
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
) -> JobRun:
    """Run `job_name` until it ends (availableNow), `timeout_s` passes, or it fails.

    available_now=None uses the job's trigger from the bundle; True forces a catch-up run.
    """
    job = bundle.job(job_name)
    source = bundle.source(job)
    run = JobRun(
        job_name, job.query_name, bundle.table_location(job.sink), bundle.checkpoint_location(job)
    )
    bootstrap = bootstrap_servers(bundle, source)
    opts = pipeline.source_options(bundle, job, bootstrap, security_options(bundle))
    raw = pipeline.read_source(spark, bundle, job, opts)
    other = None
    if job.join is not None:
        other_src = bundle.spec.sources[job.join.source]
        other_opts = dict(opts, subscribe=other_src.topic)
        other = pipeline.read_source(spark, bundle, job, other_opts)
    df = pipeline.transform(raw, job, other)
    spec = SinkSpec(
        table_uri=run.table_uri,
        app_id=job.query_name,
        checkpoint=run.checkpoint,
        mode="merge" if job.aggregate is not None else "append",
        merge_keys=pipeline.merge_keys(job),
        partition_by=tuple(bundle.table(job.sink).partition_by),
    )
    writer = writer_for(bundle.target.resolved_engines.sink, spec, run.writes.append)

    writer_stream = (
        df.writeStream.queryName(job.query_name)
        .outputMode(pipeline.output_mode(job))
        .option("checkpointLocation", run.checkpoint)
        .foreachBatch(writer)
    )
    use_available_now = job.trigger.available_now if available_now is None else available_now
    if use_available_now:
        writer_stream = writer_stream.trigger(availableNow=True)
    else:
        assert job.trigger.processing_time is not None
        writer_stream = writer_stream.trigger(processingTime=job.trigger.processing_time.text)
    query = writer_stream.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        # Poll the query's own progress log rather than a listener: it holds every batch of this
        # run, in order, even the ones that finish while the query shuts down.
        while query.isActive:
            _collect(query, run, on_batch)
            if deadline is not None and time.monotonic() > deadline:
                query.stop()
                break
            time.sleep(0.2)
        query.awaitTermination()  # raises the query's error, if it failed
    except KeyboardInterrupt:
        query.stop()
        raise
    except Exception as exc:
        ours = _explain(exc)
        if ours is not None:
            raise ours from None
        raise
    finally:
        _collect(query, run, on_batch)
    return run


def _collect(query: Any, run: JobRun, on_batch: Callable[[BatchProgress], None] | None) -> None:
    seen = {b.batch_id for b in run.batches}
    for p in query.recentProgress:
        raw = p.json if hasattr(p, "json") else json.dumps(p)
        bp = parse_progress(json.loads(raw))
        if bp.batch_id in seen or bp.query_name != run.query_name:
            continue
        seen.add(bp.batch_id)
        run.batches.append(bp)
        if on_batch is not None:
            on_batch(bp)
