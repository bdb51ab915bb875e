"""Kafka faults at start and mid-stream: clear errors that name the place and the fix."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from streamops.errors import KafkaError
from streamops.kafka.preflight import check_source, wait_for_broker
from streamops.spark.kafka_source import KafkaStreamReader
from tests.integration.helpers import local_bundle


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return f"127.0.0.1:{port}"


def test_unreachable_broker_retries_with_backoff_then_names_the_servers() -> None:
    waits: list[float] = []
    said: list[str] = []
    bootstrap = _closed_port()
    with pytest.raises(KafkaError) as info:
        wait_for_broker(
            bootstrap, attempts=4, first_backoff_s=0.5, sleep=waits.append, say=said.append
        )
    assert waits == [0.5, 1.0, 2.0]  # exponential backoff between the 4 attempts
    assert len(said) == 3
    msg = str(info.value)
    assert bootstrap in msg and "after 4 attempts" in msg and "Fix:" in msg


def test_missing_topic_names_the_topic_and_the_bundle_path(
    tmp_path: Path, bootstrap_servers: str
) -> None:
    bundle = local_bundle(tmp_path, bootstrap_servers, topics={"claims": "no.such.topic"})
    with pytest.raises(KafkaError) as info:
        check_source(bundle, "claims_hourly", bootstrap_servers, cores=2, say=lambda _m: None)
    msg = str(info.value)
    assert "'no.such.topic'" in msg and "sources.claims.topic" in msg and "bundle.yml" in msg


def test_partitions_vs_cores_are_logged_and_warned(
    tmp_path: Path, bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    bundle = local_bundle(tmp_path, bootstrap_servers, topics={"telemetry": topic})
    said: list[str] = []
    warnings = check_source(bundle, "telemetry_5min", bootstrap_servers, cores=2, say=said.append)
    assert any("2 partitions; 2 cores available; repartition: 16" in s for s in said)
    # The bundle declares 8 partitions; the topic has 2.
    assert any("declares 8" in w for w in warnings)
    warnings = check_source(bundle, "telemetry_5min", bootstrap_servers, cores=8, say=said.append)
    assert not any("idle" in w for w in warnings)  # repartition is set
    many = check_source(bundle, "telemetry_5min", bootstrap_servers, cores=1, say=said.append)
    assert not any("far exceed" in w for w in many)  # 2 partitions on 1 core is fine


class _RetentionReader(KafkaStreamReader):
    """The real reader, with the broker's earliest offset moved up as retention would do.

    (The local broker cannot delete records, so the retention boundary is set here.)
    """

    earliest = 40

    def _watermarks(self) -> dict[str, dict[int, tuple[int, int]]]:
        wm = super()._watermarks()
        return {
            t: {p: (max(lo, self.earliest), hi) for p, (lo, hi) in parts.items()}
            for t, parts in wm.items()
        }


def _reader(bootstrap: str, topic: str, **opts: str) -> _RetentionReader:
    return _RetentionReader({"kafka.bootstrap.servers": bootstrap, "subscribe": topic, **opts})


def test_lost_offsets_fail_by_default_naming_partitions_and_range(
    bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    from streamops.demo.sample import Sample, SampleEvent, produce

    topic = new_topic(partitions=2)
    produce(
        bootstrap_servers,
        topic,
        Sample([SampleEvent(b"k", b"{}", i % 2, "on_time", None) for i in range(200)]),
    )
    reader = _reader(bootstrap_servers, topic)
    with pytest.raises(KafkaError) as info:
        reader.partitions({topic: {"0": 10, "1": 10}}, {topic: {"0": 100, "1": 100}})
    msg = str(info.value)
    assert f"{topic}[0] offsets 10..39" in msg and f"{topic}[1] offsets 10..39" in msg
    assert "fail_on_data_loss: false" in msg
    reader.stop()


def test_lost_offsets_skipped_and_counted_when_allowed(
    tmp_path: Path, bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    from streamops.demo.sample import Sample, SampleEvent, produce

    topic = new_topic(partitions=2)
    produce(
        bootstrap_servers,
        topic,
        Sample([SampleEvent(b"k", b"{}", i % 2, "on_time", None) for i in range(200)]),
    )
    log = tmp_path / "lost.jsonl"
    reader = _reader(
        bootstrap_servers, topic, failOnDataLoss="false", **{"streamops.lossLog": str(log)}
    )
    ranges = reader.partitions({topic: {"0": 10, "1": 50}}, {topic: {"0": 100, "1": 100}})
    assert [(r.partition, r.start, r.until) for r in ranges] == [(0, 40, 100), (1, 50, 100)]
    assert reader.skipped_records == 30
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines == [
        dict(lines[0], topic=topic, partition=0, **{"from": 10, "to": 40, "skipped": 30})
    ]
    reader.stop()
