"""Delta tables as the driver's Python readers see them: delta-rs off the cluster, delta-spark on it.

`open_delta(location, login)` is the one door: it returns a table offering the few reads the
checkpoint guard, reconstruction, the late report and compaction planning use (`version`,
`metadata`, `protocol`, `history`, `transaction_version`, `get_add_actions`, `to_pyarrow_table`,
`to_pandas`), or None when no table is there yet.
- Off the cluster (Airflow, CLI): delta-rs with the login's options (every value a str); a
  refused, missing or misconfigured login is a StorageAccessError naming the location and the fix,
  never a TypeError/OSError traceback from inside delta-rs.
- On the job cluster (`cluster_spark`): delta-spark through the active session, so the reads use
  the cluster's own login. `transaction_version` is read from the commits' streamops metadata in
  the table's history (delta-spark has no public API for app transactions): a query whose last
  commit is older than the log's retention (30 days by default) is not seen there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streamops.bundle.storage import STORAGE_OPTIONS_ENV, StorageLogin
from streamops.errors import StorageAccessError
from streamops.pipeline.cluster_fs import active_session, storage_error
from streamops.pipeline.commit_meta import decode

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import SparkSession


def open_delta(location: str, login: StorageLogin | None) -> Any:
    """The Delta table at `location` read with `login` (None: the library's defaults), or None
    when there is no table there yet; StorageAccessError when it cannot be reached."""
    if login is not None and login.kind == "cluster_spark":
        return SparkDelta.open(location)
    if login is not None and not login.reachable:
        raise StorageAccessError(
            f"cannot read the Delta table {location}: no storage login for it is known here. "
            f"Fix: set ${STORAGE_OPTIONS_ENV} to its account's login (account key, SAS token or "
            "service principal), or run this on the job cluster"
        )
    return _open_delta_rs(location, login.deltalake() if login is not None else None)


def _open_delta_rs(location: str, options: dict[str, str] | None) -> Any:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(location, storage_options=options or None)
    except TableNotFoundError:
        return None
    except Exception as exc:  # delta-rs/object_store: auth, config, network (typed loosely)
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise StorageAccessError(
            f"cannot read the Delta table {location} ({type(exc).__name__}: {first[:300]}). "
            f"Fix: check its login (${STORAGE_OPTIONS_ENV} off the cluster, "
            "targets.<target>.databricks.storage on it) and that it may read this location"
        ) from None


@dataclass(frozen=True)
class Metadata:
    """The parts of a table's metadata the readers use (delta-rs's names)."""

    id: str
    partition_columns: list[str]
    configuration: dict[str, str]


@dataclass(frozen=True)
class Protocol:
    reader_features: list[str] | None
    writer_features: list[str] | None


@dataclass(frozen=True)
class SparkDelta:
    """A Delta table read through the active Spark session (delta-spark), delta-rs's interface."""

    spark: SparkSession
    location: str

    @classmethod
    def open(cls, location: str) -> SparkDelta | None:
        from delta.tables import DeltaTable
        from py4j.protocol import Py4JJavaError

        spark = active_session(location)
        try:
            found = DeltaTable.isDeltaTable(spark, location)
        except Py4JJavaError as exc:
            raise storage_error(location, exc.java_exception) from None
        return cls(spark, location) if found else None

    def _table(self) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.location)

    def _detail(self) -> Any:
        return self._table().detail().first()

    def version(self) -> int:
        return int(self._table().history(1).select("version").first()[0])

    def metadata(self) -> Metadata:
        d = self._detail()
        return Metadata(
            str(d["id"]), list(d["partitionColumns"] or []), dict(d["properties"] or {})
        )

    def protocol(self) -> Protocol:
        features = list(self._detail()["tableFeatures"] or [])
        return Protocol(features, features)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit infos, newest first, in delta-rs's shape (timestamp in epoch milliseconds)."""
        t = self._table()
        rows = (t.history(limit) if limit is not None else t.history()).collect()
        out = []
        for r in rows:
            info = r.asDict(recursive=True)
            if isinstance(info.get("timestamp"), datetime):
                info["timestamp"] = int(info["timestamp"].timestamp() * 1000)
            out.append(info)
        return out

    def transaction_version(self, app_id: str) -> int | None:
        """The newest app-transaction version `app_id` (a query name) committed, from the
        streamops metadata of the commits still in the history; None when there is none."""
        versions = [
            c.txn
            for i in self.history()
            if (c := decode(i.get("userMetadata"))) and c.query == app_id
        ]
        return max(versions, default=None)

    def get_add_actions(self, flatten: bool = True) -> pa.Table:
        """The live data files: `path`, `size_bytes` and `partition.<column>` (values as Spark
        reads them), from Spark's file metadata column."""
        import pyarrow as pa
        from pyspark.sql import functions as F

        columns = self.metadata().partition_columns
        df = self.spark.read.format("delta").load(self.location)
        cols = [F.col("_metadata.file_path").alias("path"), F.col("_metadata.file_size")]
        rows = df.select(*cols, *columns).distinct().collect()
        root = self.location.rstrip("/") + "/"
        data: dict[str, list[Any]] = {
            "path": [_relative(r["path"], root) for r in rows],
            "size_bytes": [int(r["file_size"]) for r in rows],
        }
        for c in columns:
            data[f"partition.{c}"] = [r[c] for r in rows]
        return pa.table(data)

    def to_pandas(self, columns: list[str] | None = None) -> pd.DataFrame:
        df = self.spark.read.format("delta").load(self.location)
        return (df.select(*columns) if columns else df).toPandas()

    def to_pyarrow_table(self, columns: list[str] | None = None) -> pa.Table:
        import pyarrow as pa

        return pa.Table.from_pandas(self.to_pandas(columns), preserve_index=False)


def _relative(path: str, root: str) -> str:
    """A data file's path relative to the table root, as the Delta log (and delta-rs) name it."""
    from urllib.parse import unquote

    marker = root.split("://", 1)[-1].lstrip("/")
    plain = unquote(path)
    at = plain.find(marker)
    return plain[at + len(marker) :] if marker and at >= 0 else plain
