"""Kafka faults at start and mid-stream: clear errors that name the place and the fix."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from streamops.bundle import Bundle
from streamops.clock import FakeClock
from streamops.demo.sample import Sample, SampleEvent, produce
from streamops.errors import KafkaError
from streamops.kafka.preflight import check_source, wait_for_broker
from streamops.localstack import LocalStack
from streamops.runner.job import run_job
from tests.integration.helpers import delta_rows, kafka_conf, local_bundle


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return f"127.0.0.1:{port}"


def test_unreachable_broker_retries_with_backoff_then_names_the_servers() -> None:
    clock = FakeClock()
    said: list[str] = []
    bootstrap = _closed_port()
    with pytest.raises(KafkaError) as info:
        wait_for_broker(
            {"bootstrap.servers": bootstrap},
            attempts=4,
            first_backoff_s=0.5,
            clock=clock,
            say=said.append,
        )
    assert clock.slept == [0.5, 1.0, 2.0]  # exponential backoff between the 4 attempts
    assert len(said) == 3
    msg = str(info.value)
    assert bootstrap in msg and "after 4 attempts" in msg and "Fix:" in msg


def test_missing_topic_names_the_topic_and_the_bundle_path(
    tmp_path: Path, local_stack: LocalStack
) -> None:
    bundle = local_bundle(tmp_path, topics={"claims": "no.such.topic"})
    with pytest.raises(KafkaError) as info:
        check_source(bundle, "claims_hourly", cores=2, say=lambda _m: None)
    msg = str(info.value)
    assert "'no.such.topic'" in msg and "sources.claims.topic" in msg and "bundle.yml" in msg


def test_partitions_vs_cores_are_logged_and_warned(
    tmp_path: Path, local_stack: LocalStack, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    bundle = local_bundle(tmp_path, topics={"telemetry": topic})
    said: list[str] = []
    warnings = check_source(bundle, "telemetry_5min", cores=2, say=said.append)
    assert any("2 partitions; 2 cores available; repartition: 16" in s for s in said)
    # The bundle declares 8 partitions; the topic has 2.
    assert any("declares 8" in w for w in warnings)
    warnings = check_source(bundle, "telemetry_5min", cores=8, say=said.append)
    assert not any("idle" in w for w in warnings)  # repartition is set
    many = check_source(bundle, "telemetry_5min", cores=1, say=said.append)
    assert not any("far exceed" in w for w in many)  # 2 partitions on 1 core is fine


def _produce_and_trim(bundle: Bundle, topic: str, first: int, trim_to: int, total: int) -> None:
    """`first` records per partition, then `total - first` more, then retention (delete_records)
    removes everything below `trim_to` on both partitions."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    def batch(lo: int, hi: int) -> Sample:
        return Sample([SampleEvent(f"k{i}".encode(), b'{"x": 1}', p, "on_time", None)
                       for i in range(lo, hi) for p in (0, 1)])  # fmt: skip

    conf = kafka_conf(bundle)
    produce(conf, topic, batch(first, total))
    admin = AdminClient(conf)
    done = admin.delete_records([TopicPartition(topic, p, trim_to) for p in (0, 1)])
    for fut in done.values():
        fut.result(30)


@pytest.mark.slow
def test_offsets_lost_to_retention_fail_naming_partitions_and_range(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=2, prefix="loss")
    bundle = local_bundle(tmp_path, topics={"claims": topic},
                          jobs={"claims_hourly": {"max_offsets_per_trigger": 100}})  # fmt: skip
    assert bundle.source(bundle.job("claims_hourly")).fail_on_data_loss
    conf = kafka_conf(bundle)
    produce(conf, topic, Sample([SampleEvent(b"k", b'{"x": 1}', p, "on_time", None)
                                 for _ in range(30) for p in (0, 1)]))  # fmt: skip
    run_job(bundle, "claims_hourly", spark, available_now=True, queries=("bronze",))
    # While the job is down, 70 more records arrive per partition and retention removes all
    # below offset 60: offsets 30..59 were never read and are gone.
    _produce_and_trim(bundle, topic, 30, 60, 100)

    with pytest.raises(KafkaError) as info:
        run_job(bundle, "claims_hourly", spark, available_now=True, queries=("bronze",))
    msg = str(info.value)
    assert f"{topic}[" in msg and "offsets 30..59 were deleted" in msg, msg
    assert "fail_on_data_loss: false" in msg and "Fix:" in msg


@pytest.mark.slow
def test_offsets_lost_to_retention_are_skipped_and_counted_when_allowed(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=2, prefix="loss-ok")
    bundle = local_bundle(tmp_path, topics={"claims": topic},
                          jobs={"claims_hourly": {"max_offsets_per_trigger": 1000}})  # fmt: skip
    src = bundle.spec.sources["claims"].model_copy(update={"fail_on_data_loss": False})
    bundle = dataclasses.replace(
        bundle,
        spec=bundle.spec.model_copy(update={"sources": {**bundle.spec.sources, "claims": src}}),
    )
    conf = kafka_conf(bundle)
    produce(conf, topic, Sample([SampleEvent(b"k", b'{"x": 1}', p, "on_time", None)
                                 for _ in range(30) for p in (0, 1)]))  # fmt: skip
    run_job(bundle, "claims_hourly", spark, available_now=True, queries=("bronze",))
    _produce_and_trim(bundle, topic, 30, 60, 100)

    run = run_job(bundle, "claims_hourly", spark, available_now=True, queries=("bronze",))
    assert run.skipped_records == 2 * 30  # offsets 30..59 on both partitions
    assert run.input_rows == 2 * 40  # offsets 60..99 on both partitions
    q = delta_rows(bundle.quarantine_location(bundle.job("claims_hourly")))
    assert sorted({(r["kafka_partition"], r["kafka_offset"]) for r in q}) == sorted(
        (p, o) for p in (0, 1) for o in [*range(30), *range(60, 100)]
    )


def test_wrong_sasl_password_is_one_clear_line(
    tmp_path: Path, local_stack: LocalStack, new_topic: Callable[..., str]
) -> None:
    from streamops.bundle.kafka_settings import GeneratedSecret

    topic = new_topic(partitions=1)
    bundle = local_bundle(tmp_path, topics={"claims": topic})
    good = bundle.runtime.kafka_for("claims")
    bad = dataclasses.replace(good, password=GeneratedSecret("not-the-password"))
    with pytest.raises(KafkaError) as info:
        wait_for_broker(bad.librdkafka(), attempts=2, clock=FakeClock())
    assert "refused the login" in str(info.value) and "not-the-password" not in str(info.value)
