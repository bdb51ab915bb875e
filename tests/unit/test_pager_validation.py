"""Pagers that can reach someone: a Databricks target must page through PagerDuty or a webhook,
and every secret its cluster reads must be one the cluster can resolve ({{secrets/...}})."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamops.bundle import load
from streamops.bundle.validation import cluster_secret_refs
from streamops.shipping.cluster import cluster_secrets
from tests.unit.helpers import edited, errors, line_of, only, problems, write

PROD_PAGER = (
    "      paging: pagerduty\n"
    "      pagerduty_routing_key: '{{secrets/streamops-prod/pagerduty-routing-key}}'\n"
)
PROD_KEY = "'{{secrets/streamops-prod/pagerduty-routing-key}}'"
PROD_PW = 'password: "{{secrets/streamops-prod/kafka-password}}"'


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_the_shipped_databricks_targets_page_pagerduty_with_a_cluster_secret(target: str) -> None:
    mon = load(Path(__file__).resolve().parents[2] / "bundle.yml", target).target.monitoring
    assert mon.paging == "pagerduty"
    assert mon.pagerduty_routing_key is not None
    assert mon.pagerduty_routing_key.kind == "secrets"


@pytest.mark.parametrize("pager", ["", "      paging: log\n"])
def test_a_databricks_target_without_a_pager_is_refused(tmp_path: Path, pager: str) -> None:
    text = edited((PROD_PAGER, pager))
    p = only(errors(problems(write(tmp_path, text), "prod")), "targets.prod.monitoring.paging")
    assert "driver's disk" in p.message
    assert "paging: pagerduty" in p.fix and "{{secrets/<scope>/pagerduty-routing-key}}" in p.fix
    assert "paging: webhook" in p.fix
    # the line of `paging:` when written, else of the block that lacks it
    assert p.line == line_of(text, pager.strip() or "monitoring:", after="  prod:")


def test_a_webhook_is_a_pager(tmp_path: Path) -> None:
    pager = "      paging: webhook\n      webhook_url: '{{secrets/streamops-prod/teams-webhook}}'\n"
    b = load(write(tmp_path, edited((PROD_PAGER, pager))), "prod")
    assert b.target.monitoring.paging == "webhook"


def test_the_local_target_may_page_to_its_log_and_use_any_reference(tmp_path: Path) -> None:
    text = edited(
        (
            "{protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN}",
            "{protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN, password: '{{conn/kafka_local}}'}",
        )
    )
    b = load(write(tmp_path, text), "local")
    assert b.target.monitoring.paging == "log"


@pytest.mark.parametrize(
    ("ref", "names"),
    [
        ("{{conn/pagerduty/password}}", "an Airflow connection"),
        ("{{env/PAGERDUTY_KEY}}", "an environment variable"),
    ],
)
def test_a_pager_key_the_cluster_cannot_resolve_is_refused(
    tmp_path: Path, ref: str, names: str
) -> None:
    text = edited((PROD_KEY, f"'{ref}'"))
    p = only(
        errors(problems(write(tmp_path, text), "prod")),
        "targets.prod.monitoring.pagerduty_routing_key",
    )
    assert ref in p.message and names in p.message and "Databricks cluster" in p.message
    assert "{{secrets/<scope>/<key>}}" in p.fix
    assert p.line == line_of(text, "pagerduty_routing_key", after="  prod:")


def test_kafka_credentials_of_the_cluster_must_be_databricks_secrets(tmp_path: Path) -> None:
    text = edited((PROD_PW, 'password: "{{conn/kafka_prod}}"'))
    found = errors(problems(write(tmp_path, text), "prod"))
    only(found, "targets.prod.kafka.security.password", "{{conn/kafka_prod/password}}")


def test_an_environment_variable_the_cluster_sets_is_accepted(tmp_path: Path) -> None:
    text = edited(
        (PROD_KEY, "'{{env/PAGERDUTY_KEY}}'"),
        (
            "  prod:",
            "      data_security_mode: SINGLE_USER\n",
            "      data_security_mode: SINGLE_USER\n      cluster_settings:\n"
            "        spark_env_vars: {PAGERDUTY_KEY: '{{secrets/streamops-prod/pd}}'}\n",
        ),
    )
    b = load(write(tmp_path, text), "prod")
    assert b.target.monitoring.pagerduty_routing_key is not None


def test_validation_checks_every_secret_the_cluster_reads() -> None:
    """The rule's list and the cluster's (shipping.cluster.cluster_secrets) name the same values."""
    b = load(Path(__file__).resolve().parents[2] / "bundle.yml", "dev")
    assert {".".join(map(str, p)) for p, _ in cluster_secret_refs(b)} == {
        p for p, _ in cluster_secrets(b)
    }
    assert {p for p, _ in cluster_secrets(b)} >= {
        "targets.dev.monitoring.pagerduty_routing_key",
        "targets.dev.kafka.security.password",
        "targets.dev.databricks.storage.client_secret",
    }
