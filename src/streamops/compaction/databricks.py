"""The Databricks engine: the same CompactionPlan as SQL, run on a SQL warehouse.

Statements go through the Airflow Databricks provider's hook (SQL Statement Execution API,
`POST /api/2.0/sql/statements`, then polling `GET /api/2.0/sql/statements/{id}`). Commit
conflicts with the streams (Delta's Concurrent*Exception) are retried like the local engine's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from streamops.compaction.plan import CompactionPlan
from streamops.compaction.retry import RetryPolicy, with_retries
from streamops.errors import CompactionError, MissingDependencyError


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
    """Exactly the planned partitions (SQL can say what a delta-rs filter conjunction cannot)."""
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


def statements(plan: CompactionPlan) -> list[str]:
    """The plan as Databricks SQL, in the order to run it."""
    ref = table_ref(plan)
    out: list[str] = []
    if plan.optimizes:
        # OPTIMIZE bin-packs toward the table's delta.targetFileSize: set it from the bundle.
        out.append(
            f"ALTER TABLE {ref} SET TBLPROPERTIES "
            f"('delta.targetFileSize' = '{plan.target_file_size}')"
        )
        sql = f"OPTIMIZE {ref}"
        where = where_clause(plan)
        if where:
            sql += f" WHERE {where}"
        if plan.zorder_by:
            sql += " ZORDER BY (" + ", ".join(quote_ident(c) for c in plan.zorder_by) + ")"
        out.append(sql)
    if plan.vacuum is not None:
        out.append(f"VACUUM {ref} RETAIN {plan.vacuum.retention_hours} HOURS")
    return out


class StatementFailed(CompactionError):
    def __init__(self, statement: str, state: str, code: str, message: str):
        self.statement, self.state, self.code, self.detail = statement, state, code, message
        super().__init__(
            f"Databricks statement {state}: {code or '-'}: {message or '(no message)'} "
            f"[{statement}]"
        )

    @property
    def is_conflict(self) -> bool:
        text = f"{self.code} {self.detail}"
        return "Concurrent" in text or "DELTA_CONCURRENT" in text


@dataclass
class DatabricksSqlRunner:
    """Runs statements on a SQL warehouse through the Airflow Databricks provider's hook."""

    conn_id: str
    warehouse_id: str
    poll_s: float = 5.0
    timeout_s: float = 6 * 3600
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    sent: list[str] = field(default_factory=list)

    @cached_property
    def hook(self) -> Any:
        try:
            from airflow.providers.databricks.hooks.databricks import DatabricksHook
        except ImportError:
            raise MissingDependencyError("apache-airflow-providers-databricks", "airflow") from None
        return DatabricksHook(databricks_conn_id=self.conn_id, retry_limit=3, retry_delay=1)

    def execute(self, statement: str) -> str:
        """Submit one statement and wait for it; the statement id, or StatementFailed."""
        sid: str = self.hook.post_sql_statement(
            {
                "statement": statement,
                "warehouse_id": self.warehouse_id,
                "wait_timeout": "0s",
                "on_wait_timeout": "CONTINUE",
            }
        )
        self.sent.append(statement)
        deadline = self.clock() + self.timeout_s
        while True:
            st = self.hook.get_sql_statement_state(sid)
            if st.is_terminal:
                if not st.is_successful:
                    raise StatementFailed(statement, st.state, st.error_code, st.error_message)
                return sid
            if self.clock() > deadline:
                self.hook.cancel_sql_statement(sid)
                raise CompactionError(
                    f"Databricks statement {sid} still running after {self.timeout_s:g} s and "
                    f"was cancelled [{statement}]. Fix: size the warehouse up or compact fewer "
                    "partitions per night"
                )
            self.sleep(self.poll_s)


def run_plan(plan: CompactionPlan, runner: DatabricksSqlRunner, policy: RetryPolicy) -> int:
    """Run the plan's statements; conflicts are retried. Returns the number of retries."""
    retries = 0
    for sql in statements(plan):

        def step(sql: str = sql) -> str:
            return runner.execute(sql)

        _, n = with_retries(
            step,
            policy,
            what=f"{sql.split(' ', 1)[0]} {plan.table}",
            retryable=lambda e: isinstance(e, StatementFailed) and e.is_conflict,
        )
        retries += n
    return retries
