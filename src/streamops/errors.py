"""Errors typed by meaning. Each one says what went wrong, where, and the fix."""

from __future__ import annotations

from dataclasses import dataclass


class StreamopsError(Exception):
    """Base of every error streamops raises on purpose; the CLI prints these without traceback."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One finding about a bundle: where it is, what is wrong, how to fix it."""

    file: str
    line: int | None
    path: str
    message: str
    fix: str = ""
    severity: str = "error"  # "error" | "warning"

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        tag = "warning: " if self.severity == "warning" else ""
        message = self.message.rstrip(".")
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}: {tag}{self.path}: {message}.{fix}"


class BundleError(StreamopsError):
    """The bundle cannot be used; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class UsageError(StreamopsError):
    """The command was called wrongly (unknown job, target, missing option)."""

    exit_code = 2


class KafkaError(StreamopsError):
    """The broker cannot be reached, a topic is missing, or offsets are gone."""


class DataLossError(KafkaError):
    """Records a query had still to read were deleted from Kafka (retention) first.

    Raised once, where Spark reports the loss, with the lost range as fields: nothing downstream
    reads the message to learn which records they were.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
        batch_id: int,
        query: str,
    ):
        super().__init__(message)
        self.topic, self.partition = topic, partition
        self.first_offset, self.last_offset = first_offset, last_offset
        self.batch_id, self.query = batch_id, query


class SinkError(StreamopsError):
    """A Delta sink cannot be written or read as expected."""


class QueryStoppedError(StreamopsError):
    """A streaming query of a job ended without an error while nobody asked the job to stop: a
    run that ended 0 then would be a silent outage, so the runner exits non-zero (Databricks
    restarts the run)."""

    def __init__(self, message: str, *, job: str, query: str):
        super().__init__(message)
        self.job, self.query = job, query


class LocalStackError(StreamopsError):
    """A local component (broker, Azurite) could not be installed, started or reached."""


class MissingDependencyError(StreamopsError):
    """An optional package is not installed; the message names the install command."""

    def __init__(self, package: str, extra: str):
        self.package = package
        self.extra = extra
        super().__init__(
            f"the Python package '{package}' is needed here but is not installed. "
            f"Fix: pip install 'streamops[{extra}]' (or run `make setup`)."
        )


class CompactionError(StreamopsError):
    """A Delta table could not be compacted or vacuumed (commit conflicts kept winning, a failed
    statement on Databricks, an unreadable log)."""


class CompactionConflictError(CompactionError):
    """Concurrent writers kept winning the commit race after every retry; names the table and the
    conflicting operation (e.g. a stream's MERGE) for the page."""

    def __init__(self, message: str, *, table: str, operation: str, attempts: int):
        super().__init__(message)
        self.table, self.operation, self.attempts = table, operation, attempts


class UnsafeVacuumError(CompactionError):
    """A VACUUM retention shorter than a streaming reader's lag, or than Delta's 168-hour floor;
    running it would delete files a reader (or time travel) still needs."""

    exit_code = 2


class CheckpointError(StreamopsError):
    """A checkpoint (or its registry, backup or offsets file) cannot be used as it is."""


class CheckpointGuardError(CheckpointError):
    """Starting or deploying would silently restart a query from scratch (its checkpoint moved,
    vanished while the sink holds data, was reset, or its query name changed)."""


class StorageAccessError(StreamopsError):
    """A storage location the driver reads cannot be reached with the login it has (missing,
    refused, or misconfigured); one line naming the location and the fix."""


class MonitoringLoginError(StreamopsError):
    """The metric exporter cannot log in to Azure Monitor as configured (which login, why, fix)."""


class WorkspaceAccessError(StreamopsError):
    """No way into the target's Databricks workspace: no Airflow connection and no host / token
    in bundle.yml, or a login streamops cannot use."""


class DeployError(StreamopsError):
    """A job cannot be deployed or operated as asked."""


class DriftError(DeployError):
    """The live job was edited outside the bundle; deploying would silently undo that edit."""


class RunWaitTimeout(DeployError):
    """A Databricks run did not reach the expected state in time."""
