"""The cluster side of the `databricks-job` engine (`jobs/compact.py`): compact one table on the
cluster's Spark session and print the one result line Airflow reads from the run's output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from streamops.compaction.databricks_job import ERROR_LINE, REPORT_LINE, JobRequest
from streamops.errors import CompactionConflictError


def cluster_main(
    bundle_path: str,
    target: str,
    request: JobRequest,
    *,
    spark: Any = None,
    out: Callable[[str], None] = print,
) -> int:
    """On the cluster: compact with the spark-sql engine on the cluster's session and print the
    one result line Airflow reads; the exit code (0 done, 1 failed)."""
    from streamops.bundle import load
    from streamops.compaction.run import compact_table

    try:
        bundle = load(bundle_path, target)
        if spark is None:
            from pyspark.sql import SparkSession

            spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
        report = compact_table(
            bundle,
            request.table,
            zorder=request.zorder,
            vacuum=request.vacuum,
            retain_hours=request.retain_hours,
            engine="spark-sql",
            spark=spark,
        )
    except CompactionConflictError as exc:
        out(
            ERROR_LINE
            + json.dumps(
                {
                    "kind": "conflict",
                    "message": str(exc),
                    "operation": exc.operation,
                    "attempts": exc.attempts,
                }
            )
        )
        return 1
    except Exception as exc:
        out(ERROR_LINE + json.dumps({"kind": type(exc).__name__, "message": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        out(line)
    out(REPORT_LINE + json.dumps(report.to_dict(), separators=(",", ":")))
    return 0
