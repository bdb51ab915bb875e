"""Delta sinks for foreachBatch: idempotent, exactly-once micro-batches.

Locally delta-rs writes each batch with an app transaction (app id = query name, version =
batch id); on Databricks, Delta's txnAppId/txnVersion do the same. A batch that Spark replays
after a crash finds its version already committed and is skipped, so nothing is written twice.
Each commit records the batch's end offsets, the basis for rebuilding a lost checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamops.errors import SinkError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

META_QUERY = "streamops.query"
META_BATCH = "streamops.batchId"
META_END_OFFSETS = "streamops.endOffsets"


@dataclass(frozen=True)
class SinkSpec:
    """Where and how one query writes."""

    table_uri: str
    app_id: str  # the stable query name
    checkpoint: str
    mode: Literal["append", "merge"] = "append"
    merge_keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    storage_options: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BatchWrite:
    """What one micro-batch did to the table."""

    batch_id: int
    rows: int
    version: int | None
    skipped: bool  # already committed by an earlier attempt of the same batch
    seconds: float
    file_sizes: tuple[int, ...] = ()  # bytes of each data file the commit added
    quarantined: int = 0  # bronze query: rows sent to the quarantine table
    table: str = "gold"


def _end_offsets(spec: SinkSpec, batch_id: int) -> str:
    from streamops.checkpoint.reader import read_offsets

    try:
        f = read_offsets(spec.checkpoint, batch_id)
    except (OSError, ValueError):
        return ""
    return json.dumps([s for s in f.sources if s is not None], separators=(",", ":"))


def _open(spec: SinkSpec) -> Any:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(spec.table_uri, storage_options=spec.storage_options)
    except TableNotFoundError:
        return None


def already_committed(dt: Any, spec: SinkSpec, batch_id: int) -> bool:
    """True when this query's app transaction in the table already covers `batch_id`."""
    if dt is None:
        return False
    done = dt.transaction_version(spec.app_id)
    return done is not None and done >= batch_id


def added_file_sizes(spec: SinkSpec, version: int) -> tuple[int, ...]:
    """Sizes in bytes of the data files that commit `version` added (from the Delta log)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(spec.table_uri, **(spec.storage_options or {}))
    try:
        with fs.open(f"{root.rstrip('/')}/_delta_log/{version:020d}.json", "rt") as fh:
            actions = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError):
        return ()
    return tuple(int(a["add"]["size"]) for a in actions if "add" in a)


def commit_batch(spec: SinkSpec, dt: Any, data: Any, batch_id: int) -> int:
    """Write `data` as batch `batch_id` in one Delta commit; return the new table version."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    props = CommitProperties(
        app_transactions=[Transaction(spec.app_id, batch_id)],
        custom_metadata={
            META_QUERY: spec.app_id,
            META_BATCH: str(batch_id),
            META_END_OFFSETS: _end_offsets(spec, batch_id),
        },
    )
    try:
        if spec.mode == "merge" and dt is not None:
            pred = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.merge_keys)
            (
                dt.merge(data, pred, source_alias="s", target_alias="t", commit_properties=props)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        else:
            write_deltalake(
                spec.table_uri,
                data,
                mode="append",
                partition_by=list(spec.partition_by) or None,
                storage_options=spec.storage_options,
                commit_properties=props,
            )
    except Exception as exc:
        raise SinkError(
            f"writing batch {batch_id} of query '{spec.app_id}' to {spec.table_uri} failed: {exc}. "
            "Nothing was committed for this batch; the query will retry it from its checkpoint"
        ) from exc
    reopened = _open(spec)
    assert reopened is not None
    return int(reopened.version())


class DeltaRsWriter:
    """foreachBatch function writing with delta-rs (the local engine)."""

    def __init__(
        self,
        spec: SinkSpec,
        on_write: Callable[[BatchWrite], None] | None = None,
        after_commit: Callable[[int], None] | None = None,
    ):
        self.spec = spec
        self.on_write = on_write
        # Fault-injection point for tests: runs after the Delta commit, before Spark's commit file.
        self.after_commit = after_commit

    def committed_version(self) -> int | None:
        """The last batch id committed to the table by this query, or None."""
        dt = _open(self.spec)
        return None if dt is None else dt.transaction_version(self.spec.app_id)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        spec = self.spec
        dt = _open(spec)
        if already_committed(dt, spec, batch_id):
            # Replayed batch: already in the table. A stateful query must still run its plan, or
            # Spark's state store commit for this batch fails validation.
            df.write.format("noop").mode("overwrite").save()
            self._report(BatchWrite(batch_id, 0, dt.version(), True, time.monotonic() - t0))
            return
        data = df.toArrow()
        if data.num_rows == 0:
            version = dt.version() if dt is not None else None
            self._report(BatchWrite(batch_id, 0, version, False, time.monotonic() - t0))
            return
        version = commit_batch(spec, dt, data, batch_id)
        if self.after_commit is not None:
            self.after_commit(batch_id)
        self._report(
            BatchWrite(batch_id, data.num_rows, version, False, time.monotonic() - t0,
                       file_sizes=added_file_sizes(spec, version))
        )  # fmt: skip

    def _report(self, w: BatchWrite) -> None:
        if self.on_write is not None:
            self.on_write(w)


# Columns of the bronze stream that are Kafka coordinates rather than event fields.
KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp")


class BronzeWriter:
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
        on_write: Callable[[BatchWrite], None] | None = None,
        after_commit: Callable[[int], None] | None = None,
    ):
        self.bronze = bronze
        self.quarantine = quarantine
        self.event_fields = event_fields
        self.on_write = on_write
        self.after_commit = after_commit

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        t0 = time.monotonic()
        data = df.toArrow()
        good_mask = pc.is_null(data.column("reason"))
        good = data.filter(good_mask).select([*self.event_fields, *KAFKA_COLUMNS])
        bad = data.filter(pc.invert(good_mask)).select(
            [
                "key",
                "value",
                "kafka_topic",
                "kafka_partition",
                "kafka_offset",
                "kafka_timestamp",
                "reason",
            ]
        )
        bad = bad.append_column(
            "query_name", pa.array([self.bronze.app_id] * bad.num_rows, pa.string())
        )
        bad = bad.append_column("batch_id", pa.array([batch_id] * bad.num_rows, pa.int64()))
        if good.num_rows + bad.num_rows != data.num_rows:
            raise SinkError(
                f"batch {batch_id} of '{self.bronze.app_id}': {data.num_rows} rows in but "
                f"{good.num_rows} good + {bad.num_rows} quarantined; refusing to commit a batch "
                "that would lose rows"
            )
        sizes: list[int] = []
        skipped = True
        version = None
        for spec, rows in ((self.bronze, good), (self.quarantine, bad)):
            dt = _open(spec)
            if already_committed(dt, spec, batch_id) or rows.num_rows == 0:
                continue
            skipped = False
            v = commit_batch(spec, dt, rows, batch_id)
            sizes += added_file_sizes(spec, v)
            if spec is self.bronze:
                version = v
        if self.after_commit is not None and not skipped:
            self.after_commit(batch_id)
        if self.on_write is not None:
            self.on_write(
                BatchWrite(batch_id, good.num_rows, version, skipped and data.num_rows > 0,
                           time.monotonic() - t0, file_sizes=tuple(sizes),
                           quarantined=bad.num_rows, table="bronze")
            )  # fmt: skip


