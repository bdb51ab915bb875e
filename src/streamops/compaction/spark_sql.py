"""Run the plan's SQL through a SparkSession (local target): the statements Databricks gets.

The compaction marker (run id, read version, deferred partitions) rides in each commit's
`userMetadata`, set for the session while the statements run, so "changed partitions only"
reads it back from the Delta log like any other commit metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamops.compaction.databricks import StatementFailed

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass
class SparkSqlRunner:
    """Executes compaction statements with `spark.sql`; failures become StatementFailed."""

    spark: SparkSession
    user_metadata: str | None = None
    sent: list[str] = field(default_factory=list)

    def execute(self, statement: str) -> str:
        """Run one statement to completion; its text, or StatementFailed (conflicts retryable)."""
        self.sent.append(statement)
        if self.user_metadata is not None:
            self.spark.conf.set(USER_METADATA, self.user_metadata)
        try:
            self.spark.sql(statement).collect()  # OPTIMIZE/VACUUM return a few summary rows
        except Exception as exc:
            text = str(exc)
            code = next((w for w in text.replace("(", " ").split()
                         if "Concurrent" in w or w.startswith("DELTA_")), "")  # fmt: skip
            raise StatementFailed(statement, "FAILED", code, text.splitlines()[0]) from exc
        finally:
            if self.user_metadata is not None:
                self.spark.conf.unset(USER_METADATA)
        return statement
