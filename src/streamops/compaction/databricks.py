"""The Databricks engine: the plan's SQL (`compaction.sql`) run on a SQL warehouse.

Statements go through the Airflow Databricks provider's hook (SQL Statement Execution API,
`POST /api/2.0/sql/statements`, then polling `GET /api/2.0/sql/statements/{id}`). Commit
conflicts with the streams (Delta's Concurrent*Exception) are retried by `sql.run_plan`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from streamops.compaction.sql import Dialect, StatementFailed
from streamops.errors import CompactionError, MissingDependencyError


@dataclass
class DatabricksSqlRunner:
    """Runs statements on a SQL warehouse through the Airflow Databricks provider's hook."""

    dialect: ClassVar[Dialect] = "databricks"
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

    def execute(self, statement: str, *, user_metadata: str | None = None) -> str:
        """Submit one statement and wait for it; the statement id, or StatementFailed.

        `user_metadata` is not sent: each API call runs in a session of its own, so a warehouse
        cannot attach session-level commit metadata to the statement's commit.
        """
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
