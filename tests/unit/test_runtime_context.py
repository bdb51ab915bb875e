"""The runtime context: one place resolves Kafka settings (Spark and librdkafka forms) and storage
options, secrets stay references until a client asks, and no repr shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamops.bundle import ENV_BOOTSTRAP, load
from streamops.bundle.runtime import GeneratedSecret, KafkaClientSettings

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_BOOTSTRAP, "STREAMOPS_STORAGE_OPTIONS", "STREAMOPS_LOCAL_STACK_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_prod_kafka_settings_in_both_forms_with_the_shaded_login_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER", "svc-claims")
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_PASSWORD", "s3cr3t-pw")
    kafka = load(PROJECT / "bundle.yml", "prod").runtime.kafka_for("claims")

    spark = kafka.spark_options()
    assert spark["kafka.bootstrap.servers"].startswith("kafka-prod-1.internal:9093")
    assert spark["kafka.security.protocol"] == "SASL_SSL"
    assert spark["kafka.sasl.mechanism"] == "PLAIN"
    # Databricks' Kafka client is shaded: the unshaded class would not load there.
    assert spark["kafka.sasl.jaas.config"] == (
        "kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="svc-claims" password="s3cr3t-pw";'
    )
    assert kafka.librdkafka() == {
        "bootstrap.servers": spark["kafka.bootstrap.servers"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc-claims",
        "sasl.password": "s3cr3t-pw",
    }
    assert "s3cr3t-pw" not in repr(kafka) and "svc-claims" not in repr(kafka)


def test_secrets_are_resolved_only_when_a_client_asks() -> None:
    # Loading and building the context needs no secret; asking for client settings does.
    kafka = load(PROJECT / "bundle.yml", "prod").runtime.kafka_for("claims")
    with pytest.raises(Exception, match="STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER"):
        kafka.librdkafka()


def test_local_scram_jaas_is_unshaded_and_escaped() -> None:
    k = KafkaClientSettings(
        "h:1", "SASL_PLAINTEXT", "SCRAM-SHA-512", GeneratedSecret("u"), GeneratedSecret('p"\\q')
    )
    assert k.spark_options()["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="u" password="p\\"\\\\q";'
    )
    assert repr(GeneratedSecret("p")) == "***"


def test_embedded_without_a_running_broker_names_the_fix(tmp_path: Path) -> None:
    import dataclasses

    bundle = dataclasses.replace(
        load(PROJECT / "bundle.yml", "local"), local_stack_dir=tmp_path / "no-stack"
    )
    ctx = bundle.runtime  # building the context needs no broker
    assert ctx.storage_options(str(tmp_path)) is None
    with pytest.raises(Exception, match="embedded") as info:
        ctx.kafka_for("claims")
    assert "streamops local up" in str(info.value)


def test_bootstrap_override_on_local_is_a_plaintext_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, "localhost:9092")
    kafka = load(PROJECT / "bundle.yml", "local").runtime.kafka_for("claims")
    assert kafka.librdkafka() == {"bootstrap.servers": "localhost:9092"}


def test_storage_options_come_from_the_environment_only_for_remote_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", '{"account_name": "acct", "anon": "false"}')
    ctx = load(PROJECT / "bundle.yml", "prod").runtime
    assert ctx.storage_options("abfss://c@acct.dfs.core.windows.net/x") == {
        "account_name": "acct",
        "anon": "false",
    }
    assert ctx.storage_options("/local/path") is None
