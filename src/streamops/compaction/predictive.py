"""Whether Databricks' predictive optimization already maintains a Unity Catalog table.

Predictive optimization runs OPTIMIZE and VACUUM on the tables it manages; a second nightly
OPTIMIZE there costs money and competes for the same files. Unity Catalog says whether it is in
effect for a table (`GET /api/2.1/unity-catalog/tables/{full_name}`,
`effective_predictive_optimization_flag`: ENABLE / DISABLE, possibly inherited from the schema or
catalog), read here with databricks-sdk's `WorkspaceClient.tables.get` through the target's
access (`streamops.databricks_access`: its login and retry policy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.databricks_access import DatabricksAccess, access_for
from streamops.errors import CompactionError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

MANAGED = "managed by predictive optimization"


def managed_reason(bundle: Bundle, key: str, access: DatabricksAccess | None = None) -> str | None:
    """'managed by predictive optimization (...)' when it is in effect for table `key`, else None.

    Only Unity Catalog tables (`tables.<key>.name`) can have it; `predictive_optimization:
    compact` in bundle.yml skips the question. `access` defaults to the bundle's.
    """
    table = bundle.table(key)
    if not table.name or table.predictive_optimization == "compact":
        return None
    name = table.name
    from databricks.sdk.errors import DatabricksError, NotFound

    access = access or access_for(bundle)
    try:
        ws = access.workspace()
        info = access.retrying(lambda: ws.tables.get(name))
    except NotFound:
        raise CompactionError(
            f"tables.{key}.name: Unity Catalog has no table '{table.name}' (GET "
            f"/api/2.1/unity-catalog/tables/{table.name}). Fix: correct the name in bundle.yml, "
            "or grant the connection's principal USE CATALOG / USE SCHEMA on it"
        ) from None
    except DatabricksError as exc:
        raise CompactionError(
            f"cannot ask Unity Catalog about '{table.name}' (tables.{key}.name): {exc}. Fix: check "
            f"{access.where} and its access to the table, or set "
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
