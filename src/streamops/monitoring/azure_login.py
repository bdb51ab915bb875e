"""The metric exporter's Azure login (Logs Ingestion), built from `Target.metrics_login`.

A job cluster's user code gets no managed identity, so DefaultAzureCredential is never used on
Databricks (validation asks for a login there):
- `service_principal`: azure-identity's ClientSecretCredential; the secret is a
  `{{secrets/scope/key}}` reference the cluster maps into its environment; `authority_host` serves
  sovereign clouds (and a local token server in tests).
- `service_credential`: a Unity Catalog service credential through
  `dbutils.credentials.getServiceCredentialsProvider(name)` (DBR 16.2+), wrapped so its token is
  fetched again before it expires: a streaming driver lives longer than one token.
Off Databricks without a login: None, and the exporter uses the machine's DefaultAzureCredential.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamops.errors import MonitoringLoginError, StreamopsError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

    from streamops.bundle import Bundle
    from streamops.bundle.models import AzureLogin

# A token is fetched again this long before it expires (clock skew, a slow upload).
REFRESH_MARGIN_S = 300.0
# Entra ID authorities MSAL knows; any other (a private cloud, a local test server) is used as
# given, without MSAL's instance discovery against the public cloud.
_KNOWN_AUTHORITIES = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
)


def exporter_credential(bundle: Bundle, **transport: Any) -> Any:
    """The credential the bundle's Azure Monitor exporter logs in with, or None (the machine's
    own, off Databricks). `transport`: azure-core options (e.g. connection_verify)."""
    login = bundle.target.metrics_login
    if login is None:
        return None
    where = f"targets.{bundle.target_name}.monitoring.azure_login"
    if login.via == "service_principal":
        return service_principal_credential(login, where, **transport)
    assert login.name is not None
    return RefreshingCredential(login.name, _dbutils_provider(where))


def service_principal_credential(login: AzureLogin, where: str, **transport: Any) -> Any:
    """azure-identity's ClientSecretCredential for `login` (its secret resolved now)."""
    from azure.identity import ClientSecretCredential

    assert login.tenant_id and login.client_id and login.client_secret
    try:
        secret = login.client_secret.resolve()
    except StreamopsError as exc:
        raise MonitoringLoginError(f"{where}.client_secret: {exc}") from None
    kwargs: dict[str, Any] = dict(transport)
    if login.authority_host:
        kwargs["authority"] = login.authority_host
        host = login.authority_host.split("://", 1)[-1].split("/", 1)[0]
        kwargs["disable_instance_discovery"] = host not in _KNOWN_AUTHORITIES
    return ClientSecretCredential(login.tenant_id, login.client_id, secret, **kwargs)


def _dbutils_provider(where: str) -> Callable[[str], Any]:
    """`dbutils.credentials.getServiceCredentialsProvider`, from the cluster's Spark session."""

    def provider(name: str) -> Any:
        try:
            from pyspark.dbutils import DBUtils
            from pyspark.sql import SparkSession
        except ImportError:
            raise MonitoringLoginError(
                f"{where}: via: service_credential needs dbutils, which only a Databricks "
                "runtime (16.2 or newer) has. Fix: use `via: service_principal` off Databricks"
            ) from None
        spark = SparkSession.getActiveSession()
        return DBUtils(spark).credentials.getServiceCredentialsProvider(name)

    return provider


@dataclass
class RefreshingCredential:
    """A TokenCredential over a Unity Catalog service credential's provider: each token is kept
    until REFRESH_MARGIN_S before it expires, then the provider is asked again (a fresh one from
    `provider(name)`: a provider object may hold a session that expires itself)."""

    name: str
    provider: Callable[[str], Any]
    now: Callable[[], float] = time.time  # epoch seconds, as AccessToken.expires_on
    _tokens: dict[tuple[str, ...], AccessToken] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            token = self._tokens.get(scopes)
            if token is None or token.expires_on - REFRESH_MARGIN_S <= self.now():
                try:
                    token = self.provider(self.name).get_token(*scopes, **kwargs)
                except StreamopsError:
                    raise
                except Exception as exc:  # the provider's own errors, typed loosely
                    raise MonitoringLoginError(
                        f"Unity Catalog service credential '{self.name}' gave no token "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                        "Fix: grant the job's principal ACCESS on it, or check its name"
                    ) from None
                self._tokens[scopes] = token
            return token

    def close(self) -> None:
        """TokenCredential protocol: nothing to release."""
