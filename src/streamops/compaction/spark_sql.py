"""Run the plan's SQL through Spark (local target): the statements a Databricks warehouse gets.

Statements run in a session of their own (`newSession()`: same JVM and jars, separate SQL
settings), so the commit metadata and OPTIMIZE file sizes set here never reach a stream writing
through the caller's session at the same time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from streamops.compaction.sql import Dialect, StatementFailed, conflicting_operation

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_ERROR_CLASS = re.compile(r"^\[([A-Z][A-Z0-9_.]*)\]")


@dataclass
class SparkSqlRunner:
    """Executes compaction statements with `spark.sql`; failures become StatementFailed."""

    dialect: ClassVar[Dialect] = "spark"
    spark: SparkSession
    sent: list[str] = field(default_factory=list)

    @cached_property
    def session(self) -> SparkSession:
        return self.spark.newSession()

    def execute(self, statement: str, *, user_metadata: str | None = None) -> str:
        """Run one statement to completion; its text, or StatementFailed (conflicts retryable)."""
        self.sent.append(statement)
        conf = self.session.conf
        if user_metadata is not None:
            conf.set(USER_METADATA, user_metadata)
        try:
            self.session.sql(statement).collect()  # OPTIMIZE / VACUUM return a few summary rows
        except Exception as exc:
            raise statement_failed(statement, exc) from exc
        finally:
            if user_metadata is not None:
                conf.unset(USER_METADATA)
        return statement


def statement_failed(statement: str, exc: Exception) -> StatementFailed:
    """Spark's error as a StatementFailed: its error class (or Java class) and first line.

    Errors Spark knows arrive as pyspark exceptions with an error condition; Delta's commit
    conflicts (io.delta.exceptions.Concurrent*Exception) arrive as a bare Py4JJavaError.
    """
    java = getattr(exc, "java_exception", None)
    if java is not None:
        kind = str(java.getClass().getSimpleName())
        message = str(java.getMessage() or "")
    else:
        kind = type(exc).__name__
        message = str(exc)
    first = message.strip().splitlines()[0] if message.strip() else ""
    condition = _condition(exc, first)
    return StatementFailed(
        statement,
        "FAILED",
        condition or kind,
        f"{kind}: {first}",
        engine="Spark",
        conflicting=conflicting_operation(message),
    )


def _condition(exc: Exception, first_line: str) -> str:
    get = getattr(exc, "getCondition", None)
    if callable(get):
        try:
            found = get()
        except Exception:  # a JVM-side error without a condition: fall back to the message
            found = None
        if found:
            return str(found)
    m = _ERROR_CLASS.match(first_line)
    return m.group(1) if m else ""
