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


def _end_offsets(spec: SinkSpec, batch_id: int) -> str:
    from streamops.checkpoint.reader import read_offsets

    try:
        f = read_offsets(spec.checkpoint, batch_id)
    except (OSError, ValueError):
        return ""
    return json.dumps([s for s in f.sources if s is not None], separators=(",", ":"))


class DeltaRsWriter:
    """foreachBatch function writing with delta-rs (the local engine)."""

    def __init__(self, spec: SinkSpec, on_write: Callable[[BatchWrite], None] | None = None):
        self.spec = spec
        self.on_write = on_write

    def committed_version(self) -> int | None:
        """The last batch id committed to the table by this query, or None."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            dt = DeltaTable(self.spec.table_uri, storage_options=self.spec.storage_options)
        except TableNotFoundError:
            return None
        return dt.transaction_version(self.spec.app_id)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
        from deltalake.exceptions import TableNotFoundError

        t0 = time.monotonic()
        spec = self.spec
        try:
            dt: DeltaTable | None = DeltaTable(spec.table_uri, storage_options=spec.storage_options)
        except TableNotFoundError:
            dt = None
        done = dt.transaction_version(spec.app_id) if dt is not None else None
        if dt is not None and done is not None and done >= batch_id:
            # Replayed batch: already in the table. A stateful query must still run its plan, or
            # Spark's state store commit for this batch fails validation.
            df.write.format("noop").mode("overwrite").save()
            self._report(BatchWrite(batch_id, 0, dt.version(), True, time.monotonic() - t0))
            return
        data = df.toArrow()
        if data.num_rows == 0:
            self._report(
                BatchWrite(batch_id, 0, dt.version() if dt else None, False, time.monotonic() - t0)
            )
            return
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
                    dt.merge(
                        data, pred, source_alias="s", target_alias="t", commit_properties=props
                    )
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
        version = DeltaTable(spec.table_uri, storage_options=spec.storage_options).version()
        self._report(BatchWrite(batch_id, data.num_rows, version, False, time.monotonic() - t0))

    def _report(self, w: BatchWrite) -> None:
        if self.on_write is not None:
            self.on_write(w)


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
    engine: str, spec: SinkSpec, on_write: Callable[[BatchWrite], None] | None = None
) -> Any:
    """The foreachBatch function for the target's sink engine."""
    if engine == "delta-rs":
        return DeltaRsWriter(spec, on_write)
    return DeltaSparkWriter(spec, on_write)
