"""How a Databricks target's job cluster reaches ADLS: Spark's side of the login.

Spark (the streams, Delta) reads `abfss://` through the cluster's Hadoop settings: nothing with a
Unity Catalog external location, or the service principal's OAuth settings in `spark_conf` (its
secret as a `{{secrets/scope/key}}` reference, which Databricks resolves at cluster start). The
driver's Python readers use this same login: on the cluster they go through its Spark session
(bundle/storage.py `cluster_login`, kind `cluster_spark`), never a login of their own.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamops.bundle.models import StorageAccess

# abfss://<container>@<account>.dfs.core.windows.net/<path>
_ABFS = re.compile(r"^abfss?://[^@/]+@([a-z0-9]+)\.dfs\.core\.windows\.net", re.IGNORECASE)


def account_of(location: str) -> str | None:
    """The storage account of an abfss:// URL, or None for any other location."""
    m = _ABFS.match(location.strip())
    return m.group(1).lower() if m else None


def spark_conf(access: StorageAccess, locations: list[str]) -> dict[str, str]:
    """The job cluster's Hadoop settings for every ADLS account among `locations`.

    Unity Catalog: none (the external location grants access). Service principal: OAuth client
    credentials per account, the secret as a reference; never a value.
    """
    if access.via != "service_principal":
        return {}
    assert access.client_id and access.tenant_id and access.client_secret
    conf: dict[str, str] = {}
    for account in sorted({a for loc in locations if (a := account_of(loc))}):
        host = f"{account}.dfs.core.windows.net"
        conf |= {
            f"spark.hadoop.fs.azure.account.auth.type.{host}": "OAuth",
            f"spark.hadoop.fs.azure.account.oauth.provider.type.{host}": (
                "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider"
            ),
            f"spark.hadoop.fs.azure.account.oauth2.client.id.{host}": access.client_id,
            f"spark.hadoop.fs.azure.account.oauth2.client.secret.{host}": access.client_secret.text,
            f"spark.hadoop.fs.azure.account.oauth2.client.endpoint.{host}": (
                f"https://login.microsoftonline.com/{access.tenant_id}/oauth2/token"
            ),
        }
    return conf
