"""A join reads its other side with that source's own settings, not the job's.

The job's source is read through the local broker's SASL listener (its generated login); the
joined source is on the PLAINTEXT listener (`sources.<s>.bootstrap_servers` and `security`).
Gold then runs with the job's own login broken: only a reader that uses the joined source's
settings can still read the other side.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from pydantic import TypeAdapter
from pyspark.sql import SparkSession

from streamops.bundle import Bundle
from streamops.bundle.models import KafkaSecurity, Step
from streamops.errors import KafkaError
from streamops.kafka.preflight import wait_for_broker
from streamops.localstack import KafkaEndpoints, LocalStack
from streamops.runner.job import run_job
from tests.integration.helpers import delta_rows, local_bundle

JOB = "claims_hourly"
# The join as bundle.yml declares it (`steps:`), each claim joined with its policy's payments.
STEPS = [
    {"watermark": {"column": "event_time", "delay": "30 minutes"}},
    {
        "join": {
            "source": "transactions",
            "schema": {"policy_id": "string", "amount": "double", "paid_at": "timestamp"},
            "watermark": {"column": "paid_at", "delay": "1 hour"},
            "on": ["policy_id"],
            "within": "1 hour",
        }
    },
]


def _with_source(bundle: Bundle, name: str, **update: Any) -> Bundle:
    src = bundle.spec.sources[name].model_copy(update=update)
    sources = {**bundle.spec.sources, name: src}
    return dataclasses.replace(bundle, spec=bundle.spec.model_copy(update={"sources": sources}))


def _produce(conf: dict[str, str], topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({**conf, "acks": "all"})
    for e in events:
        producer.produce(topic, key=e["policy_id"].encode(), value=json.dumps(e).encode())
    assert producer.flush(30) == 0


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.mark.slow
def test_a_join_reads_its_other_source_with_that_sources_settings(
    spark: SparkSession,
    local_stack: LocalStack,
    kafka_endpoints: KafkaEndpoints,
    new_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claims, payments = new_topic(prefix="claims"), new_topic(prefix="payments")
    steps = TypeAdapter(list[Step]).validate_python(STEPS)
    bundle = local_bundle(
        tmp_path,
        topics={"claims": claims, "transactions": payments},
        jobs={JOB: {"steps": steps}},
    )
    bundle = _with_source(
        bundle,
        "transactions",
        bootstrap_servers=kafka_endpoints.plaintext,
        security=KafkaSecurity(protocol="PLAINTEXT"),
    )
    job_side, other_side = (bundle.runtime.kafka_for(s) for s in ("claims", "transactions"))
    assert (job_side.bootstrap_servers, job_side.protocol) == (
        kafka_endpoints.sasl,
        "SASL_PLAINTEXT",
    )
    assert (other_side.bootstrap_servers, other_side.protocol) == (
        kafka_endpoints.plaintext,
        "PLAINTEXT",
    )

    now = datetime.now(UTC).replace(microsecond=0)
    claim_rows = [
        {
            "claim_id": f"c{i}",
            "policy_id": f"p{i}",
            "claim_type": "auto",
            "region": "north",
            "claim_amount": 100.0 + i,
            "event_time": _iso(now - timedelta(minutes=10)),
        }
        for i in range(5)
    ]
    paid = [
        {"policy_id": p, "amount": a, "paid_at": _iso(now - timedelta(minutes=5))}
        for p, a in (("p0", 10.0), ("p1", 11.0), ("p2", 12.0), ("p9", 99.0))
    ]
    _produce(job_side.librdkafka(), claims, claim_rows)
    _produce(other_side.librdkafka(), payments, paid)

    bronze = run_job(bundle, JOB, spark, available_now=True, queries=("bronze",), timeout_s=300)
    assert bronze.input_rows == 5 and bronze.quarantined_rows == 0

    # The job's own login now fails: a reader of the other side that took the job's settings
    # (its listener, its login) could not read the payments any more.
    monkeypatch.setenv("JOIN_TEST_USER", kafka_endpoints.username)
    monkeypatch.setenv("JOIN_TEST_PASSWORD", "not-the-password")
    broken = _with_source(
        bundle,
        "claims",
        security=KafkaSecurity.model_validate(
            {
                "protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "username": "{{env/JOIN_TEST_USER}}",
                "password": "{{env/JOIN_TEST_PASSWORD}}",
            }
        ),
    )
    with pytest.raises(KafkaError, match="refused the login"):
        wait_for_broker(broken.runtime.kafka_for("claims").librdkafka(), attempts=1)

    gold = run_job(broken, JOB, spark, available_now=True, queries=("gold",), timeout_s=300)
    assert gold.gold_input_rows == 5 + 4  # claims from bronze, payments from their topic
    joined = {(r["claim_id"], r["policy_id"], r["amount"]) for r in delta_rows(gold.table_uri)}
    assert joined == {("c0", "p0", 10.0), ("c1", "p1", 11.0), ("c2", "p2", 12.0)}
