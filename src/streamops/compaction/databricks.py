"""The Databricks engine: the plan's SQL (`compaction.sql`) run on a SQL warehouse.

Statements go through the target's provider hook (`streamops.databricks_access`; SQL Statement
Execution API, `POST /api/2.0/sql/statements`, then polling `GET /api/2.0/sql/statements/{id}`
on the access's clock). Commit conflicts with the streams (Delta's Concurrent*Exception) are
retried by `sql.run_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from streamops.clock import WaitTimeout, poll
from streamops.compaction.sql import Dialect, StatementFailed
from streamops.errors import CompactionError

if TYPE_CHECKING:
    from streamops.databricks_access import DatabricksAccess


@dataclass
class DatabricksSqlRunner:
    """Runs statements on a SQL warehouse through the access's provider hook."""

    dialect: ClassVar[Dialect] = "databricks"
    access: DatabricksAccess
    warehouse_id: str
    poll_s: float = 5.0
    timeout_s: float = 6 * 3600
    sent: list[str] = field(default_factory=list)

    def execute(self, statement: str, *, user_metadata: str | None = None) -> str:
        """Submit one statement and wait for it; the statement id, or StatementFailed.

        `user_metadata` is not sent: each API call runs in a session of its own, so a warehouse
        cannot attach session-level commit metadata to the statement's commit.
        """
        hook = self.access.hook()
        sid: str = hook.post_sql_statement(
            {
                "statement": statement,
                "warehouse_id": self.warehouse_id,
                "wait_timeout": "0s",
                "on_wait_timeout": "CONTINUE",
            }
        )
        self.sent.append(statement)

        def ended() -> Any:
            st = hook.get_sql_statement_state(sid)
            return st if st.is_terminal else None

        try:
            st = poll(
                ended,
                timeout_s=self.timeout_s,
                interval_s=self.poll_s,
                what=f"Databricks statement {sid}",
                clock=self.access.clock,
            )
        except WaitTimeout:
            hook.cancel_sql_statement(sid)
            raise CompactionError(
                f"Databricks statement {sid} still running after {self.timeout_s:g} s and "
                f"was cancelled [{statement}]. Fix: size the warehouse up or compact fewer "
                "partitions per night"
            ) from None
        if not st.is_successful:
            raise StatementFailed(statement, st.state, st.error_code, st.error_message)
        return sid
