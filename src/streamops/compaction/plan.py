"""What one compaction run will do to one table: pure planning, no I/O.

The inputs (the table's live files, which partitions changed since the last compaction) come
from the Delta log through `streamops.compaction.log`; `compaction.sql` turns the plan into the
SQL that Spark (local) or a Databricks SQL warehouse runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamops.bundle.tables import quote_ident
from streamops.errors import UnsafeVacuumError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

# Delta's own floor (delta.deletedFileRetentionDuration defaults to 7 days): below it a reader
# that started before the VACUUM, or time travel inside the window, can find files gone.
MIN_RETENTION_HOURS = 168
MB = 1024 * 1024

# A partition as (column, value) pairs in partition-column order; () for an unpartitioned table.
Partition = tuple[tuple[str, str | None], ...]


def partition_label(p: Partition) -> str:
    """'day=2026-11-24/site=a' (Hive style), or '(table)' for an unpartitioned table."""
    return "/".join(f"{k}={'null' if v is None else v}" for k, v in p) or "(table)"


@dataclass(frozen=True)
class FileInfo:
    """One live data file of the table."""

    path: str
    size: int
    partition: Partition = ()


@dataclass(frozen=True)
class TableState:
    """What the Delta log says about a table, as planning needs it."""

    version: int
    partition_columns: tuple[str, ...]
    files: tuple[FileInfo, ...]
    # readVersion of the last successful compaction; None: never compacted (everything changed).
    since_version: int | None
    # Partitions with data written after `since_version` (plus those a previous run deferred);
    # None when unknown (never compacted, or the log was cleaned up): treat all as changed.
    changed: frozenset[Partition] | None
    # The table's properties (`delta.*` configuration in its metadata).
    properties: Mapping[str, str] = field(default_factory=dict)
    # Liquid clustering columns in effect (the `delta.clustering` domain); None: not clustered.
    clustering: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PartitionPlan:
    partition: Partition
    files: int
    bytes: int
    small_files: int

    @property
    def label(self) -> str:
        return partition_label(self.partition)


@dataclass(frozen=True)
class SkippedPartition:
    partition: Partition
    files: int
    reason: str

    @property
    def label(self) -> str:
        return partition_label(self.partition)


@dataclass(frozen=True)
class VacuumPlan:
    retention_hours: int
    # Why this retention: Delta's floor, or the slowest reader plus the margin.
    governed_by: str


@dataclass(frozen=True)
class CompactionPlan:
    """One table's compaction: which partitions, toward which file size, Z-order, VACUUM."""

    table: str
    location: str
    uc_name: str | None
    read_version: int
    since_version: int | None
    partition_columns: tuple[str, ...]
    target_file_size: int  # bytes
    small_file_size: int  # bytes; smaller files count as small in the report
    zorder_by: tuple[str, ...]
    partitions: tuple[PartitionPlan, ...]
    # The table's liquid clustering columns: plain OPTIMIZE clusters incrementally by them.
    cluster_by: tuple[str, ...] = ()
    skipped: tuple[SkippedPartition, ...] = ()
    vacuum: VacuumPlan | None = None
    table_files: int = 0
    table_bytes: int = 0
    table_small_files: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def files(self) -> int:
        return sum(p.files for p in self.partitions)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions)

    @property
    def optimizes(self) -> bool:
        return bool(self.partitions)

    @property
    def deferred(self) -> tuple[Partition, ...]:
        """Partitions left alone this run that the next run must still treat as changed."""
        return tuple(s.partition for s in self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "location": self.location,
            "read_version": self.read_version,
            "since_version": self.since_version,
            "target_file_size": self.target_file_size,
            "zorder_by": list(self.zorder_by),
            "cluster_by": list(self.cluster_by),
            "partitions": [
                {
                    "partition": p.label,
                    "files": p.files,
                    "bytes": p.bytes,
                    "small_files": p.small_files,
                }
                for p in self.partitions
            ],
            "skipped": [
                {"partition": s.label, "files": s.files, "reason": s.reason} for s in self.skipped
            ],
            "files": self.files,
            "bytes": self.bytes,
            "vacuum": (
                {
                    "retention_hours": self.vacuum.retention_hours,
                    "governed_by": self.vacuum.governed_by,
                }
                if self.vacuum
                else None
            ),
            "notes": list(self.notes),
        }


def _sort_key(value: str | None) -> tuple[int, str]:
    # Date/hour partition values sort as text when written ISO style ('2026-11-24', '2026-11-24 06').
    return (0, "") if value is None else (1, value)


def vacuum_plan(bundle: Bundle, key: str, requested_hours: float | None = None) -> VacuumPlan:
    """The VACUUM retention for table `key`: max(168 h, slowest reader's lag + margin).

    A requested retention below that raises UnsafeVacuumError naming the reader it would break.
    """
    table = bundle.table(key)
    margin = bundle.spec.compaction.vacuum_margin.seconds
    slowest = max(table.readers, key=lambda r: r.max_lag.seconds, default=None)
    needed_by_reader = (
        math.ceil((slowest.max_lag.seconds + margin) / 3600) if slowest is not None else 0
    )
    floor = max(MIN_RETENTION_HOURS, needed_by_reader)
    if slowest is not None and needed_by_reader >= MIN_RETENTION_HOURS:
        why = (
            f"reader '{slowest.name}' (max lag {slowest.max_lag}) + margin "
            f"{bundle.spec.compaction.vacuum_margin}"
        )
    else:
        why = f"Delta's {MIN_RETENTION_HOURS}-hour minimum"
    if requested_hours is None:
        return VacuumPlan(floor, why)
    if slowest is not None and requested_hours < needed_by_reader:
        raise UnsafeVacuumError(
            f"table '{key}': VACUUM RETAIN {requested_hours:g} HOURS would delete files that "
            f"streaming reader '{slowest.name}' (max lag {slowest.max_lag}) may still need; the "
            f"shortest safe retention is {needed_by_reader} hours (its lag + margin "
            f"{bundle.spec.compaction.vacuum_margin}). Fix: retain at least {floor} hours, or "
            f"lower tables.{key}.readers max_lag in bundle.yml if that reader is faster now"
        )
    if requested_hours < MIN_RETENTION_HOURS:
        raise UnsafeVacuumError(
            f"table '{key}': VACUUM RETAIN {requested_hours:g} HOURS is below Delta's "
            f"{MIN_RETENTION_HOURS}-hour minimum; running streams and time travel inside that "
            f"window could lose files. Fix: retain at least {floor} hours"
        )
    return VacuumPlan(math.ceil(requested_hours), "requested")


