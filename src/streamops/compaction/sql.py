"""The plan as SQL, and running it: the same OPTIMIZE / VACUUM text on every target.

Spark runs it locally (`spark_sql.SparkSqlRunner`), a Databricks SQL warehouse remotely
(`databricks.DatabricksSqlRunner`). The dialects differ in one place only: how OPTIMIZE learns
the target file size (session settings in Spark; a warehouse keeps the table's own
`delta.targetFileSize` or its auto-tuning). Nothing here alters the table: a metadata commit
(ALTER TABLE ... SET TBLPROPERTIES) would fail every stream's in-flight commit
(MetadataChangedException). Conflicts with the streams are retried by `run_plan`.
"""

from __future__ import annotations

import json
import re
from typing import Literal, Protocol

from streamops.compaction.log import MARKER, RUN_KEY
from streamops.compaction.plan import CompactionPlan, quote_ident
from streamops.compaction.retry import RetryPolicy, with_retries
from streamops.errors import CompactionConflictError, CompactionError

Dialect = Literal["databricks", "spark"]

# Open-source Delta bin-packs files below minFileSize into files up to maxFileSize.
SPARK_MAX_FILE_SIZE = "spark.databricks.delta.optimize.maxFileSize"
SPARK_MIN_FILE_SIZE = "spark.databricks.delta.optimize.minFileSize"
# Without it open-source Delta writes no VACUUM START/END commits, so the report could not say
# how many files VACUUM deleted (Databricks logs them by default).
SPARK_VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"


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
    """What makes OPTIMIZE write files of the bundle's target size, in `dialect`.

    Session settings only (a Spark session, or a Databricks job's cluster session). A SQL
    warehouse accepts no Delta session settings, and setting the table property there would be
    a metadata commit that fails the streams' commits: it gets nothing.
    """
    size = plan.target_file_size
    if dialect == "spark":
        return [f"SET {SPARK_MAX_FILE_SIZE} = {size}", f"SET {SPARK_MIN_FILE_SIZE} = {size}"]
    return []


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


# Delta names the commit that won the race: 'a concurrent MERGE deleted data from table ...
# (committed at version 12)' (Delta 4), or 'Conflicting commit: {..."operation":"MERGE"...}'.
_CONFLICTING = (
    re.compile(r"a concurrent ([A-Z][A-Z ]*?[A-Z]) (?:deleted|added|changed|updated|removed)"),
    re.compile(r'Conflicting commit:\s*\{.*?"operation"\s*:\s*"([^"]+)"', re.S),
)
_CONFLICTING_VERSION = (
    re.compile(r"committed at version (\d+)"),
    re.compile(r'Conflicting commit:\s*\{.*?"version"\s*:\s*(\d+)', re.S),
)


def conflicting_operation(text: str) -> str:
    """The winning commit's operation (e.g. 'MERGE (version 12)') from Delta's message, or ''."""
    op = next((m.group(1) for p in _CONFLICTING if (m := p.search(text))), "")
    if not op:
        return ""
    v = next((m.group(1) for p in _CONFLICTING_VERSION if (m := p.search(text))), None)
    return f"{op} (version {v})" if v else op


class StatementFailed(CompactionError):
    """A compaction statement failed on its engine; `is_conflict` when a retry can succeed."""

    def __init__(
        self,
        statement: str,
        state: str,
        code: str,
        message: str,
        *,
        engine: str = "Databricks",
        conflicting: str = "",
    ):
        self.statement, self.state, self.code, self.detail = statement, state, code, message
        # The concurrent commit's operation when Delta named it (a conflict), else ''.
        self.conflicting = conflicting or conflicting_operation(message)
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

        try:
            _, n = with_retries(
                step,
                policy,
                what=f"{sql.split(' ', 1)[0]} {plan.table}",
                retryable=lambda e: isinstance(e, StatementFailed) and e.is_conflict,
            )
        except CompactionError as exc:
            last = exc.__cause__
            if isinstance(last, StatementFailed) and last.is_conflict:
                raise CompactionConflictError(
                    str(exc),
                    table=plan.table,
                    attempts=policy.max_retries + 1,
                    operation=last.conflicting or "a concurrent write (Delta did not name it)",
                ) from last
            raise
        retries += n
    return retries
