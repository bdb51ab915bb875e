"""The metric exporter's Azure login on the job cluster: a service principal through the real
azure-identity client against a local TLS Entra authority, a Unity Catalog service credential
refreshed before its token expires, and validation asking for a login where none is usable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from streamops.bundle import load
from streamops.errors import BundleError, MonitoringLoginError
from streamops.monitoring.azure_login import (
    REFRESH_MARGIN_S,
    RefreshingCredential,
    exporter_credential,
)
from streamops.monitoring.exporters import AzureMonitorSink
from tests.fake_entra import EntraAuthority, LogsIngestion, self_signed, serving
from tests.unit.helpers import SHIPPED, edited, write

TENANT = "0f1e2d3c-4b5a-4968-8776-655443322110"
CLIENT = "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
SECRET_VAR = "STREAMOPS_SECRET_STREAMOPS_PROD_MONITOR_SP_SECRET"
UC_LOGIN = "azure_login: {via: service_credential, name: streamops-prod-monitoring}"
POINTS = [
    {"ts": "2026-11-24T06:00:00+00:00", "name": "streamops_kafka_lag_records", "value": 42,
     "unit": "records", "job": "claims_hourly", "query": "claims_hourly", "target": "prod",
     "batch_id": 7, "topic": "insurance.claims", "partition": 3},
]  # fmt: skip


def _sp_login(authority: str) -> str:
    return (
        f"azure_login: {{via: service_principal, tenant_id: {TENANT}, client_id: {CLIENT}, "
        f"client_secret: '{{{{secrets/streamops-prod/monitor-sp-secret}}}}', "
        f"authority_host: '{authority}'}}"
    )


def test_a_service_principal_gets_its_token_over_tls_and_the_points_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # trust the local server's certificate
    monkeypatch.setenv(SECRET_VAR, "sp-secret")  # what the cluster maps from the secret scope
    authority = EntraAuthority(cert, key, TENANT, CLIENT, "sp-secret")
    with serving(authority), serving(LogsIngestion(cert, key)) as ingestion:
        assert isinstance(ingestion, LogsIngestion)
        prod = load(write(tmp_path, edited((UC_LOGIN, _sp_login(authority.url)))), "prod")
        mon = prod.target.monitoring
        assert mon.dcr_immutable_id
        credential = exporter_credential(prod)
        assert type(credential).__name__ == "ClientSecretCredential"
        AzureMonitorSink(ingestion.url, mon.dcr_immutable_id, mon.dcr_stream, credential)(POINTS)
    (asked,) = authority.token_requests
    assert asked["grant_type"] == ["client_credentials"]
    assert asked["scope"] == ["https://monitor.azure.com/.default"]
    (sent,) = ingestion.requests
    assert sent["auth"] == "Bearer token-1"
    assert sent["rows"][0]["Name"] == "streamops_kafka_lag_records"


def test_an_unresolvable_secret_is_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_VAR, raising=False)
    prod = load(write(tmp_path, edited((UC_LOGIN, _sp_login("https://127.0.0.1:1")))), "prod")
    with pytest.raises(MonitoringLoginError) as info:
        exporter_credential(prod)
    msg = str(info.value)
    assert msg.startswith("targets.prod.monitoring.azure_login.client_secret: ")
    assert "\n" not in msg


class _Provider:
    """A service credential's provider as dbutils returns it: each token lives an hour."""

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.calls = clock, 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(f"uc-{self.calls}", int(self.clock[0]) + 3600)


def test_a_service_credential_token_is_fetched_again_before_it_expires() -> None:
    clock = [1_000_000.0]
    provider = _Provider(clock)
    asked: list[str] = []

    def provider_of(name: str) -> _Provider:
        asked.append(name)
        return provider

    cred = RefreshingCredential("streamops-prod-monitoring", provider_of, now=lambda: clock[0])
    scope = "https://monitor.azure.com/.default"
    assert cred.get_token(scope).token == "uc-1"
    clock[0] += 3600 - REFRESH_MARGIN_S - 1  # still fresh enough
    assert cred.get_token(scope).token == "uc-1"
    clock[0] += 2  # within the margin: a new token before the old one expires
    assert cred.get_token(scope).token == "uc-2"
    assert asked == ["streamops-prod-monitoring"] * 2


def test_a_refused_service_credential_is_one_line_with_the_fix() -> None:
    def refused(name: str) -> Any:
        raise PermissionError("PERMISSION_DENIED: User does not have ACCESS on Credential")

    cred = RefreshingCredential("streamops-prod-monitoring", refused)
    with pytest.raises(MonitoringLoginError, match="grant the job's principal ACCESS"):
        cred.get_token("https://monitor.azure.com/.default")


def test_a_databricks_target_without_a_usable_login_is_refused(tmp_path: Path) -> None:
    # prod reaches storage through Unity Catalog: no service principal to reuse.
    with pytest.raises(BundleError) as info:
        load(write(tmp_path, edited((f"      {UC_LOGIN}\n", ""))), "prod")
    assert "targets.prod.monitoring: metrics go to Azure Monitor" in str(info.value)
    assert "azure_login: {via: service_principal" in str(info.value)
    # dev's storage is a service principal: the exporter uses it unless told otherwise.
    dev = load(SHIPPED, "dev")
    login = dev.target.metrics_login
    assert login is not None and login.via == "service_principal"
    assert login.client_secret == dev.target.databricks_or_default.storage.client_secret
    assert load(SHIPPED, "local").target.metrics_login is None
