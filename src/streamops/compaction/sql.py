"""The plan as SQL, and running it: the same OPTIMIZE / VACUUM text on every target.

Spark runs it locally (`spark_sql.SparkSqlRunner`), a Databricks SQL warehouse remotely
(`databricks.DatabricksSqlRunner`). The dialects differ in one place only: how OPTIMIZE learns
the target file size (a table property on Databricks; session settings in open-source Delta,
which refuses `delta.targetFileSize`). Conflicts with the streams are retried by `run_plan`.
"""

from __future__ import annotations

import json
from typing import Literal, Protocol

from streamops.compaction.log import MARKER, RUN_KEY
from streamops.compaction.plan import CompactionPlan
from streamops.compaction.retry import RetryPolicy, with_retries
from streamops.errors import CompactionError

Dialect = Literal["databricks", "spark"]

FILE_SIZE_PROPERTY = "delta.targetFileSize"
# Open-source Delta bin-packs files below minFileSize into files up to maxFileSize.
SPARK_MAX_FILE_SIZE = "spark.databricks.delta.optimize.maxFileSize"
SPARK_MIN_FILE_SIZE = "spark.databricks.delta.optimize.minFileSize"
# Without it open-source Delta writes no VACUUM START/END commits, so the report could not say
# how many files VACUUM deleted (Databricks logs them by default).
SPARK_VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"


def quote_ident(name: str) -> str:
    """`catalog`.`schema`.`table` from catalog.schema.table (backticks doubled inside)."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in name.split("."))


def sql_literal(value: str | None) -> str:
    if value is None:
        return "NULL"
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def table_ref(plan: CompactionPlan) -> str:
    """The Unity Catalog name when the bundle has one, else delta.`<location>`."""
    if plan.uc_name:
        return quote_ident(plan.uc_name)
    return f"delta.`{plan.location.replace('`', '``')}`"


def where_clause(plan: CompactionPlan) -> str:
    """Exactly the planned partitions, as a predicate on partition columns only."""
    if not plan.partition_columns:
        return ""
    if len(plan.partition_columns) == 1:
        col = plan.partition_columns[0]
        values = [dict(p.partition)[col] for p in plan.partitions]
        nulls = any(v is None for v in values)
        lits = ", ".join(sql_literal(v) for v in values if v is not None)
        terms = []
        if lits:
            terms.append(f"{quote_ident(col)} IN ({lits})")
        if nulls:
            terms.append(f"{quote_ident(col)} IS NULL")
        return " OR ".join(terms)
    ors = []
    for p in plan.partitions:
        ands = [
            f"{quote_ident(c)} IS NULL" if v is None else f"{quote_ident(c)} = {sql_literal(v)}"
            for c, v in p.partition
        ]
        ors.append("(" + " AND ".join(ands) + ")")
    return " OR ".join(ors)


def optimize_sql(plan: CompactionPlan) -> str:
    sql = f"OPTIMIZE {table_ref(plan)}"
    where = where_clause(plan)
    if where:
        sql += f" WHERE {where}"
    if plan.zorder_by:
        sql += " ZORDER BY (" + ", ".join(quote_ident(c) for c in plan.zorder_by) + ")"
    return sql


def file_size_sql(plan: CompactionPlan, dialect: Dialect) -> list[str]:
    """What makes OPTIMIZE write files of the bundle's target size, in `dialect`."""
    size = plan.target_file_size
    if dialect == "spark":
        return [f"SET {SPARK_MAX_FILE_SIZE} = {size}", f"SET {SPARK_MIN_FILE_SIZE} = {size}"]
    if plan.file_size_property_set:
        # Altering the table is a metadata commit, which fails every stream's in-flight commit
        # (MetadataChangedException): only when the property is not already right.
        return []
    return [f"ALTER TABLE {table_ref(plan)} SET TBLPROPERTIES ('{FILE_SIZE_PROPERTY}' = '{size}')"]


def statements(plan: CompactionPlan, dialect: Dialect = "databricks") -> list[str]:
    """The plan as SQL in `dialect`, in the order to run it."""
    out: list[str] = []
    if plan.optimizes:
        out += file_size_sql(plan, dialect)
        out.append(optimize_sql(plan))
    if plan.vacuum is not None:
        if dialect == "spark":
            out.append(f"SET {SPARK_VACUUM_LOGGING} = true")
        out.append(f"VACUUM {table_ref(plan)} RETAIN {plan.vacuum.retention_hours} HOURS")
    return out


# Delta's commit conflicts, by error class (Spark, Databricks) and by exception class name.
CONFLICT_MARKS = (
    "DELTA_CONCURRENT",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
    "Concurrent",  # ConcurrentAppendException, ConcurrentDeleteReadException, ...
    "MetadataChangedException",
    "ProtocolChangedException",
)


class StatementFailed(CompactionError):
    """A compaction statement failed on its engine; `is_conflict` when a retry can succeed."""

    def __init__(
        self, statement: str, state: str, code: str, message: str, *, engine: str = "Databricks"
    ):
        self.statement, self.state, self.code, self.detail = statement, state, code, message
        super().__init__(
            f"{engine} statement {state}: {code or '-'}: {message or '(no message)'} [{statement}]"
        )

    @property
    def is_conflict(self) -> bool:
        text = f"{self.code} {self.detail}"
        return any(mark in text for mark in CONFLICT_MARKS)


class StatementRunner(Protocol):
    """Runs one SQL statement to completion; raises StatementFailed when it fails."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, statement: str, *, user_metadata: str | None = None) -> str: ...


def user_metadata(statement: str, marker_json: str, run_id: str) -> str | None:
    """The commit metadata for `statement`: the marker on OPTIMIZE, the run id on VACUUM.

    Only OPTIMIZE carries the marker: a VACUUM-only run compacts nothing, so it must not mark
    the changed partitions as done.
    """
    verb = statement.split(" ", 1)[0]
    if verb == "OPTIMIZE":
        return json.dumps({MARKER: marker_json})
    if verb == "VACUUM":
        return json.dumps({RUN_KEY: run_id})
    return None


def run_plan(
    plan: CompactionPlan,
    runner: StatementRunner,
    policy: RetryPolicy,
    *,
    marker_json: str,
    run_id: str,
) -> int:
    """Run the plan's statements in the runner's dialect; conflicts are retried. The retries."""
    retries = 0
    for sql in statements(plan, runner.dialect):
        meta = user_metadata(sql, marker_json, run_id)

        def step(sql: str = sql, meta: str | None = meta) -> str:
            return runner.execute(sql, user_metadata=meta)

        _, n = with_retries(
            step,
            policy,
            what=f"{sql.split(' ', 1)[0]} {plan.table}",
            retryable=lambda e: isinstance(e, StatementFailed) and e.is_conflict,
        )
        retries += n
    return retries
