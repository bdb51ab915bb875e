"""Kafka SASL settings resolved at run time, in the form each client wants (one place)."""

from __future__ import annotations

import pytest

from streamops.bundle import load
from streamops.kafka.connect import librdkafka_security, security_options
from tests.stack_fixtures import PROJECT


def test_spark_gets_a_jaas_line_and_librdkafka_separate_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER", "svc-streamops")
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_PASSWORD", "pw-from-scope")
    prod = load(PROJECT / "bundle.yml", "prod")
    spark = security_options(prod)
    assert spark["kafka.security.protocol"] == "SASL_SSL"
    assert 'username="svc-streamops" password="pw-from-scope"' in spark["kafka.sasl.jaas.config"]
    assert librdkafka_security(prod) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc-streamops",
        "sasl.password": "pw-from-scope",
    }
    assert librdkafka_security(load(PROJECT / "bundle.yml", "local")) == {}
