"""Kafka offsets as Spark's Kafka source keeps them: {"topic": {"0": 42, "1": 17}}."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamops.errors import KafkaError

# {"topic": {"partition as str": offset}}, exactly the built-in source's JSON.
Offsets = dict[str, dict[str, int]]


def client_config(bootstrap_servers: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Consumer settings for metadata and reads; a fetch must not wait for data that is not there."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": "streamops-metadata",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        # Reads stop at a known end offset: a fetch must not wait for records that never come.
        "fetch.wait.max.ms": 10,
        "socket.timeout.ms": 10000,
        "session.timeout.ms": 10000,
    }
    conf.update(extra or {})
    return conf


def topic_partitions(consumer: Consumer, topic: str, *, timeout: float = 10.0) -> list[int]:
    """Partition ids of `topic`; KafkaError naming the topic if it does not exist."""
    try:
        md = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(f"cannot read metadata of topic '{topic}': {exc}") from exc
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        why = f" ({t.error.str()})" if t is not None and t.error is not None else ""
        raise KafkaError(f"topic '{topic}' does not exist on the broker{why}")
    return sorted(t.partitions)


def watermarks(
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    *,
    timeout: float = 10.0,
) -> dict[int, tuple[int, int]]:
    """(earliest, end) per partition: the broker's log start offset and high watermark."""
    out: dict[int, tuple[int, int]] = {}
    for p in partitions:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        except KafkaException as exc:
            raise KafkaError(f"cannot read the offsets of '{topic}' [{p}]: {exc}") from exc
        out[p] = (low, high)
    return out


def earliest_offset(conf: dict[str, str], topic: str, partition: int) -> int:
    """Where the broker's log of `topic`[`partition`] starts now (after retention), or KafkaError.

    `conf`: librdkafka settings (`KafkaClientSettings.librdkafka()`), security included.
    """
    consumer = Consumer(client_config(conf["bootstrap.servers"], conf))
    try:
        return watermarks(consumer, topic, [partition])[partition][0]
    finally:
        consumer.close()


def lag(latest: Offsets | None, end: Offsets | None) -> dict[str, dict[str, int]]:
    """Records behind per partition: latest available minus the batch's end offset."""
    if not latest:
        return {}
    out: dict[str, dict[str, int]] = {}
    for topic, parts in latest.items():
        done = (end or {}).get(topic, {})
        out[topic] = {
            p: max(0, off - done.get(p, 0))
            for p, off in sorted(parts.items(), key=lambda x: int(x[0]))
        }
    return out
