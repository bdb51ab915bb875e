"""Whether Databricks' predictive optimization already maintains a Unity Catalog table.

Predictive optimization runs OPTIMIZE and VACUUM on the tables it manages; a second nightly
OPTIMIZE there costs money and competes for the same files. Unity Catalog says whether it is in
effect for a table (`GET /api/2.1/unity-catalog/tables/{full_name}`,
`effective_predictive_optimization_flag`: ENABLE / DISABLE, possibly inherited from the schema or
catalog), read here with databricks-sdk's `WorkspaceClient.tables.get` using the target's
Airflow Databricks connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamops.errors import CompactionError, MissingDependencyError

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from streamops.bundle import Bundle

MANAGED = "managed by predictive optimization"


def workspace_client(conn_id: str) -> WorkspaceClient:
    """A WorkspaceClient for the Airflow Databricks connection `conn_id` (token or Azure SP).

    The connection is the one place credentials live (a secret backend in production); a local
    server is reached with `schema: http` and `port`, as the Airflow provider does.
    """
    try:
        from airflow.sdk import BaseHook
        from databricks.sdk import WorkspaceClient
    except ImportError:
        raise MissingDependencyError("apache-airflow-providers-databricks", "airflow") from None

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or ""
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    extra: dict[str, Any] = conn.extra_dejson
    if extra.get("azure_tenant_id"):
        return WorkspaceClient(
            host=host, azure_client_id=conn.login, azure_client_secret=conn.password,
            azure_tenant_id=extra["azure_tenant_id"], auth_type="azure-client-secret",
        )  # fmt: skip
    return WorkspaceClient(host=host, token=conn.password or extra.get("token"), auth_type="pat")


def conn_id(bundle: Bundle) -> str:
    db = bundle.target.databricks
    return (db.airflow_conn_id if db else None) or "databricks_default"


def managed_reason(bundle: Bundle, key: str, client: WorkspaceClient | None = None) -> str | None:
    """'managed by predictive optimization (...)' when it is in effect for table `key`, else None.

    Only Unity Catalog tables (`tables.<key>.name`) can have it; `predictive_optimization:
    compact` in bundle.yml skips the question.
    """
    table = bundle.table(key)
    if not table.name or table.predictive_optimization == "compact":
        return None
    from databricks.sdk.errors import DatabricksError, NotFound

    try:
        info = (client or workspace_client(conn_id(bundle))).tables.get(table.name)
    except NotFound:
        raise CompactionError(
            f"tables.{key}.name: Unity Catalog has no table '{table.name}' (GET "
            f"/api/2.1/unity-catalog/tables/{table.name}). Fix: correct the name in bundle.yml, "
            "or grant the connection's principal USE CATALOG / USE SCHEMA on it"
        ) from None
    except DatabricksError as exc:
        raise CompactionError(
            f"cannot ask Unity Catalog about '{table.name}' (tables.{key}.name): {exc}. Fix: check "
            f"the Airflow connection '{conn_id(bundle)}' and its access to the table, or set "
            f"`predictive_optimization: compact` on tables.{key} to compact without asking"
        ) from exc
    flag = info.effective_predictive_optimization_flag
    if flag is None or flag.value is None or flag.value.value != "ENABLE":
        return None
    where = ""
    if flag.inherited_from_type is not None:
        kind = flag.inherited_from_type.value.lower()
        where = f", inherited from {kind} {flag.inherited_from_name or '?'}"
    return (
        f"{MANAGED} (in effect for {table.name}{where}); OPTIMIZE and VACUUM skipped. To compact "
        f"it anyway: `predictive_optimization: compact` on tables.{key}"
    )
