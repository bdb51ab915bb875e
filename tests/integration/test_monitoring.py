"""Per-batch metrics on a real query: lag per partition shows up while the producer is ahead of
maxOffsetsPerTrigger and goes back to zero; each batch's end offsets land in the consumer group
named after the query."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from streamops.demo.sample import generate, produce, utc
from streamops.kafka.groups import group_offsets
from streamops.localstack import LocalStack
from streamops.monitoring import metrics as m
from streamops.runner.job import run_job
from tests.integration.helpers import kafka_conf, local_bundle


@pytest.mark.slow
def test_lag_metrics_and_group_commit(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(2, prefix="mon")
    bundle = local_bundle(tmp_path, topics={"claims": topic},
                          jobs={"claims_hourly": {"max_offsets_per_trigger": 200}})  # fmt: skip
    (tmp_path / "bundle.yml").write_text("")
    bundle = dataclasses.replace(bundle, path=tmp_path / "bundle.yml")  # metrics under tmp_path
    job = bundle.job("claims_hourly")
    sample = generate(job, partitions=2, start=utc("2026-11-24T06:00:00Z"),
                      span=timedelta(hours=1), n=800, malformed=5, late=0, too_late=0, seed=3)  # fmt: skip
    conf = kafka_conf(bundle)
    assert produce(conf, topic, sample) == len(sample.events)
    lines: list[str] = []

    run = run_job(bundle, "claims_hourly", spark, available_now=True, timeout_s=240,
                  queries=("bronze",), say=lines.append)  # fmt: skip

    q = job.bronze_query_name
    points = [
        json.loads(x) for x in (tmp_path / ".cache/metrics" / f"{q}.jsonl").read_text().splitlines()
    ]
    by_batch: dict[int, int] = {}
    for p in points:
        if p["name"] == m.LAG_TOPIC:
            by_batch[p["batch_id"]] = p["value"]
    batches = [b for b in run.bronze_batches if b.input_rows]
    assert len(batches) >= 4
    assert max(by_batch.values()) >= 400  # the producer was ahead: lag showed up
    assert by_batch[max(by_batch)] == 0  # and went back to zero
    parts = {p["partition"] for p in points if p["name"] == m.LAG}
    assert parts == {0, 1}
    assert sum(p["value"] for p in points if p["name"] == m.QUARANTINED) == 5
    assert any(line.startswith(f"[{q} #") and "lag=" in line for line in lines)
    # the consumer group named after the query holds the last batch's end offsets
    end = run.bronze_batches[-1].end_offsets[topic]
    committed = group_offsets(conf["bootstrap.servers"], q, topic, [0, 1], conf)
    assert committed == {int(k): v for k, v in end.items()}
    assert sum(end.values()) == len(sample.events)
