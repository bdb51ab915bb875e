"""One report per table and run: files and bytes before/after, small-file ratio, partitions, time.

Kept as JSON under `<state_dir>/reports/compaction/`, printed (CLI, Airflow task log) and
emitted as metrics shaped like the streams' (JSON lines under `<state_dir>/metrics/`, and Azure
Monitor's Logs Ingestion API on targets that send metrics there).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from streamops.bundle import Bundle

# managed: predictive optimization maintains the table; nothing was run.
_log = logging.getLogger("streamops.compaction")

Status = Literal["compacted", "planned", "nothing_to_do", "no_table", "failed", "managed"]


@dataclass(frozen=True)
class Snapshot:
    files: int
    bytes: int
    small_files: int

    @property
    def small_file_ratio(self) -> float:
        return round(self.small_files / self.files, 4) if self.files else 0.0


@dataclass(frozen=True)
class CompactionReport:
    table: str
    target: str
    engine: str
    status: Status
    dry_run: bool
    started_at: str  # ISO-8601 UTC
    duration_s: float
    before: Snapshot
    after: Snapshot
    read_version: int | None = None
    version_after: int | None = None
    partitions_touched: tuple[str, ...] = ()
    partitions_skipped: tuple[str, ...] = ()
    zorder_by: tuple[str, ...] = ()
    # Liquid clustering columns OPTIMIZE clustered by (a clustered table), else ().
    cluster_by: tuple[str, ...] = ()
    files_removed: int = 0
    files_added: int = 0
    vacuum_retention_hours: int | None = None
    vacuum_files_deleted: int | None = None
    # Why that retention: Delta's 168-hour floor, the slowest reader's lag + margin, or requested.
    vacuum_reason: str | None = None
    # Commit conflicts with concurrent writers that were retried on a fresh snapshot.
    retries: int = 0
    message: str = ""
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return round(self.before.bytes / 1e6 / self.duration_s, 2) if self.duration_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["before"]["small_file_ratio"] = self.before.small_file_ratio
        d["after"]["small_file_ratio"] = self.after.small_file_ratio
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompactionReport:
        d = dict(d)
        for k in ("before", "after"):
            snap = dict(d[k])
            snap.pop("small_file_ratio", None)
            d[k] = Snapshot(**snap)
        for k in ("partitions_touched", "partitions_skipped", "zorder_by", "cluster_by"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line (CLI output and the Airflow task log)."""
        b, a = self.before, self.after
        out = [
            f"table {self.table} [{self.target}, {self.engine}]: {self.status}"
            + (" (dry run: nothing changed)" if self.dry_run else ""),
            f"  files  {b.files} -> {a.files}   bytes {b.bytes} -> {a.bytes}",
            f"  small-file ratio {b.small_file_ratio:.2%} -> {a.small_file_ratio:.2%}",
            f"  partitions touched {len(self.partitions_touched)}: "
            + (", ".join(self.partitions_touched) or "-"),
        ]
        if self.partitions_skipped:
            out.append("  left alone: " + ", ".join(self.partitions_skipped))
        if self.zorder_by:
            out.append(f"  Z-order by {', '.join(self.zorder_by)}")
        if self.cluster_by:
            out.append(f"  liquid clustering by {', '.join(self.cluster_by)} (incremental)")
        if self.vacuum_retention_hours is not None:
            deleted = "-" if self.vacuum_files_deleted is None else self.vacuum_files_deleted
            out.append(
                f"  VACUUM retain {self.vacuum_retention_hours} hours "
                f"({self.vacuum_reason or 'reason not recorded'}), files deleted {deleted}"
            )
        out.append(
            f"  versions {self.read_version} -> {self.version_after}, conflicts retried "
            f"{self.retries}, {self.duration_s:.2f} s"
        )
        if self.message:
            out.append(f"  {self.message}")
        return out


