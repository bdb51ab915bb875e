"""`make run`: every job of the bundle end to end on the local target, with a checked summary.

Starts its own broker (and Azurite), produces a realistic sample per job in two phases (the
second after a restart from the checkpoint, with late and too-late events), runs each job in
availableNow mode, then prints per job what went in and what the Delta table holds, and checks
that the two agree. Stops what it started.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from streamops.bundle import Bundle
from streamops.demo.sample import Sample, ensure_topic, generate, produce, utc
from streamops.pipeline.progress import BatchProgress
from streamops.runner.job import JobRun, run_job

DEMO_START = utc("2026-11-24T06:00:00Z")


@dataclass
class JobSummary:
    job: str
    produced: int
    expected_malformed: int
    expected_dropped: int
    expected_in_table: int
    input_rows: int
    malformed_rows: int
    dropped_by_watermark: int
    table_rows: int
    table_events: int
    table_version: int
    batches: int
    lag_end: dict[str, dict[str, int]]
    table_uri: str
    bronze_rows: int = 0
    quarantined_rows: int = 0
    expected_bronze: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.input_rows == self.produced
            and self.bronze_rows == self.expected_bronze
            and self.quarantined_rows == self.expected_malformed
            and self.malformed_rows == self.expected_malformed
            and self.dropped_by_watermark == self.expected_dropped
            and self.table_events == self.expected_in_table
            and all(v == 0 for parts in self.lag_end.values() for v in parts.values())
        )


def _count_metric(bundle: Bundle, job_name: str) -> str | None:
    agg = bundle.job(job_name).aggregate
    if agg is None:
        return None
    for m in agg.metrics:
        if m.fn == "count":
            return m.name
    return None


def table_figures(bundle: Bundle, job_name: str) -> tuple[int, int, int]:
    """(rows, events counted in those rows, version) of a job's sink table."""
    from deltalake import DeltaTable

    job = bundle.job(job_name)
    dt = DeltaTable(bundle.table_location(job.sink))
    tbl = dt.to_pyarrow_table()
    metric = _count_metric(bundle, job_name)
    events = int(sum(v or 0 for v in tbl.column(metric).to_pylist())) if metric else tbl.num_rows
    return tbl.num_rows, events, dt.version()