def build_plan(
    bundle: Bundle,
    key: str,
    state: TableState,
    *,
    zorder: bool = False,
    vacuum: bool = False,
    retain_hours: float | None = None,
) -> CompactionPlan:
    """Plan one run: changed partitions with something to compact, minus the one being written."""
    table = bundle.table(key)
    target = table.target_file_size_mb * MB
    small = int(target * bundle.spec.compaction.small_file_fraction)
    zcols = tuple(table.zorder_by) if zorder else ()
    notes: list[str] = list(layout_notes(bundle, key, state))
    if state.clustering is not None and zcols:
        zcols = ()  # Delta refuses ZORDER BY on a clustered table; OPTIMIZE clusters it instead
    if state.changed is None:
        notes.append("no earlier compaction found in the log: every partition is a candidate")
    parts, skipped = _partitions(state, table.time_partition, small, zorder=bool(zcols))
    return CompactionPlan(
        table=key,
        location=bundle.table_location(key),
        uc_name=table.name,
        read_version=state.version,
        since_version=state.since_version,
        partition_columns=state.partition_columns,
        target_file_size=target,
        small_file_size=small,
        zorder_by=zcols,
        partitions=tuple(parts),
        cluster_by=state.clustering or (),
        skipped=tuple(skipped),
        vacuum=vacuum_plan(bundle, key, retain_hours) if vacuum else None,
        table_files=len(state.files),
        table_bytes=sum(f.size for f in state.files),
        table_small_files=sum(f.size < small for f in state.files),
        notes=tuple(notes),
    )


def _partitions(
    state: TableState, tcol: str | None, small: int, *, zorder: bool
) -> tuple[list[PartitionPlan], list[SkippedPartition]]:
    """The changed partitions worth compacting, and those skipped (the newest, being written)."""
    clustered = state.clustering is not None
    by_part: dict[Partition, list[FileInfo]] = {}
    for f in state.files:
        by_part.setdefault(f.partition, []).append(f)

    # The newest time partition is still being written (several, when other columns differ).
    active_parts: set[Partition] = set()
    if tcol and tcol in state.partition_columns and by_part:
        newest = max((dict(p).get(tcol) for p in by_part), key=_sort_key)
        active_parts = {p for p in by_part if dict(p).get(tcol) == newest}

    changed = state.changed
    parts: list[PartitionPlan] = []
    skipped: list[SkippedPartition] = []
    for p in sorted(by_part, key=lambda p: [_sort_key(v) for _, v in p]):
        files = by_part[p]
        if changed is not None and p not in changed:
            continue
        if p in active_parts:
            skipped.append(
                SkippedPartition(p, len(files), f"newest '{tcol}' partition: still being written")
            )
            continue
        n_small = sum(f.size < small for f in files)
        # One file is already compact; Z-order still sorts it when asked to.
        if len(files) < 2 and not zorder:
            continue
        # New files of a clustered table are not clustered yet, whatever their size.
        if not zorder and not clustered and n_small < 2:
            continue  # nothing to bin-pack: at most one file below the small-file size
        parts.append(PartitionPlan(p, len(files), sum(f.size for f in files), n_small))
    return parts, skipped


def layout_notes(bundle: Bundle, key: str, state: TableState) -> tuple[str, ...]:
    """Warnings when the table's layout (clustering, partitioning) is not the bundle's."""
    table = bundle.table(key)
    want = tuple(table.cluster_by)
    have = state.clustering
    ref = quote_ident(table.name) if table.name else f"delta.`{bundle.table_location(key)}`"
    if want and have != want:
        if have:
            now = f"clustered by {', '.join(have)}"
        elif state.partition_columns:
            now = f"partitioned by {', '.join(state.partition_columns)}"
        else:
            now = "not clustered"
        if state.partition_columns:
            fix = (
                f"recreate the table clustered (CREATE TABLE ... CLUSTER BY ({', '.join(want)}) "
                "AS SELECT ...): a partitioned table cannot be altered to clustering"
            )
        else:
            fix = f"ALTER TABLE {ref} CLUSTER BY ({', '.join(quote_ident(c) for c in want)})"
        return (
            f"warning: tables.{key}.cluster_by is [{', '.join(want)}] but the table is {now}; "
            f"OPTIMIZE follows the table. Fix: {fix}",
        )
    if have and not want:
        return (
            f"warning: the table is clustered by {', '.join(have)} but tables.{key} has no "
            f"cluster_by; OPTIMIZE clusters it (ZORDER BY is not allowed there). Fix: add "
            f"`cluster_by: [{', '.join(have)}]` to tables.{key} in bundle.yml",
        )
    return ()


def partitions_from_values(columns: Iterable[str], values: Mapping[str, str | None]) -> Partition:
    """A Partition from a Delta `partitionValues` mapping, in partition-column order."""
    return tuple((c, values.get(c)) for c in columns)
