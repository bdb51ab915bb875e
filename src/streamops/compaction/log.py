"""Reading what compaction needs from a Delta table: live files, the last compaction, changes since.

The last successful compaction is the newest commit carrying the `streamops.compaction` marker
in its commit metadata (the OPTIMIZE commit's `userMetadata`, `{"streamops.compaction": "<marker
json>"}`); it records the table version the compaction read and the partitions it deferred.
Partitions changed since are those with data-changing `add` actions in later commits (OPTIMIZE
adds have dataChange=false).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.compaction.plan import FileInfo, Partition, TableState, partitions_from_values
from streamops.errors import CompactionError
from streamops.pipeline.driver_delta import open_delta

if TYPE_CHECKING:
    from streamops.bundle import StorageLogin

MARKER = "streamops.compaction"
# Commit metadata key of a VACUUM's commits (START/END): the run they belong to.
RUN_KEY = "streamops.compaction.run"
# Walking further back than this many commits costs more than compacting every partition.
MAX_WALK = 20_000
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


@dataclass(frozen=True)
class Marker:
    """What a compaction commit records about itself."""

    run_id: str
    read_version: int
    deferred: tuple[Partition, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "runId": self.run_id,
                "readVersion": self.read_version,
                "deferred": [dict(p) for p in self.deferred],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_commit_info(cls, info: dict[str, Any], columns: tuple[str, ...]) -> Marker | None:
        raw = info.get(MARKER)
        if raw is None and isinstance(info.get("userMetadata"), str):
            try:
                raw = json.loads(info["userMetadata"]).get(MARKER)
            except (ValueError, AttributeError):
                raw = None
        if raw is None:
            return None
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
            return cls(
                run_id=str(data["runId"]),
                read_version=int(data["readVersion"]),
                deferred=tuple(
                    partitions_from_values(columns, d) for d in data.get("deferred", [])
                ),
            )
        except (ValueError, KeyError, TypeError):
            return None  # someone else's metadata under our key: not a boundary


def open_table(location: str, login: StorageLogin | None = None) -> Any:
    """The DeltaTable at `location`, or None when no table exists there yet (delta-rs; on the
    job cluster delta-spark through its session: streamops.pipeline.driver_delta)."""
    return open_delta(location, login)


def live_files(dt: Any) -> tuple[FileInfo, ...]:
    """The table's current data files with their sizes and partition values."""
    import pyarrow as pa

    columns = tuple(dt.metadata().partition_columns)
    t = pa.table(dt.get_add_actions(flatten=True))
    paths = t.column("path").to_pylist()
    sizes = t.column("size_bytes").to_pylist()
    parts = [t.column(f"partition.{c}").to_pylist() for c in columns]
    out = []
    for i, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        values = tuple(
            (c, None if parts[j][i] is None else str(parts[j][i])) for j, c in enumerate(columns)
        )
        out.append(FileInfo(path, int(size), values))
    return tuple(out)


def _commit_lines(
    location: str, version: int, login: StorageLogin | None
) -> Iterator[dict[str, Any]]:
    name = f"_delta_log/{version:020d}.json"
    if _SCHEME.match(location):
        import fsspec

        url = f"{location.rstrip('/')}/{name}"
        with fsspec.open(url, "rt", **(login.adlfs() if login else {})) as fh:
            text = fh.read()
    else:
        text = (Path(location) / name).read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def read_state(location: str, login: StorageLogin | None = None) -> TableState | None:
    """The table's state for planning, or None when there is no table at `location` yet."""
    dt = open_table(location, login)
    if dt is None:
        return None
    version = dt.version()
    columns = tuple(dt.metadata().partition_columns)
    changed: set[Partition] = set()
    since: int | None = None
    complete = False
    try:
        for v in range(version, max(-1, version - MAX_WALK), -1):
            actions = list(_commit_lines(location, v, login))
            info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
            marker = Marker.from_commit_info(info, columns)
            if marker is not None:
                since = marker.read_version
                changed.update(marker.deferred)
                # Commits between what the compaction read and its own commit were written
                # concurrently and were not compacted: walk on down to its read version.
                for w in range(v - 1, marker.read_version, -1):
                    changed.update(_changed_in(location, w, login, columns))
                complete = True
                break
            changed.update(_adds(actions, columns))
        else:
            complete = False
    except FileNotFoundError:
        complete = False  # log cleaned up past the last compaction: every partition is a candidate
    except (OSError, ValueError) as exc:
        raise CompactionError(
            f"cannot read the Delta log of {location}: {exc}. Fix: check the path and access"
        ) from exc
    return TableState(
        version=version,
        partition_columns=columns,
        files=live_files(dt),
        since_version=since,
        changed=frozenset(changed) if complete else None,
        properties=dict(dt.metadata().configuration),
        clustering=clustering_columns(location, dt, login),
    )


