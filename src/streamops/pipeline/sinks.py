"""Delta sinks for foreachBatch, the same on every target: each micro-batch lands exactly once.

Spark's executors write (Delta Lake through Spark); nothing is collected to the driver. Appends
carry `txnAppId`/`txnVersion` (app id = the stable query name), MERGE the session-level
`spark.databricks.delta.write.txnAppId`/`txnVersion`, so a batch that Spark replays after a
crash is skipped by Delta itself. Each commit records the batch's id, end offsets and
transaction version (`commit_meta`), the basis for rebuilding a lost checkpoint.

The transaction version is the batch id plus a base fixed when a run starts (`_txn_plan`): a
checkpoint that starts again behind its table (rebuilt, restored from a backup, or new) numbers
its batches from a lower id than the table already holds, and with version = batch id Delta
would skip each of them without a word. A replay is recognised by its content instead (the same
batch id over the same end offsets), and every other batch gets a version above the table's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from streamops.bundle.tables import TableRef, as_ref
from streamops.errors import DataLossError, KafkaError, SinkError, StreamopsError
from streamops.pipeline.commit_meta import BatchCommit, encode, from_commit_info
from streamops.pipeline.delta_tables import delta_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# Columns of the bronze stream that are Kafka coordinates rather than event fields.
KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp")
QUARANTINE_COLUMNS = (
    "key", "value", *KAFKA_COLUMNS, "reason", "query_name", "batch_id",
)  # fmt: skip
# Session settings that make MERGE idempotent per batch (Delta Lake and Databricks alike).
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
# How far back in a table's history a batch's own commit is looked for (other writers, such as
# compaction, may have committed after it).
HISTORY_WINDOW = 10

EndOffsets = Callable[[int], Sequence[Any]]
# Turns the bare facts of a data loss into the error a person reads (the source's fix named).
ExplainLoss = Callable[[DataLossError], DataLossError]


@dataclass(frozen=True)
class SinkSpec:
    """Where and how one query writes."""

    table_uri: str | TableRef  # a path, or the table as bundle.table_ref() resolved it
    app_id: str  # the stable query name
    mode: Literal["append", "merge"] = "append"
    merge_keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchWrite:
    """What one micro-batch did to a table."""

    batch_id: int
    rows: int
    version: int | None
    skipped: bool  # already committed by an earlier attempt of the same batch
    seconds: float
    file_sizes: tuple[int, ...] = ()  # bytes of each data file the commit added (mean per file)
    quarantined: int = 0  # bronze query: rows sent to the quarantine table
    table: str = "gold"


@dataclass(frozen=True)
class _Committed:
    version: int
    rows: int
    files: int
    bytes: int


def _find_commit(
    spark: SparkSession, uri: str | TableRef, app_id: str, batch_id: int, txn: int
) -> _Committed | None:
    """This batch's commit (under transaction version `txn`) in the table's recent history, or
    None (not written / skipped)."""
    rows = (
        delta_table(spark, uri)
        .history(HISTORY_WINDOW)
        .select("version", "userMetadata", "operationMetrics")
        .collect()
    )
    for r in rows:
        c = from_commit_info({"userMetadata": r["userMetadata"]})
        if c is not None and c.query == app_id and c.batch_id == batch_id and c.txn == txn:
            m = r["operationMetrics"] or {}
            rows_out = int(m.get("numOutputRows") or 0) + int(m.get("numTargetRowsInserted") or 0)
            files = int(m.get("numFiles") or m.get("numTargetFilesAdded") or 0)
            size = int(m.get("numOutputBytes") or m.get("numTargetBytesAdded") or 0)
            return _Committed(int(r["version"]), rows_out, files, size)
    return None


# Growing windows of history read at the start of a run, newest commits first.
_PLAN_WINDOWS = (HISTORY_WINDOW, 500, None)


@dataclass(frozen=True)
class _TxnPlan:
    """How a run numbers its writes to one table: version = base + batch id."""

    base: int
    replayed: bool  # the run's first batch is already in the table (same id, same offsets)


def _txn_plan(
    spark: SparkSession, uri: str | TableRef, app_id: str, batch_id: int, end: Sequence[Any]
) -> _TxnPlan:
    """Decide, at a run's first batch, whether it is a replay and the base of its versions.

    Commits of `app_id` are read newest first, down to the first one of an earlier batch (the
    current checkpoint wrote nothing older than that which matters here).
    """
    newest: BatchCommit | None = None
    own: BatchCommit | None = None
    want = list(end)
    for limit in _PLAN_WINDOWS:
        history = delta_table(spark, uri).history(limit).select("userMetadata").collect()
        newest = own = None
        reached_earlier = False
        for r in history:
            c = from_commit_info({"userMetadata": r["userMetadata"]})
            if c is None or c.query != app_id:
                continue
            newest = newest or c
            if c.batch_id == batch_id and list(c.end_offsets) == want:
                own = c
                break
            if c.batch_id < batch_id:
                reached_earlier = True
                break
        if own is not None or reached_earlier or limit is None or len(history) < limit:
            break
    if newest is None:
        return _TxnPlan(0, False)
    if own is not None:  # Spark replays a batch the table holds: skip it, go on after the table
        return _TxnPlan(newest.txn - batch_id, True)
    if newest.batch_id < batch_id:  # the checkpoint goes on where the table stands
        return _TxnPlan(newest.txn - newest.batch_id, False)
    # The checkpoint is behind the table: continue above the table's newest version.
    return _TxnPlan(newest.txn + 1 - batch_id, False)


def _silently_skipped(spec: SinkSpec, table: str | TableRef, batch_id: int, txn: int) -> SinkError:
    return SinkError(
        f"batch {batch_id} of query '{spec.app_id}' was not committed to {table}: Delta skipped "
        f"it as already written (app transaction '{spec.app_id}' version {txn} or later is in "
        "the table), yet no commit of this batch is there. Nothing was lost yet; the query "
        "stops. Fix: run `streamops checkpoint check` for the job and restart it; if the table "
        "was restored or copied, rebuild the query's output from its source"
    )


def _sizes(c: _Committed | None) -> tuple[int, ...]:
    if c is None or c.files <= 0:
        return ()
    return (c.bytes // c.files,) * c.files


def ensure_table(
    spark: SparkSession,
    uri: str | TableRef,
    schema: StructType,
    partition_by: Sequence[str] = (),
    cluster_by: Sequence[str] = (),
) -> None:
    """Create the Delta table `uri` with `schema` when it does not exist, partitioned or
    clustered as asked (both are chosen at CREATE)."""
    from delta.tables import DeltaTable

    builder = as_ref(uri).create_builder(DeltaTable.createIfNotExists(spark)).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    if cluster_by:
        builder = builder.clusterBy(*cluster_by)
    builder.execute()


def _append(df: DataFrame, spec: SinkSpec, txn: int, meta: str) -> None:
    w = (
        df.write.format("delta").mode("append")
        .option("txnAppId", spec.app_id).option("txnVersion", str(txn))
        .option("userMetadata", meta)
    )  # fmt: skip
    if spec.partition_by:
        w = w.partitionBy(*spec.partition_by)
    as_ref(spec.table_uri).save(w)


def _merge(df: DataFrame, spec: SinkSpec, txn: int, meta: str) -> None:
    spark = df.sparkSession
    # Each streaming query runs in its own cloned session, so these settings cannot leak into
    # another query's writes; they are unset again whatever happens.
    spark.conf.set(TXN_APP_ID, spec.app_id)
    spark.conf.set(TXN_VERSION, str(txn))
    spark.conf.set(USER_METADATA, meta)
    try:
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in spec.merge_keys)
        (
            delta_table(spark, spec.table_uri).alias("t")
            .merge(df.alias("s"), cond)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )  # fmt: skip
    finally:
        for k in (TXN_APP_ID, TXN_VERSION, USER_METADATA):
            spark.conf.unset(k)


# Java exceptions that mean "the query is being stopped", as Spark recognises them in the error
# text of a Python foreachBatch function.
_INTERRUPTIONS = (
    "java.lang.InterruptedException",
    "java.io.InterruptedIOException",
    "java.nio.channels.ClosedByInterruptException",
)


# Spark's Kafka source, failOnDataLoss=true, when retention deleted records before they were read.
_DATA_LOSS = re.compile(
    r"Could not read records in offset \[(\d+), (\d+)\) for topic partition (\S+)-(\d+)"
)


class QueryStopping(Exception):
    """The batch was interrupted because its query is being stopped (not a failure)."""


def _fail(spec: SinkSpec, batch_id: int, exc: BaseException) -> Exception:
    """A short error for Spark to report; the long py4j text would bury it.

    This is where Spark's own text is read, once: a data loss leaves here as a DataLossError
    with the lost range as fields. Spark matches the Python error text against a pattern that
    recurses once per character to tell a stop from a failure; a Java stack trace with the query
    plan in it overflows the stream thread's stack there. So the text stays short, and an
    interruption keeps the exact words Spark looks for, so that stopping a query mid-batch ends
    it quietly instead of failing it.
    """
    text = str(exc)
    stop = next((name for name in _INTERRUPTIONS if name in text), None)
    if stop is not None:
        return QueryStopping(
            f"py4j.protocol.Py4JJavaError: An error occurred while calling {spec.app_id}.\n: {stop}"
        )
    if isinstance(exc, SinkError | KafkaError):
        return exc
    loss = _DATA_LOSS.search(text)
    if loss is not None:
        start, end, topic, part = loss.groups()
        return DataLossError(
            f"{topic}[{part}] offsets {start}..{int(end) - 1} of batch {batch_id} of query "
            f"'{spec.app_id}' are no longer in Kafka",
            topic=topic,
            partition=int(part),
            first_offset=int(start),
            last_offset=int(end) - 1,
            batch_id=batch_id,
            query=spec.app_id,
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return SinkError(
        f"writing batch {batch_id} of query '{spec.app_id}' to {spec.table_uri} failed: "
        f"{first[:500]}. Nothing was committed for this batch; the query retries it from its "
        "checkpoint"
    )


class _BatchWriter:
    """A foreachBatch function: short errors for Spark, and which batches may be replays.

    Spark hands a foreachBatch error back to the query's caller only as text, so the writer keeps
    the typed error it raised (`failure`): the caller re-raises that, and never reads the text.
    """

    spec: SinkSpec  # the table named in errors
    explain_loss: ExplainLoss | None = None
    failure: StreamopsError | None = None  # the error this writer failed its query with
    _last: int | None = None
    _plans: dict[str, _TxnPlan] | None = None  # per table, made at the run's first batch

    def _plan(
        self, spark: SparkSession, spec: SinkSpec, batch_id: int, end: Sequence[Any], first: bool
    ) -> _TxnPlan:
        """The table's plan for this run (made at the run's first batch)."""
        if self._plans is None:
            self._plans = {}
        plans = self._plans
        key = str(spec.table_uri)
        if first or key not in plans:
            plans[key] = _txn_plan(spark, spec.table_uri, spec.app_id, batch_id, end)
            return plans[key]
        return _TxnPlan(plans[key].base, False)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        try:
            self._write(df, batch_id)
        except Exception as exc:
            error = _fail(self.spec, batch_id, exc)
            if isinstance(error, DataLossError) and self.explain_loss is not None:
                error = self.explain_loss(error)
            if isinstance(error, StreamopsError):
                self.failure = error
            raise error from None

    def _may_be_replay(self, batch_id: int) -> bool:
        """Whether a table may already hold `batch_id`: Spark replays only the first batch after a
        (re)start, and batch ids only grow within a run; other batches skip the history read."""
        maybe = self._last is None or batch_id <= self._last
        self._last = batch_id
        return maybe

    def _write(self, df: DataFrame, batch_id: int) -> None:
        raise NotImplementedError


class GoldWriter(_BatchWriter):
    """foreachBatch of a gold query: MERGE (aggregates) or append the batch, once, to a table
    that exists already (`pipeline.gold` creates it, in the layout bundle.yml gives it).

    The batch is materialised once (cached) before the write: a replayed stateful batch must
    still run its plan, or Spark's state-store commit for it fails validation, and Delta skips
    the write of an already-committed batch without running the plan.
    """

    def __init__(
        self,
        spec: SinkSpec,
        end_offsets: EndOffsets,
        on_write: Callable[[BatchWrite], None] | None = None,
        after_commit: Callable[[int], None] | None = None,
        explain_loss: ExplainLoss | None = None,
    ):
        self.spec = spec
        self.end_offsets = end_offsets
        self.on_write = on_write
        # Runs after the Delta commit, before Spark's commit file (crash tests inject here).
        self.after_commit = after_commit
        self.explain_loss = explain_loss

    def _write(self, df: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        spec = self.spec
        spark = df.sparkSession
        end = tuple(self.end_offsets(batch_id))
        first = self._may_be_replay(batch_id)
        plan = self._plan(spark, spec, batch_id, end, first)
        txn = plan.base + batch_id
        meta = encode(BatchCommit(spec.app_id, batch_id, end, txn))
        df.persist()
        try:
            rows = df.count()  # runs the plan (state included) exactly once
            if rows and not plan.replayed:
                if spec.mode == "merge":
                    _merge(df, spec, txn, meta)
                else:
                    _append(df, spec, txn, meta)
        finally:
            df.unpersist()
        done = None
        if rows and not plan.replayed:
            done = _find_commit(spark, spec.table_uri, spec.app_id, batch_id, txn)
            if done is None:
                raise _silently_skipped(spec, spec.table_uri, batch_id, txn)
            if self.after_commit is not None:
                self.after_commit(batch_id)
        if self.on_write is not None:
            self.on_write(
                BatchWrite(batch_id, 0 if plan.replayed else rows,
                           done.version if done else None, plan.replayed,
                           time.monotonic() - t0, _sizes(done))
            )  # fmt: skip


class BronzeWriter(_BatchWriter):
    """foreachBatch of the bronze query: good events to bronze, bad ones to quarantine.

    Both tables are written for the same batch id under the bronze query's app id, so a replayed
    batch skips whichever table already has it: nothing is lost or written twice, and every
    input row lands in exactly one of the two (checked per batch).
    """

    def __init__(
        self,
        bronze: SinkSpec,
        quarantine: SinkSpec,
        event_fields: tuple[str, ...],
        end_offsets: EndOffsets,
        on_write: Callable[[BatchWrite], None] | None = None,
        after_commit: Callable[[int], None] | None = None,
        explain_loss: ExplainLoss | None = None,
    ):
        self.bronze = self.spec = bronze
        self.quarantine = quarantine
        self.event_fields = event_fields
        self.end_offsets = end_offsets
        self.on_write = on_write
        self.after_commit = after_commit
        self.explain_loss = explain_loss

    def _write(self, df: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        t0 = time.monotonic()
        app = self.bronze.app_id
        spark = df.sparkSession
        end = tuple(self.end_offsets(batch_id))
        first = self._may_be_replay(batch_id)
        plans = {s.table_uri: self._plan(spark, s, batch_id, end, first)
                 for s in (self.bronze, self.quarantine)}  # fmt: skip
        held = {uri for uri, plan in plans.items() if plan.replayed}
        df.persist()
        try:
            # One small aggregate (two numbers) instead of reading the batch twice.
            counts = {
                r["good"]: int(r["n"])
                for r in df.groupBy(F.col("reason").isNull().alias("good"))
                .agg(F.count(F.lit(1)).alias("n"))
                .collect()
            }
            n_good, n_bad = counts.get(True, 0), counts.get(False, 0)
            good = df.filter(F.col("reason").isNull()).select(*self.event_fields, *KAFKA_COLUMNS)
            bad = df.filter(F.col("reason").isNotNull()).select(
                "key", "value", *KAFKA_COLUMNS, "reason",
                F.lit(app).alias("query_name"), F.lit(batch_id).cast("long").alias("batch_id"),
            )  # fmt: skip
            written: dict[str | TableRef, _Committed | None] = {}
            for spec, part, n in ((self.bronze, good, n_good), (self.quarantine, bad, n_bad)):
                if not n or spec.table_uri in held:
                    continue
                txn = plans[spec.table_uri].base + batch_id
                try:
                    _append(part, spec, txn, encode(BatchCommit(app, batch_id, end, txn)))
                except Exception as exc:
                    raise _fail(spec, batch_id, exc) from None
                done = _find_commit(spark, spec.table_uri, app, batch_id, txn)
                if done is None:
                    raise _silently_skipped(spec, spec.table_uri, batch_id, txn)
                written[spec.table_uri] = done
        finally:
            df.unpersist()
        self._check(batch_id, n_good, n_bad, written)
        if self.after_commit is not None and written:
            self.after_commit(batch_id)
        if self.on_write is not None:
            b = written.get(self.bronze.table_uri)
            q = written.get(self.quarantine.table_uri)
            self.on_write(
                BatchWrite(batch_id, n_good, b.version if b else None, bool(held),
                           time.monotonic() - t0, _sizes(b) + _sizes(q),
                           quarantined=n_bad, table="bronze")
            )  # fmt: skip

    def _check(
        self,
        batch_id: int,
        n_good: int,
        n_bad: int,
        written: dict[str | TableRef, _Committed | None],
    ) -> None:
        # Delta's own figures for what landed: a write that lost rows must not pass unnoticed.
        for uri, expected in ((self.bronze.table_uri, n_good), (self.quarantine.table_uri, n_bad)):
            c = written.get(uri)
            if c is not None and c.rows != expected:
                raise SinkError(
                    f"batch {batch_id} of '{self.bronze.app_id}': {expected} rows went to {uri} "
                    f"but its commit {c.version} reports {c.rows}; stopping before the batch is "
                    "marked done. Fix: inspect that version (DESCRIBE HISTORY) and restart"
                )
