"""Spark's Kafka source with the options streamops builds from the bundle (SASL login included),
against the real broker: exact offset ranges, read limits, reported latest offsets, restarts from
the checkpoint, and starting offsets as reconstruction writes them.

Every record's value names its own place ("<partition>:<offset>"), so a test sees at once when a
record is read twice, skipped, or read from the wrong place.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from streamops.bundle import Bundle
from streamops.localstack import LocalStack
from streamops.pipeline.bronze import kafka_options
from streamops.pipeline.kafka_source import read_kafka
from tests.integration.helpers import kafka_conf, local_bundle

# Spark's Kafka source schema (KafkaRecordToRowConverter.kafkaSchema): what bronze() expects.
BUILTIN_KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        StructField("topic", StringType(), True),
        StructField("partition", IntegerType(), True),
        StructField("offset", LongType(), True),
        StructField("timestamp", TimestampType(), True),
        StructField("timestampType", IntegerType(), True),
    ]
)


def produce(
    conf: dict[str, str],
    topic: str,
    counts: dict[int, int],
    *,
    after: dict[int, int] | None = None,
    linger_ms: int = 5,
) -> None:
    """Append counts[p] records to partition p; each value is "<p>:<its offset>".

    `after[p]` is how many records partition p holds already (none by default).
    """
    producer = Producer({**conf, "linger.ms": linger_ms, "acks": "all"})
    failed: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for p, n in counts.items():
        first = (after or {}).get(p, 0)
        for i in range(first, first + n):
            producer.produce(topic, key=f"k{i}".encode(), value=f"{p}:{i}".encode(), partition=p,
                             on_delivery=on_delivery)  # fmt: skip
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not failed, failed


@dataclass
class Collected:
    """What a foreachBatch saw: one list of rows per batch id, and the DataFrame schemas."""

    # batch id -> (partition, offset, key, value, topic, timestamp, timestampType) per record
    batches: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)
    schemas: list[StructType] = field(default_factory=list)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        self.schemas.append(df.schema)
        rows = df.select(
            "partition", "offset", "key", "value", "topic", "timestamp", "timestampType"
        )
        assert batch_id not in self.batches, f"batch {batch_id} delivered twice"
        self.batches[batch_id] = [tuple(r) for r in rows.collect()]

    def places(self) -> Counter[tuple[int, int]]:
        return Counter((r[0], r[1]) for rows in self.batches.values() for r in rows)


def _bundle(tmp_path: Path, topic: str, max_offsets: int | None) -> Bundle:
    return local_bundle(tmp_path, topics={"claims": topic},
                        jobs={"claims_hourly": {"max_offsets_per_trigger": max_offsets}})  # fmt: skip


def run_stream(
    spark: SparkSession,
    bundle: Bundle,
    checkpoint: Path,
    *,
    starting: str | None = None,
    sink: Callable[[DataFrame, int], None] | None = None,
) -> tuple[Collected, Any]:
    """Read the claims topic with availableNow, through the options the bronze query uses."""
    collected = Collected()
    opts = kafka_options(bundle, bundle.job("claims_hourly"), starting_offsets=starting)
    assert "kafka.sasl.jaas.config" in opts  # the session broker's SASL listener
    df = read_kafka(spark, opts)
    assert df.schema == BUILTIN_KAFKA_SCHEMA
    query = (
        df.writeStream.queryName(f"src_{uuid.uuid4().hex[:8]}")
        .option("checkpointLocation", str(checkpoint))
        .foreachBatch(sink or collected)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return collected, query


def expected_places(ranges: dict[int, range]) -> Counter[tuple[int, int]]:
    return Counter((p, o) for p, r in ranges.items() for o in r)


def _source(query: Any) -> dict[str, Any]:
    return dict(json.loads(query.lastProgress.json)["sources"][0])


def latest_offset(query: Any) -> dict[str, dict[str, int]]:
    latest = _source(query)["latestOffset"]
    return json.loads(latest) if isinstance(latest, str) else latest


def test_exact_offset_ranges_read_limit_and_schema(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4, prefix="src-exact")
    counts = {0: 300, 1: 250, 2: 170, 3: 37}
    max_offsets = 100
    bundle = _bundle(tmp_path, topic, max_offsets)
    # SASL only: the job's Spark source and this producer log in on the SASL listener.
    sasl = local_stack.broker_endpoints().sasl
    opts = kafka_options(bundle, bundle.job("claims_hourly"))
    assert (
        opts["kafka.bootstrap.servers"] == sasl
        and opts["kafka.security.protocol"] == "SASL_PLAINTEXT"
    )
    assert kafka_conf(bundle)["bootstrap.servers"] == sasl
    produce(kafka_conf(bundle), topic, counts)

    got, query = run_stream(spark, bundle, tmp_path / "ck")

    # Every offset of every partition exactly once, nothing else.
    assert got.places() == expected_places({p: range(n) for p, n in counts.items()})
    # The read limit holds for each batch, so the read took several batches.
    sizes = {b: len(rows) for b, rows in got.batches.items()}
    assert all(0 < n <= max_offsets for n in sizes.values()), sizes
    assert len(sizes) >= -(-sum(counts.values()) // max_offsets)
    assert sorted(sizes) == list(range(len(sizes)))
    # Each record is the one produced at that place, with the built-in source's columns.
    for rows in got.batches.values():
        for p, off, key, value, t, ts, ts_type in rows:
            assert (bytes(value), bytes(key), t) == (
                f"{p}:{off}".encode(),
                f"k{off}".encode(),
                topic,
            )
            assert ts is not None
            assert ts_type == 0  # CreateTime
    assert got.schemas and all(s == BUILTIN_KAFKA_SCHEMA for s in got.schemas)
    # Batches take equal shares of each partition: the first batch reads from all four.
    assert {p for p, *_ in got.batches[0]} == {0, 1, 2, 3}

    # (b) reportLatestOffset: the progress shows the partitions' true ends, and the end offset
    # of the last batch reaches them (no lag left).
    assert latest_offset(query) == {topic: {str(p): n for p, n in counts.items()}}
    end = _source(query)["endOffset"]
    assert (json.loads(end) if isinstance(end, str) else end) == latest_offset(query)


def test_restart_from_checkpoint_reads_only_new_records(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4, prefix="src-restart")
    first = {0: 40, 1: 30, 2: 20, 3: 10}
    bundle = _bundle(tmp_path, topic, 35)
    produce(kafka_conf(bundle), topic, first)
    got1, _ = run_stream(spark, bundle, tmp_path / "ck")
    assert got1.places() == expected_places({p: range(n) for p, n in first.items()})

    # Nothing new: a restart runs no batch at all.
    got_none, _ = run_stream(spark, bundle, tmp_path / "ck")
    assert got_none.batches == {}

    more = {0: 5, 1: 0, 2: 25, 3: 12}
    produce(kafka_conf(bundle), topic, more, after=first)
    got2, query = run_stream(spark, bundle, tmp_path / "ck")
    assert got2.places() == expected_places({p: range(first[p], first[p] + more[p]) for p in first})
    # Batch ids continue from the checkpoint rather than starting over.
    assert min(got2.batches) > max(got1.batches)
    assert latest_offset(query) == {topic: {str(p): first[p] + more[p] for p in first}}


def test_starting_offsets_json(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4, prefix="src-start")
    counts = {0: 20, 1: 20, 2: 20, 3: 20}
    bundle = _bundle(tmp_path, topic, None)
    produce(kafka_conf(bundle), topic, counts)
    # A specific offset, earliest (-2), latest (-1), and another specific offset.
    starting = json.dumps({topic: {"0": 5, "1": -2, "2": -1, "3": 19}})
    got, _ = run_stream(spark, bundle, tmp_path / "ck", starting=starting)
    assert got.places() == expected_places(
        {0: range(5, 20), 1: range(20), 2: range(0), 3: range(19, 20)}
    )

    # "latest" starts after the records that exist (Spark still runs its first batch, empty);
    # a restart then reads only what came later.
    got_latest, _ = run_stream(spark, bundle, tmp_path / "ck2", starting="latest")
    assert got_latest.places() == Counter()
    produce(kafka_conf(bundle), topic, {1: 3, 3: 1}, after=counts)
    got_after, _ = run_stream(spark, bundle, tmp_path / "ck2", starting="latest")
    assert got_after.places() == expected_places({1: range(20, 23), 3: range(20, 21)})
