"""Nightly Delta compaction: OPTIMIZE toward the bundle's file size, Z-ORDER (or liquid
clustering) on changed partitions, safe VACUUM; one plan, the same SQL through Spark locally and
a one-time job run (or a SQL warehouse) on Databricks. Never a metadata commit; the compaction
marker rides in the OPTIMIZE commit; tables under predictive optimization are left to it.

`compact_table(bundle, key, ...)` is the entry point (CLI, Airflow); importing this package
imports no engine (deltalake, pyspark, the Databricks provider are imported when used).
"""

from streamops.compaction.plan import CompactionPlan, build_plan, vacuum_plan
from streamops.compaction.run import compact_table, plan_table
from streamops.compaction.run_report import CompactionReport

__all__ = [
    "CompactionPlan",
    "CompactionReport",
    "build_plan",
    "compact_table",
    "plan_table",
    "vacuum_plan",
]
