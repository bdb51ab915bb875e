"""The Log Analytics custom table that holds the metric points on the Azure Monitor path.

One row per metric point (default table `StreamopsMetrics_CL`). The exporter writes these rows
and the alert rules' KQL reads them back, so both take the columns from here.
"""

from __future__ import annotations

from typing import Any

# Column of the custom table -> key of the metric point, in the table's column order.
_POINT_KEYS = {
    "TimeGenerated": "ts",
    "Name": "name",
    "Value": "value",
    "Unit": "unit",
    "Job": "job",
    "Query": "query",
    "Target": "target",
    "Topic": "topic",
    "Partition": "partition",
    "BatchId": "batch_id",
    "Operator": "operator",
}
COLUMNS = tuple(_POINT_KEYS)


def to_row(point: dict[str, Any]) -> dict[str, Any]:
    """A metric point as a row of the custom table."""
    return {c: point.get(k) for c, k in _POINT_KEYS.items() if k in point}


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the custom table as a metric point."""
    out: dict[str, Any] = {}
    for c, k in _POINT_KEYS.items():
        v = row.get(c)
        if v is None or v == "":
            continue
        if c == "TimeGenerated" and hasattr(v, "isoformat"):
            v = v.isoformat()
        out[k] = v
    return out
