"""Spark's Kafka source for one bundle source: its options, its stream, and its lost records.

Every source is read with its own settings (`bundle.source_options`: brokers, login, topic,
starting offsets, data-loss policy), whichever query reads it: the other side of a join on
another cluster is read from that cluster, with that cluster's login.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.errors import DataLossError, KafkaError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from streamops.bundle import Bundle


def source_options(
    bundle: Bundle,
    source: str,
    *,
    reader: str,
    starting_offsets: str | None = None,
    max_offsets: int | None = None,
) -> dict[str, str]:
    """Options of Spark's Kafka source reading bundle source `source`; secrets resolved, never log.

    `reader` names Spark's consumer groups (the query, and the source where a query reads two);
    `starting_offsets` (reconstructed ones) overrides the source's own.
    """
    opts = bundle.source_options(source, reader, starting_offsets)
    if max_offsets:
        opts["maxOffsetsPerTrigger"] = str(max_offsets)
    return opts


def read_kafka(spark: SparkSession, options: dict[str, str]) -> DataFrame:
    """The raw Kafka stream (key, value, topic, partition, offset, timestamp, ...)."""
    return spark.readStream.format("kafka").options(**options).load()


def data_loss_error(bundle: Bundle, source: str, loss: DataLossError) -> DataLossError:
    """The failure for records of `source` deleted by retention before the query read them: which
    partition, which offsets (up to where the broker starts now), and the two ways on."""
    from streamops.kafka.offsets import earliest_offset

    # The broker narrows Spark's batch range to what retention really removed; if it cannot be
    # asked, Spark's range stands and the message says why.
    unsure = ""
    try:
        low = earliest_offset(
            bundle.runtime.kafka_for(source).librdkafka(), loss.topic, loss.partition
        )
        lost_to = min(loss.last_offset, low - 1)
    except KafkaError as exc:
        lost_to, unsure = (
            loss.last_offset,
            f" (at most; the broker's earliest offset is unknown: {exc})",
        )
    return DataLossError(
        f"{loss.topic}[{loss.partition}]: offsets {loss.first_offset}..{lost_to}{unsure} were "
        f"deleted from Kafka (retention) before query '{loss.query}' read them (batch "
        f"{loss.batch_id}); nothing of that batch was written. Fix: replay those records into "
        f"the topic if they can be, or set `sources.{source}.fail_on_data_loss: false` in "
        f"{bundle.path.name} to skip them (every skipped record is counted and reported), then "
        "restart the job",
        topic=loss.topic,
        partition=loss.partition,
        first_offset=loss.first_offset,
        last_offset=lost_to,
        batch_id=loss.batch_id,
        query=loss.query,
    )
