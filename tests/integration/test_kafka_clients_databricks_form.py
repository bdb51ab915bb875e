"""Kafka security in the form a Databricks job gets it: bundle.yml names `{{secrets/...}}`
credentials, the job cluster's environment carries them (spark_env_vars), and every librdkafka
client (preflight, offsets, consumer-group commits, offset reconstruction's consumer) logs in to
the local broker's SASL listener with the same resolved settings that give Spark the shaded JAAS
module."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from streamops.bundle import Bundle, load
from streamops.bundle.models import KafkaSecurity
from streamops.bundle.secrets import parse_secret
from streamops.clock import FakeClock
from streamops.errors import KafkaError
from streamops.kafka.groups import GroupCommitter, group_offsets
from streamops.kafka.offsets import earliest_offset
from streamops.kafka.preflight import wait_for_broker
from streamops.localstack import LocalStack
from tests.unit.helpers import SHIPPED

USER = "{{secrets/streamops-prod/kafka-user}}"
PASSWORD = "{{secrets/streamops-prod/kafka-password}}"


def _prod_on_local_broker(local_stack: LocalStack, topic: str) -> Bundle:
    """The prod target pointed at the session broker's SASL listener, credentials by reference."""
    ep = local_stack.broker_endpoints()
    b = load(SHIPPED, "prod")
    sec = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism=ep.sasl_mechanism,
                        username=parse_secret(USER), password=parse_secret(PASSWORD))  # fmt: skip
    kafka = b.target.kafka.model_copy(update={"bootstrap_servers": ep.sasl, "security": sec})
    target = b.target.model_copy(update={"kafka": kafka})
    sources = {**b.spec.sources, "claims": b.spec.sources["claims"].model_copy(
        update={"topic": topic})}  # fmt: skip
    spec = b.spec.model_copy(update={"targets": {**b.spec.targets, "prod": target},
                                     "sources": sources})  # fmt: skip
    return dataclasses.replace(b, spec=spec)


def test_every_kafka_client_logs_in_with_the_cluster_form_of_the_settings(
    local_stack: LocalStack, new_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ep = local_stack.broker_endpoints()
    topic = new_topic(partitions=2)
    bundle = _prod_on_local_broker(local_stack, topic)
    sec = bundle.target.kafka.security
    assert sec.username is not None and sec.password is not None
    # What spark_env_vars put into the cluster's environment, here with the broker's login.
    monkeypatch.setenv(sec.username.env_var, ep.username)
    monkeypatch.setenv(sec.password.env_var, ep.password)
    kafka = bundle.runtime.kafka_for("claims")
    jaas = kafka.spark_options()["kafka.sasl.jaas.config"]
    assert jaas.startswith("kafkashaded.org.apache.kafka.common.security.")  # Databricks form
    conf = kafka.librdkafka()
    assert conf["security.protocol"] == "SASL_PLAINTEXT" and conf["bootstrap.servers"] == ep.sasl

    assert topic in wait_for_broker(conf, attempts=3, clock=FakeClock())
    assert earliest_offset(conf, topic, 1) == 0
    committer = GroupCommitter(kafka.bootstrap_servers, conf)
    try:
        # A new group's coordinator may still be loading (NOT_COORDINATOR): bounded retries.
        assert any(committer.commit("claims_hourly_bronze_dbx", {topic: {"0": 0, "1": 0}})
                   for _ in range(20))  # fmt: skip
    finally:
        committer.close()
    got = group_offsets(kafka.bootstrap_servers, "claims_hourly_bronze_dbx", topic, [0, 1], conf)
    assert got == {0: 0, 1: 0}

    # The same references with a wrong value are refused by the broker, and the value is not said.
    monkeypatch.setenv(sec.password.env_var, "wrong-password-xyz")
    with pytest.raises(KafkaError) as info:
        wait_for_broker(kafka.librdkafka(), attempts=2, clock=FakeClock())
    assert "refused the login" in str(info.value)
    assert "wrong-password-xyz" not in str(info.value)
