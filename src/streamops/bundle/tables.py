"""How the job code addresses a Delta table: one value, resolved at load, the same code everywhere.

On a Databricks target a table is its Unity Catalog name (`main.claims.claims_hourly`): the
streams write it with `saveAsTable`, read it with `table()`, and compaction runs SQL on the same
name. It is an external table whose files live at `location`, so the Airflow-side readers
(delta-rs: checkpoint registry, offset reconstruction, compaction planning, late report) read the
very same table by path; the storage root must be covered by a Unity Catalog external location
(or the cluster's service principal). Locally there is no catalog: the table is its path.

Nothing here imports Spark or Delta (the bundle loads without them): the methods take the
writer, reader or builder they finish; streamops.pipeline.delta_tables opens and probes tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def quote_ident(name: str) -> str:
    """`catalog`.`schema`.`table` from catalog.schema.table (backticks doubled inside)."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in name.split("."))


@dataclass(frozen=True)
class TableRef:
    """One Delta table: by Unity Catalog name (Databricks targets) or by path (local)."""

    location: str  # where its files are (always known: delta-rs readers need it)
    name: str | None = None  # catalog.schema.table when the target addresses tables by name

    @property
    def sql(self) -> str:
        """The table in SQL text: its quoted name, or delta.`<location>`."""
        if self.name:
            return quote_ident(self.name)
        return f"delta.`{self.location.replace('`', '``')}`"

    @property
    def label(self) -> str:
        """What messages call it: the name users see in the catalog, else the path."""
        return self.name or self.location

    def __str__(self) -> str:
        return self.label

    def save(self, writer: Any) -> None:
        """Finish a DataFrameWriter (format, mode and options already set) on this table."""
        if self.name:
            writer.saveAsTable(self.name)
        else:
            writer.save(self.location)

    def read_stream(self, reader: Any) -> Any:
        """Finish a DataStreamReader (format delta, options set) on this table."""
        return reader.table(self.name) if self.name else reader.load(self.location)

    def create_builder(self, builder: Any) -> Any:
        """Point a DeltaTableBuilder at this table: named and external at `location`, or by path."""
        if self.name:
            builder = builder.tableName(self.name)
        return builder.location(self.location)


def as_ref(table: str | TableRef) -> TableRef:
    """A TableRef for a bare path (callers that still pass one)."""
    return table if isinstance(table, TableRef) else TableRef(table)


def sibling_name(sink_name: str | None, table: str) -> str | None:
    """`catalog.schema.<table>` beside the sink's Unity Catalog name (bronze and quarantine tables
    live in the schema of the job's sink), or None when the sink has no such name."""
    if not sink_name or sink_name.count(".") != 2:
        return None
    catalog, schema, _ = sink_name.split(".")
    return f"{catalog}.{schema}.{table}"
