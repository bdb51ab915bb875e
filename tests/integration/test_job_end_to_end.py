"""The shipped jobs end to end on the one data path: Apache Kafka (SASL) -> Spark's Kafka source
-> bronze/quarantine (Delta) -> gold reads bronze as a Delta stream -> watermark -> hourly
windows -> MERGE. The Delta table must hold, for every window and group, exactly the aggregate of
the valid events computed here in Python; malformed and too-late events must be counted, never
written."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from streamops.demo.sample import Sample, generate, produce, utc
from streamops.errors import KafkaError
from streamops.localstack import LocalStack
from streamops.pipeline.commit_meta import from_commit_info
from streamops.runner.job import JobRun, run_job
from tests.integration.helpers import (
    decimal_sum,
    delta_rows,
    expected_hourly,
    kafka_conf,
    local_bundle,
    table_rows,
)

START = utc("2026-11-24T06:00:00Z")


def assert_counts(run: JobRun, sample: Sample) -> None:
    """What the query reports about its input matches what was produced, per kind."""
    assert run.input_rows == len(sample.events)
    assert run.malformed_rows == sample.count("malformed")
    assert run.dropped_by_watermark == sample.count("too_late")
    assert run.lag_end and all(n == 0 for parts in run.lag_end.values() for n in parts.values())


@pytest.mark.slow
def test_claims_hourly_exact_aggregates(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4, prefix="claims")
    # Small batches: the watermark advances batch by batch, so the too-late events (produced
    # last) meet a watermark that drops them, while the late ones are still inside it.
    bundle = local_bundle(
        tmp_path, topics={"claims": topic},
        jobs={"claims_hourly": {"max_offsets_per_trigger": 400}},
    )  # fmt: skip
    job = bundle.job("claims_hourly")
    sample = generate(job, partitions=4, start=START, span=timedelta(hours=3), n=1800,
                      malformed=23, late=17, too_late=6, seed=21)  # fmt: skip
    assert sample.count("malformed") == 23 and sample.count("late") == 17
    assert produce(kafka_conf(bundle, job.source), topic, sample) == len(sample.events)

    run = run_job(bundle, "claims_hourly", spark, available_now=True, timeout_s=300)

    assert len(run.batches) >= 4
    assert_counts(run, sample)
    expected = expected_hourly(sample.valid_events(), ("claim_type", "region"), "claim_amount")
    rows = table_rows(run.table_uri, ("claim_type", "region"))
    assert set(rows) == set(expected)
    for key, amounts in expected.items():
        row = rows[key]
        assert row["claims"] == len(amounts), key
        assert row["total_amount"] == pytest.approx(sum(amounts), rel=1e-9), key
        assert row["avg_amount"] == pytest.approx(sum(amounts) / len(amounts), rel=1e-9), key
    assert sum(r["claims"] for r in rows.values()) == sample.count("on_time", "late")
    # Bronze's newest commit records its batch's end offsets: everything produced, per partition
    # (the codec the reconstruction reads, written by Spark, read back here with delta-rs).
    per_partition = Counter(e.partition for e in sample.events)
    bronze = DeltaTable(run.bronze_uri)
    commits = [c for c in map(from_commit_info, bronze.history()) if c is not None]
    newest = max(commits, key=lambda c: c.batch_id)
    assert newest.query == job.bronze_query_name
    assert newest.kafka_offsets() == {topic: {str(p): n for p, n in per_partition.items()}}
    assert newest.batch_id == bronze.transaction_version(job.bronze_query_name)
    # Gold's commits record its own (Delta source) end offsets and batch ids, exactly once each.
    gold = [c for c in map(from_commit_info, DeltaTable(run.table_uri).history()) if c is not None]
    assert len({c.batch_id for c in gold}) == len(gold) >= 1
    assert max(c.batch_id for c in gold) == DeltaTable(run.table_uri).transaction_version(
        "claims_hourly"
    )
    # Bronze holds every good record once, with its Kafka coordinates.
    coords = [(r["kafka_partition"], r["kafka_offset"]) for r in delta_rows(run.bronze_uri)]
    assert len(coords) == len(set(coords)) == len(sample.events) - sample.count("malformed")


def test_transactions_backfill_exact_decimal_sums(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4, prefix="txns")
    bundle = local_bundle(
        tmp_path, topics={"transactions": topic},
        jobs={"transactions_backfill": {"max_offsets_per_trigger": 400}},
    )  # fmt: skip
    job = bundle.job("transactions_backfill")
    sample = generate(job, partitions=4, start=START, span=timedelta(hours=4), n=1600,
                      malformed=15, late=11, too_late=5, seed=5)  # fmt: skip
    assert produce(kafka_conf(bundle, job.source), topic, sample) == len(sample.events)

    # The job's own trigger: availableNow, as a backfill runs.
    assert job.trigger.available_now
    run = run_job(bundle, "transactions_backfill", spark, timeout_s=300)

    assert_counts(run, sample)
    group = ("merchant_category", "currency")
    expected = expected_hourly(sample.valid_events(), group, "amount")
    rows = table_rows(run.table_uri, group)
    assert set(rows) == set(expected)
    for key, amounts in expected.items():
        row = rows[key]
        assert row["transactions"] == len(amounts), key
        # Decimals end to end: the sum is exact to the cent, not approximately right.
        assert isinstance(row["total_amount"], Decimal) and isinstance(row["max_amount"], Decimal)
        assert row["total_amount"] == decimal_sum(amounts), key
        assert row["max_amount"] == max(amounts), key


def test_missing_topic_raises_kafka_error(
    spark: SparkSession, local_stack: LocalStack, tmp_path: Path
) -> None:
    topic = f"claims-never-created-{uuid.uuid4().hex[:8]}"
    bundle = local_bundle(tmp_path, topics={"claims": topic})
    with pytest.raises(
        KafkaError,
        match=rf"topic '{topic}' \(sources\.claims\.topic in bundle\.yml\) does not exist",
    ) as info:
        run_job(bundle, "claims_hourly", spark, available_now=True, timeout_s=120)
    assert "Fix: create it with 4 partitions" in str(info.value)
