"""Exactly once across a stop and a restart from the checkpoint, and a replayed sink batch.

A query stopped mid-stream (a batch possibly cut off halfway) and started again from its
checkpoint must leave the table exactly as one uninterrupted run would: no record counted twice,
none missing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from streamops.bundle.models import Trigger
from streamops.demo.sample import Sample, generate, produce, utc
from streamops.localstack import LocalStack
from streamops.pipeline.commit_meta import BatchCommit, from_commit_info
from streamops.pipeline.progress import BatchProgress
from streamops.pipeline.sinks import BatchWrite, GoldWriter, SinkSpec, ensure_table
from streamops.runner.job import run_job
from streamops.runner.stopping import StopRequest
from tests.integration.helpers import expected_hourly, kafka_conf, local_bundle, table_rows

START = utc("2026-11-24T06:00:00Z")


@pytest.mark.slow
def test_stop_mid_stream_then_restart_is_exactly_once(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4, prefix="claims-restart")
    bundle = local_bundle(
        tmp_path, topics={"claims": topic},
        jobs={"claims_hourly": {
            "trigger": Trigger.model_validate({"processing_time": "1 second"}),
            "max_offsets_per_trigger": 300,
        }},
    )  # fmt: skip
    job = bundle.job("claims_hourly")
    phase1 = generate(job, partitions=4, start=START, span=timedelta(hours=2), n=1600,
                      malformed=12, late=9, too_late=3, seed=31)  # fmt: skip
    phase2 = generate(job, partitions=4, start=START + timedelta(hours=2), span=timedelta(hours=2),
                      n=800, malformed=7, late=6, too_late=4, seed=32, first_index=1600)  # fmt: skip
    produce(kafka_conf(bundle), topic, phase1)

    # Run 1: the bundle's processingTime trigger (1 s here); asked to stop (as SIGTERM does) as
    # soon as gold has completed two batches, so the job stops while it still has phase 1 to
    # read (the batches running then are cut off and must be replayed from the checkpoints).
    stop = StopRequest()

    def stop_after_two(b: BatchProgress) -> None:
        if b.query_name == job.query_name and b.batch_id >= 1:
            stop.request("test")

    run1 = run_job(bundle, "claims_hourly", spark, timeout_s=300, on_batch=stop_after_two,
                   stop=stop)  # fmt: skip
    assert not any(q.name == job.query_name for q in spark.streams.active)
    assert len(run1.batches) >= 2 and run1.input_rows < len(phase1.events)
    assert [b.batch_id for b in run1.batches] == list(range(len(run1.batches)))

    # More events arrive while the query is down; run 2 catches up on all of it.
    produce(kafka_conf(bundle), topic, phase2)
    run2 = run_job(bundle, "claims_hourly", spark, available_now=True, timeout_s=300)
    assert min(b.batch_id for b in run2.batches) > max(b.batch_id for b in run1.batches)
    assert min(b.batch_id for b in run2.bronze_batches) > max(
        b.batch_id for b in run1.bronze_batches
    )

    both = Sample(phase1.events + phase2.events)
    # Each record went into exactly one completed batch over the two runs.
    assert run1.input_rows + run2.input_rows == len(both.events)
    assert run1.malformed_rows + run2.malformed_rows == both.count("malformed")
    assert run1.dropped_by_watermark + run2.dropped_by_watermark == both.count("too_late")
    assert all(n == 0 for parts in run2.lag_end.values() for n in parts.values())

    expected = expected_hourly(both.valid_events(), ("claim_type", "region"), "claim_amount")
    rows = table_rows(run2.table_uri, ("claim_type", "region"))
    assert set(rows) == set(expected)
    for key, amounts in expected.items():
        assert rows[key]["claims"] == len(amounts), key
        assert rows[key]["total_amount"] == pytest.approx(sum(amounts), rel=1e-9), key
        assert rows[key]["avg_amount"] == pytest.approx(sum(amounts) / len(amounts), rel=1e-9)
    # The table remembers the last batch it took from this query: the last one run 2 ran
    # with rows (a batch without output commits nothing).
    dt = DeltaTable(run2.table_uri)
    written = [w.batch_id for w in run1.writes + run2.writes if w.rows > 0 and not w.skipped]
    last = max(written)
    assert dt.transaction_version(job.query_name) == last
    before = (dt.version(), rows)

    # A crash right after the sink committed batch `last`, before Spark recorded the batch as
    # done: its commit file (and every later batch's files) are missing. The restart replays
    # batch `last` with the same offsets; the sink must skip it (and still run the plan, or the
    # state store's validation fails the query), leaving the table untouched.
    forget_batches_from(Path(run2.checkpoint), last)
    run3 = run_job(bundle, "claims_hourly", spark, available_now=True, timeout_s=300)
    assert run3.batches[0].batch_id == last
    assert (
        run3.batches[0].input_rows == next(b for b in run2.batches if b.batch_id == last).input_rows
    )
    assert (run3.writes[0].batch_id, run3.writes[0].rows, run3.writes[0].skipped) == (last, 0, True)
    assert all(w.rows == 0 for w in run3.writes)
    dt = DeltaTable(run2.table_uri)
    assert (dt.version(), table_rows(run2.table_uri, ("claim_type", "region"))) == before


def forget_batches_from(checkpoint: Path, batch_id: int) -> None:
    """Remove the commit of `batch_id` and everything Spark logged for later batches."""
    for n in range(batch_id, batch_id + 1000):
        for kind in ("commits", "offsets") if n > batch_id else ("commits",):
            for name in (str(n), f".{n}.crc"):
                (checkpoint / kind / name).unlink(missing_ok=True)
    assert (checkpoint / "offsets" / str(batch_id)).is_file()


def test_sink_replayed_batch_writes_nothing(spark: SparkSession, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    ends = {0: [{"events": {"0": 3, "1": 2}}], 1: [{"events": {"0": 5, "1": 4}}]}
    spec = SinkSpec(table_uri=str(tmp_path / "table"), app_id="replay_test", mode="append")
    writes: list[BatchWrite] = []

    def writer() -> GoldWriter:
        # A new writer per "process": Spark replays only the first batch after a restart.
        return GoldWriter(spec, lambda b: ends[b], writes.append)

    batch0 = spark.createDataFrame([(i, f"e{i}") for i in range(5)], "id long, name string")
    batch1 = spark.createDataFrame([(i, f"e{i}") for i in range(5, 9)], "id long, name string")

    ensure_table(spark, spec.table_uri, batch0.schema)  # as the gold query's start does
    writer()(batch0, 0)
    dt = DeltaTable(spec.table_uri)
    v0 = dt.version()
    assert dt.to_pyarrow_table().num_rows == 5
    assert dt.transaction_version("replay_test") == 0
    assert from_commit_info(dt.history(1)[0]) == BatchCommit(
        "replay_test", 0, ({"events": {"0": 3, "1": 2}},), txn_version=0
    )

    # Spark replays batch 0 after a crash: same id, same data. Nothing may be added.
    writer()(batch0, 0)
    dt = DeltaTable(spec.table_uri)
    assert (dt.version(), dt.to_pyarrow_table().num_rows) == (v0, 5)
    assert writes[-1] == BatchWrite(0, 0, None, True, writes[-1].seconds)

    # The next batch is written, with its own end offsets; replaying it is then a no-op.
    w = writer()
    w(batch1, 1)
    writer()(batch1, 1)
    dt = DeltaTable(spec.table_uri)
    assert dt.version() == v0 + 1
    assert sorted(dt.to_pyarrow_table().column("id").to_pylist()) == list(range(9))
    assert dt.transaction_version("replay_test") == 1
    assert from_commit_info(dt.history(1)[0]) == BatchCommit(
        "replay_test", 1, ({"events": {"0": 5, "1": 4}},), txn_version=1
    )
    assert [(w.batch_id, w.rows, w.skipped) for w in writes] == [
        (0, 5, False), (0, 0, True), (1, 4, False), (1, 0, True),
    ]  # fmt: skip


def test_delta_skips_a_batch_it_already_holds_even_unasked(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Delta's own txnAppId/txnVersion check is the last line: a writer that believes the batch
    is new (no replay check) still adds nothing for a batch id the table already holds."""
    from deltalake import DeltaTable

    spec = SinkSpec(table_uri=str(tmp_path / "t"), app_id="q", mode="append")
    w = GoldWriter(spec, lambda b: [])
    df = spark.createDataFrame([(1,), (2,)], "id long")
    ensure_table(spark, spec.table_uri, df.schema)
    w(df, 0)
    w._last = -1  # the writer's own replay check now passes batch 0 as new
    w(df, 0)
    assert DeltaTable(spec.table_uri).to_pyarrow_table().num_rows == 2
