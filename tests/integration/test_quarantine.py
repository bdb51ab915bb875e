"""Nothing silently dropped: every bad record lands in quarantine with its reason, every good one
in bronze, late ones stay in bronze and are listed by the late report."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable

from streamops.bundle.models import EventTypeSpec
from streamops.demo.sample import generate, produce, utc
from streamops.localstack import LocalStack
from streamops.monitoring.late_report import late_report
from streamops.runner.job import run_job
from tests.integration.helpers import kafka_conf, local_bundle

START = utc("2026-11-24T06:00:00Z")
GOOD = {
    "claim_id": "CLM-1",
    "policy_id": "POL-1",
    "claim_type": "auto",
    "region": "north",
    "claim_amount": 100.5,
    "event_time": "2026-11-24T06:10:00.000Z",
}


def _v(**changes: object) -> bytes:
    ev = dict(GOOD)
    for k, v in changes.items():
        if v is None:
            ev.pop(k)
        else:
            ev[k] = v
    return json.dumps(ev).encode()


# (key, value, expected reason). Each is one way production data goes wrong.
BAD: list[tuple[bytes | None, bytes | None, str]] = [
    (b"k1", b'{"claim_id": "CLM-1", "claim_type": ', "invalid_json"),
    (b"k2", b'\xff\xfe{"claim_id": 1}', "invalid_encoding"),
    (b"k3", b'["not", "an", "object"]', "not_a_json_object"),
    (b"k4", _v(claim_amount="a lot"), "wrong_type:claim_amount"),
    (b"k5", _v(region=None), "missing_field:region"),
    (b"k6", _v(event_time="yesterday at noon"), "unparseable_event_time"),
    (b"k7", _v(event_time="1970-01-01T00:00:00.000Z"), "event_time_out_of_range"),
    (b"k8", _v(event_time="2099-01-01T00:00:00.000Z"), "event_time_in_future"),
    (b"k9", _v(claim_type="meteor"), "unknown_event_type:claim_type"),
    (None, _v(), "null_key"),
    (b"k10", None, "null_value"),
    (b"k11", _v(policy_id="P" * 3000), "oversize_value"),
    (b"K" * 300, _v(), "oversize_key"),
]


@pytest.mark.slow
def test_every_bad_record_is_quarantined_with_its_reason(
    tmp_path: Path, spark, local_stack: LocalStack, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    bundle = local_bundle(
        tmp_path,
        topics={"claims": topic},
        jobs={
            "claims_hourly": {
                "max_event_bytes": 2000,
                "max_key_bytes": 256,
                "max_offsets_per_trigger": 200,
                "event_type": EventTypeSpec(
                    field="claim_type", values=["auto", "property", "health", "liability", "travel"]
                ),
            }
        },
    )
    job = bundle.job("claims_hourly")
    sample = generate(job, partitions=2, start=START, span=timedelta(hours=2), n=300, late=5)
    produce(kafka_conf(bundle), topic, sample)
    # The bad records, each at a known partition and offset (after the good ones on partition 1).
    p = Producer({**kafka_conf(bundle), "log_level": 3})
    bad_at: dict[int, str] = {}
    first = sum(e.partition == 1 for e in sample.events)
    for i, (key, value, reason) in enumerate(BAD):
        p.produce(topic, key=key, value=value, partition=1)
        bad_at[first + i] = reason
    assert p.flush(30) == 0

    run = run_job(bundle, "claims_hourly", spark, available_now=True)

    produced = len(sample.events) + len(BAD)
    q = DeltaTable(bundle.quarantine_location(job)).to_pyarrow_table().to_pylist()
    got = {(r["kafka_partition"], r["kafka_offset"]): r for r in q}
    assert len(got) == len(q) == len(BAD), "each bad record exactly once"
    for offset, reason in bad_at.items():
        row = got[(1, offset)]
        assert row["reason"] == reason
        assert row["query_name"] == "claims_hourly_bronze"
        assert row["kafka_topic"] == topic
        key, value, _ = BAD[offset - first]
        assert row["key"] == key and row["value"] == value  # raw bytes kept as they came
        assert row["kafka_timestamp"] is not None and row["batch_id"] >= 0

    bronze = DeltaTable(bundle.bronze_location(job)).to_pyarrow_table()
    coords = list(
        zip(
            bronze.column("kafka_partition").to_pylist(),
            bronze.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert len(coords) == len(set(coords)) == len(sample.events), "each good record exactly once"
    assert set(bronze.column("claim_id").to_pylist()) == {
        e.event["claim_id"] for e in sample.events if e.event
    }

    # Per batch and in total: input = good + quarantined.
    for w in run.bronze_writes:
        assert w.skipped is False
    assert run.bronze_input_rows == produced
    assert run.quarantined_rows == len(BAD)
    assert sum(w.rows for w in run.bronze_writes) + run.quarantined_rows == produced
    # Gold reads bronze, not Kafka: exactly the good records, none of the quarantined ones.
    assert run.input_rows == produced and run.malformed_rows == len(BAD)
    assert run.gold_input_rows == len(sample.events)

    assert late_report(bundle, "claims_hourly") == []  # nothing late yet: gold has it all

    # Too-late events after a restart: Spark drops rows older than the watermark of the batch
    # before last, so within one run they would need two batches to pass first; the restart
    # restores the watermark from the checkpoint, so they are dropped at once.
    late = generate(job, partitions=2, start=START + timedelta(hours=2), span=timedelta(hours=1),
                    n=0, too_late=3, first_index=10_000)  # fmt: skip
    produce(kafka_conf(bundle), topic, late)
    run2 = run_job(bundle, "claims_hourly", spark, available_now=True)
    assert run2.dropped_by_watermark == 3
    # Late events stay in bronze; the late report names exactly the windows gold missed.
    bronze_ids = set(
        DeltaTable(bundle.bronze_location(job)).to_pyarrow_table().column("claim_id").to_pylist()
    )
    assert {e.event["claim_id"] for e in late.events if e.event} <= bronze_ids
    missed = late_report(bundle, "claims_hourly")
    assert sum(m.missed for m in missed) == 3
    too_late_windows = {
        (
            e.event["event_time"].replace(minute=0, second=0, microsecond=0).isoformat(),
            e.event["claim_type"],
            e.event["region"],
        )
        for e in late.events
        if e.event
    }
    assert {
        (m.window_start, m.group["claim_type"], m.group["region"]) for m in missed
    } == too_late_windows