def row_count(uri: str) -> int:
    """Rows of a Delta table, 0 when it does not exist (nothing was ever written to it)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return int(DeltaTable(uri).to_pyarrow_dataset().count_rows())
    except TableNotFoundError:
        return 0


def run_demo(
    bundle: Bundle,
    *,
    say: Callable[[str], None],
    on_batch: Callable[[str, BatchProgress], None],
    scale: int = 1,
    batch_rows: int = 1500,
) -> list[JobSummary]:
    """Run every job on the local target against a fresh broker; return one summary per job."""
    from streamops.localstack import LocalStack, local_broker
    from streamops.pipeline.session import jars_dir, local_session

    if bundle.target.mode != "local":
        from streamops.errors import UsageError

        raise UsageError(f"the demo runs on the local target only, not '{bundle.target_name}'")
    data_root = Path(bundle.storage_root)
    if data_root.exists():
        say(f"clearing the local target's previous demo data in {data_root}")
        shutil.rmtree(data_root)
    stack_dir = bundle.cache_dir / "demo-stack"
    stack = LocalStack(bundle.cache_dir, state_dir=stack_dir)
    own_broker = (
        bundle.bootstrap_override is None and bundle.target.kafka.bootstrap_servers == "embedded"
    )
    try:
        if own_broker:
            # Azurite is started too: it is part of the local stack that dev/prod storage tests use.
            stack.up(services=("broker", "azurite"), progress=say)
            bundle = dataclasses.replace(
                bundle.with_local_broker(local_broker), local_stack_dir=stack_dir
            )
        say("starting Spark (local) ...")
        t0 = time.monotonic()
        spark = local_session(
            jars=jars_dir(bundle.jvm_dir),
            cores=bundle.target.cluster.total_cores,
            app_name="streamops-demo",
        )
        say(f"Spark ready in {time.monotonic() - t0:.1f} s")
        summaries = []
        for name in bundle.jobs:
            summaries.append(_demo_job(bundle, name, spark, say, on_batch, scale, batch_rows))
        return summaries
    finally:
        if own_broker:
            stack.down()
            say("local stack stopped")


def _with_small_batches(bundle: Bundle, name: str, batch_rows: int) -> Bundle:
    """The bundle with job `name` reading at most `batch_rows` records per batch."""
    job = bundle.job(name)
    jobs = {
        **bundle.spec.jobs,
        name: job.model_copy(update={"max_offsets_per_trigger": batch_rows}),
    }
    return dataclasses.replace(bundle, spec=bundle.spec.model_copy(update={"jobs": jobs}))


def _phases(bundle: Bundle, name: str, scale: int) -> tuple[Sample, Sample]:
    """The two samples: three hours of events, then three more with late and too-late ones."""
    job = bundle.job(name)
    partitions = bundle.source(job).partitions
    span = timedelta(hours=3)
    phase1 = generate(
        job,
        partitions=partitions,
        start=DEMO_START,
        span=span,
        n=2000 * scale,
        malformed=25,
        seed=11,
    )
    phase2 = generate(
        job,
        partitions=partitions,
        start=DEMO_START + span,
        span=span,
        n=1000 * scale,
        malformed=10,
        late=20,
        too_late=12,
        seed=12,
        first_index=2000 * scale,
    )
    return phase1, phase2


def _demo_job(
    bundle: Bundle,
    name: str,
    spark: Any,
    say: Callable[[str], None],
    on_batch: Callable[[str, BatchProgress], None],
    scale: int,
    batch_rows: int,
) -> JobSummary:
    job = bundle.job(name)
    src = bundle.source(job)
    # Small batches so progress and lag are visible; the bundle's own limit applies in production.
    job_b = _with_small_batches(bundle, name, batch_rows)
    kafka = bundle.runtime.kafka_for(job.source).librdkafka()
    ensure_topic(kafka, src.topic, src.partitions)
    phase1, phase2 = _phases(bundle, name, scale)
    runs: list[JobRun] = []
    for label, sample in (("phase 1", phase1), ("phase 2 (restart from checkpoint)", phase2)):
        produce(kafka, src.topic, sample)
        say(
            f"[{name}] {label}: produced {len(sample.events)} events to {src.topic} "
            f"({sample.count('malformed')} malformed, {sample.count('late')} late, "
            f"{sample.count('too_late')} too late)"
        )
        runs.append(
            run_job(job_b, name, spark, available_now=True, on_batch=lambda b: on_batch(name, b))
        )
    return _summary(bundle, name, runs, Sample(phase1.events + phase2.events))


def _summary(bundle: Bundle, name: str, runs: list[JobRun], both: Sample) -> JobSummary:
    """What the runs report and the tables hold, beside what the produced sample implies."""
    rows, events, version = table_figures(bundle, name)
    last = runs[-1]
    return JobSummary(
        job=name,
        produced=len(both.events),
        expected_malformed=both.count("malformed"),
        expected_dropped=both.count("too_late"),
        expected_in_table=both.count("on_time", "late"),
        input_rows=sum(r.input_rows for r in runs),
        malformed_rows=sum(r.malformed_rows for r in runs),
        dropped_by_watermark=sum(r.dropped_by_watermark for r in runs),
        table_rows=rows,
        table_events=events,
        table_version=version,
        batches=sum(len(r.batches) for r in runs),
        lag_end=last.lag_end,
        table_uri=last.table_uri,
        bronze_rows=row_count(last.bronze_uri),
        quarantined_rows=row_count(last.quarantine_uri),
        expected_bronze=both.count("on_time", "late", "too_late"),
    )
