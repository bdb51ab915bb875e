"""Who streamops is at a workspace, and where that workspace is: one `Login`, from an Airflow
connection (the provider's fields) or from bundle.yml's `host` + `token`.

The kinds a connection can hold, in the provider's own conventions:
  pat                  password (or extra `token`), no login
  oauth-m2m            a Databricks service principal: login = client id, password = secret,
                       extra `service_principal_oauth: true`
  azure-client-secret  an Azure service principal: login = client id, password = secret,
                       extra `azure_tenant_id`
The secret is held here only (never in the environment), hidden from every repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from streamops.errors import WorkspaceAccessError

if TYPE_CHECKING:
    from airflow.sdk import Connection

Kind = Literal["pat", "oauth-m2m", "azure-client-secret"]


@dataclass(frozen=True)
class Login:
    """A workspace URL and one way to log in to it."""

    url: str  # scheme://host[:port], no trailing slash
    kind: Kind
    secret: str = field(repr=False)  # the token, or the service principal's secret
    client_id: str | None = None
    tenant_id: str | None = None
    source: str = ""  # where it came from, for messages

    def sdk_config(self) -> dict[str, Any]:
        """databricks-sdk `Config` arguments for this login (auth_type pinned: no guessing)."""
        if self.kind == "pat":
            return {"host": self.url, "token": self.secret, "auth_type": "pat"}
        if self.kind == "oauth-m2m":
            return {
                "host": self.url,
                "client_id": self.client_id,
                "client_secret": self.secret,
                "auth_type": "oauth-m2m",
            }
        return {
            "host": self.url,
            "azure_client_id": self.client_id,
            "azure_client_secret": self.secret,
            "azure_tenant_id": self.tenant_id,
            "auth_type": "azure-client-secret",
        }

    def connection(self, conn_id: str) -> Connection:
        """An in-memory Airflow connection for the provider's hook (a PAT login only)."""
        from airflow.sdk import Connection

        parts = urlsplit(self.url)
        return Connection(
            conn_id=conn_id,
            conn_type="databricks",
            host=parts.hostname,
            schema=parts.scheme,  # the provider's field for http vs https
            port=parts.port,
            password=self.secret,
        )


def url_of(conn: Any) -> str:
    """scheme://host[:port] of a Databricks connection, read as the provider reads it."""
    extra: dict[str, Any] = conn.extra_dejson
    raw = str(extra.get("host") or conn.host or "")
    host = (urlsplit(raw).hostname or raw) if "://" in raw else raw
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'https'}://{host}{port}"


def from_connection(conn: Any, source: str) -> Login:
    """The login a provider connection holds; WorkspaceAccessError for kinds the sdk is not
    given here (managed identity, token federation: the hook still takes those)."""
    extra: dict[str, Any] = conn.extra_dejson
    url = url_of(conn)
    if extra.get("token") or (conn.password and not conn.login):
        return Login(url, "pat", str(extra.get("token") or conn.password), source=source)
    if conn.login and conn.password and extra.get("azure_tenant_id"):
        tenant = str(extra["azure_tenant_id"])
        return Login(url, "azure-client-secret", conn.password, conn.login, tenant, source)
    if conn.login and conn.password and extra.get("service_principal_oauth"):
        return Login(url, "oauth-m2m", conn.password, conn.login, source=source)
    raise WorkspaceAccessError(
        f"{source} logs in a way streamops cannot hand to databricks-sdk. Fix: give it a token "
        "(password), or a service principal: login = client id, password = secret, and extra "
        '{"service_principal_oauth": true} or {"azure_tenant_id": "<tenant>"}'
    )
