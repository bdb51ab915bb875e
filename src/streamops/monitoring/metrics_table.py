"""The Log Analytics custom table that holds the metric points on the Azure Monitor path.

One row per metric point (default table `StreamopsMetrics_CL`). The exporter writes these rows
and the alert rules' KQL reads them back, so both take the columns from here.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("TimeGenerated", "Name", "Value", "Unit", "Job", "Query", "Target", "Topic",
           "Partition", "BatchId", "Operator")  # fmt: skip
_POINT_KEYS = ("ts", "name", "value", "unit", "job", "query", "target", "topic", "partition",
               "batch_id", "operator")  # fmt: skip


def to_row(point: dict[str, Any]) -> dict[str, Any]:
    """A metric point as a row of the custom table."""
    return {c: point.get(k) for c, k in zip(COLUMNS, _POINT_KEYS, strict=True) if k in point}


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the custom table as a metric point."""
    out: dict[str, Any] = {}
    for c, k in zip(COLUMNS, _POINT_KEYS, strict=True):
        v = row.get(c)
        if v is None or v == "":
            continue
        if c == "TimeGenerated" and hasattr(v, "isoformat"):
            v = v.isoformat()
        out[k] = v
    return out