CLUSTERING_DOMAIN = "delta.clustering"


def clustering_columns(
    location: str, dt: Any, login: StorageLogin | None = None
) -> tuple[str, ...] | None:
    """The table's liquid clustering columns, or None when it is not clustered.

    They live in the `delta.clustering` domain metadata (delta-rs does not expose it): the
    newest `domainMetadata` action in the commits, else in the last checkpoint.
    """
    if "clustering" not in (dt.protocol().writer_features or []):
        return None
    version = dt.version()
    try:
        for v in range(version, max(-1, version - MAX_WALK), -1):
            for a in _commit_lines(location, v, login):
                dm = a.get("domainMetadata")
                if dm and dm.get("domain") == CLUSTERING_DOMAIN:
                    return () if dm.get("removed") else _clustering_of(dm.get("configuration"))
    except FileNotFoundError:
        pass  # older commits cleaned up: the checkpoint holds the domain
    return _checkpoint_clustering(location, login)


def _clustering_of(configuration: str | None) -> tuple[str, ...]:
    cols = json.loads(configuration or "{}").get("clusteringColumns") or []
    # Each column is a path of nested field names.
    return tuple(".".join(c) if isinstance(c, list) else str(c) for c in cols)


def _checkpoint_clustering(location: str, login: StorageLogin | None) -> tuple[str, ...]:
    import fsspec
    import pyarrow.parquet as pq

    root = location.rstrip("/") if _SCHEME.match(location) else Path(location).as_posix()
    fs, base = fsspec.core.url_to_fs(root, **(login.adlfs() if login else {}))
    try:
        with fs.open(f"{base}/_delta_log/_last_checkpoint", "rt") as fh:
            last = json.loads(fh.read())
        name = f"{base}/_delta_log/{int(last['version']):020d}.checkpoint.parquet"
        with fs.open(name, "rb") as fh:
            rows = pq.read_table(fh, columns=["domainMetadata"]).column(0).to_pylist()
    except (FileNotFoundError, KeyError, ValueError):
        return ()
    for dm in rows:
        if dm and dm.get("domain") == CLUSTERING_DOMAIN and not dm.get("removed"):
            return _clustering_of(dm.get("configuration"))
    return ()


def _changed_in(
    location: str, version: int, login: StorageLogin | None, columns: tuple[str, ...]
) -> set[Partition]:
    return _adds(list(_commit_lines(location, version, login)), columns)


def _adds(actions: list[dict[str, Any]], columns: tuple[str, ...]) -> set[Partition]:
    out: set[Partition] = set()
    for a in actions:
        add = a.get("add")
        if add is not None and add.get("dataChange", True):
            out.add(partitions_from_values(columns, add.get("partitionValues") or {}))
    return out


@dataclass(frozen=True)
class RunMetrics:
    """What one compaction run's commits say they did (`operationMetrics` in the log)."""

    files_removed: int = 0
    files_added: int = 0
    # From the VACUUM END commit; None when no VACUUM ran or the engine logged none.
    vacuum_files_deleted: int | None = None


def run_metrics(
    location: str,
    read_version: int,
    version: int,
    run_id: str,
    login: StorageLogin | None,
) -> RunMetrics:
    """Files removed/added by the run's OPTIMIZE and deleted by its VACUUM, from the commits
    after `read_version` up to `version` (their commitInfo `operationMetrics`).

    Commits tagged by another run are not counted; untagged ones are (a SQL warehouse cannot
    tag its commits, and one table has one nightly run at a time).
    """
    removed = added = 0
    deleted: int | None = None
    for v in range(version, read_version, -1):
        actions = _commit_lines(location, v, login)
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        if _run_of(info) not in (None, run_id):
            continue
        m = info.get("operationMetrics") or {}
        if info.get("operation") == "OPTIMIZE":
            removed += int(m.get("numRemovedFiles", 0) or 0)
            added += int(m.get("numAddedFiles", 0) or 0)
        elif info.get("operation") == "VACUUM END":
            deleted = (deleted or 0) + int(m.get("numDeletedFiles", 0) or 0)
    return RunMetrics(removed, added, deleted)


def _run_of(commit: dict[str, Any]) -> str | None:
    """The compaction run id a commit is tagged with (marker or VACUUM tag), else None."""
    raw = commit.get("userMetadata")
    if not isinstance(raw, str):
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    if isinstance(meta.get(RUN_KEY), str):
        return str(meta[RUN_KEY])
    marker = Marker.from_commit_info(commit, ())
    return marker.run_id if marker else None