class DeltaSparkWriter:
    """foreachBatch function writing with Spark's Delta (Databricks and clusters with the jar)."""

    def __init__(self, spec: SinkSpec, on_write: Callable[[BatchWrite], None] | None = None):
        self.spec = spec
        self.on_write = on_write

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        spec = self.spec
        spark = df.sparkSession
        meta = json.dumps({META_QUERY: spec.app_id, META_BATCH: batch_id,
                           META_END_OFFSETS: _end_offsets(spec, batch_id)})  # fmt: skip
        if spec.mode == "merge":
            from delta.tables import DeltaTable

            # Session-level txnAppId/txnVersion make MERGE idempotent per batch (DBR 12.2+).
            spark.conf.set("spark.databricks.delta.write.txnAppId", spec.app_id)
            spark.conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
            spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", meta)
            try:
                if not DeltaTable.isDeltaTable(spark, spec.table_uri):
                    df.write.format("delta").mode("append").save(spec.table_uri)
                else:
                    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.merge_keys)
                    (
                        DeltaTable.forPath(spark, spec.table_uri).alias("t")
                        .merge(df.alias("s"), cond)
                        .whenMatchedUpdateAll()
                        .whenNotMatchedInsertAll()
                        .execute()
                    )  # fmt: skip
            finally:
                for k in ("txnAppId", "txnVersion"):
                    spark.conf.unset(f"spark.databricks.delta.write.{k}")
                spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
        else:
            (
                df.write.format("delta").mode("append")
                .option("txnAppId", spec.app_id).option("txnVersion", batch_id)
                .option("userMetadata", meta)
                .partitionBy(*spec.partition_by)
                .save(spec.table_uri)
            )  # fmt: skip
        if self.on_write is not None:
            self.on_write(BatchWrite(batch_id, -1, None, False, time.monotonic() - t0))


def writer_for(
    engine: str,
    spec: SinkSpec,
    on_write: Callable[[BatchWrite], None] | None = None,
    after_commit: Callable[[int], None] | None = None,
) -> Any:
    """The foreachBatch function for the target's sink engine."""
    if engine == "delta-rs":
        return DeltaRsWriter(spec, on_write, after_commit)
    return DeltaSparkWriter(spec, on_write)