def reports_dir(bundle: Bundle) -> Path:
    return bundle.state_dir / "reports" / "compaction"


def save(bundle: Bundle, report: CompactionReport) -> Path:
    """Write the report as JSON; one file per table and run, plus `<table>.latest.json`."""
    d = reports_dir(bundle)
    d.mkdir(parents=True, exist_ok=True)
    stamp = report.started_at.replace(":", "").replace("-", "")[:15]
    path = d / f"{stamp}-{report.table}.json"
    text = report.to_json()
    path.write_text(text, encoding="utf-8")
    (d / f"{report.table}.latest.json").write_text(text, encoding="utf-8")
    return path


METRICS = (
    ("files_before", "count", lambda r: r.before.files),
    ("files_after", "count", lambda r: r.after.files),
    ("bytes_before", "bytes", lambda r: r.before.bytes),
    ("bytes_after", "bytes", lambda r: r.after.bytes),
    ("small_file_ratio_before", "ratio", lambda r: r.before.small_file_ratio),
    ("small_file_ratio_after", "ratio", lambda r: r.after.small_file_ratio),
    ("partitions_touched", "count", lambda r: len(r.partitions_touched)),
    ("files_removed", "count", lambda r: r.files_removed),
    ("files_added", "count", lambda r: r.files_added),
    ("duration_seconds", "seconds", lambda r: r.duration_s),
    ("commit_retries", "count", lambda r: r.retries),
    ("vacuum_retention_hours", "hours", lambda r: r.vacuum_retention_hours),
    ("vacuum_files_deleted", "count", lambda r: r.vacuum_files_deleted),
    ("managed_by_predictive_optimization", "flag", lambda r: int(r.status == "managed")),
    ("failed", "flag", lambda r: int(r.status == "failed")),
)
# The Query column of every compaction point (the streams' points carry their query name there);
# the Job column carries the table.
QUERY = "compaction"


def metric_points(report: CompactionReport, now: datetime) -> list[dict[str, Any]]:
    """The report as metric points shaped like the streams' (`monitoring.metrics_table`):
    `streamops.compaction.<name>`, job = the table, query = 'compaction', the target."""
    return [
        {
            "ts": now.isoformat(),
            "name": f"streamops.compaction.{name}",
            "value": value,
            "unit": unit,
            "job": report.table,
            "query": QUERY,
            "target": report.target,
        }
        for name, unit, get in METRICS
        if (value := get(report)) is not None
    ]


def emit_metrics(
    bundle: Bundle, report: CompactionReport, now: datetime, *, credential: Any = None
) -> Path:
    """Export the report's points the way the streams' metrics go: JSON lines in
    `<state_dir>/metrics/compaction.jsonl` on every target, and to Azure Monitor (Logs
    Ingestion API, the same custom table) where the target sends metrics there.

    A failed upload is logged with its cause and does not fail the compaction it describes.
    """
    from streamops.monitoring.exporters import AzureMonitorSink, JsonlSink, metrics_dir

    points = metric_points(report, now)
    directory = metrics_dir(bundle.state_dir)
    JsonlSink(directory)(points)
    mon = bundle.target.monitoring
    if mon.metrics == "azure-monitor" and mon.ingestion_endpoint and mon.dcr_immutable_id:
        try:
            if credential is None:  # never DefaultAzureCredential on a cluster (azure_login.py)
                from streamops.monitoring.azure_login import exporter_credential

                credential = exporter_credential(bundle)
            sink = AzureMonitorSink(
                mon.ingestion_endpoint, mon.dcr_immutable_id, mon.dcr_stream, credential=credential
            )
            sink(points)  # one small batch per table and night: no buffer thread needed
        except Exception as exc:
            _log.warning(
                "compaction metrics of table %s not sent to Azure Monitor (%s): %s: %s",
                report.table,
                mon.ingestion_endpoint,
                type(exc).__name__,
                exc,
            )
    return directory / f"{QUERY}.jsonl"
