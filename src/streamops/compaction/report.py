"""One report per table and run: files and bytes before/after, small-file ratio, partitions, time.

Kept as JSON under `<cache_dir>/reports/compaction/`, printed (CLI, Airflow task log) and
emitted as metrics (JSON lines under `<cache_dir>/metrics/`, the local target's metrics sink).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from streamops.bundle import Bundle

Status = Literal["compacted", "planned", "nothing_to_do", "no_table", "failed"]


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
    files_removed: int = 0
    files_added: int = 0
    vacuum_retention_hours: int | None = None
    vacuum_files_deleted: int | None = None
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
        for k in ("partitions_touched", "partitions_skipped", "zorder_by"):
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
        if self.vacuum_retention_hours is not None:
            deleted = "-" if self.vacuum_files_deleted is None else self.vacuum_files_deleted
            out.append(
                f"  VACUUM retain {self.vacuum_retention_hours} hours, files deleted {deleted}"
            )
        out.append(
            f"  versions {self.read_version} -> {self.version_after}, retries {self.retries}, "
            f"{self.duration_s:.2f} s"
        )
        if self.message:
            out.append(f"  {self.message}")
        return out


def reports_dir(bundle: Bundle) -> Path:
    return bundle.cache_dir / "reports" / "compaction"


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
    ("files_before", lambda r: r.before.files),
    ("files_after", lambda r: r.after.files),
    ("bytes_before", lambda r: r.before.bytes),
    ("bytes_after", lambda r: r.after.bytes),
    ("small_file_ratio_before", lambda r: r.before.small_file_ratio),
    ("small_file_ratio_after", lambda r: r.after.small_file_ratio),
    ("partitions_touched", lambda r: len(r.partitions_touched)),
    ("duration_seconds", lambda r: r.duration_s),
    ("commit_retries", lambda r: r.retries),
    ("failed", lambda r: int(r.status == "failed")),
)


def metric_points(report: CompactionReport, now: datetime) -> list[dict[str, Any]]:
    """The report as metric points: `streamops.compaction.<name>` tagged with table and target."""
    tags = {"table": report.table, "target": report.target, "engine": report.engine}
    return [
        {"ts": now.isoformat(), "metric": f"streamops.compaction.{name}", "value": get(report),
         "tags": tags}
        for name, get in METRICS
    ]  # fmt: skip


def emit_metrics(bundle: Bundle, report: CompactionReport, now: datetime) -> Path:
    """Append the report's metric points to `<cache_dir>/metrics/compaction.jsonl`."""
    d = bundle.cache_dir / "metrics"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "compaction.jsonl"
    with path.open("a", encoding="utf-8") as fh:
        for p in metric_points(report, now):
            fh.write(json.dumps(p, separators=(",", ":")) + "\n")
    return path
