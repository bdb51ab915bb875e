"""Open and probe a Delta table the way the bundle resolved it (by name or by path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.bundle.tables import TableRef, as_ref

if TYPE_CHECKING:
    from delta.tables import DeltaTable
    from pyspark.sql import SparkSession


def delta_table(spark: SparkSession, table: str | TableRef) -> DeltaTable:
    """delta.tables.DeltaTable for `table` (a TableRef, or a bare path)."""
    from delta.tables import DeltaTable

    ref = as_ref(table)
    if ref.name:
        return DeltaTable.forName(spark, ref.name)
    return DeltaTable.forPath(spark, ref.location)


def table_exists(spark: SparkSession, table: str | TableRef) -> bool:
    """Whether `table` exists: in the catalog by name, or as a Delta log at its path."""
    from delta.tables import DeltaTable

    ref = as_ref(table)
    if ref.name:
        return bool(spark.catalog.tableExists(ref.name))
    return bool(DeltaTable.isDeltaTable(spark, ref.location))
