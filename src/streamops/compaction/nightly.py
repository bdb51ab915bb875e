"""The nightly run, as the Airflow DAG calls it: one table per task, one summary at the end.

Kept out of the DAG file so it is testable without Airflow: the DAG passes the attempt number
and the number of attempts, and gets plain dicts back (XCom-safe: no secrets, no objects).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamops.compaction.run import compact_table
from streamops.compaction.run_report import CompactionReport, emit_metrics, save
from streamops.errors import CompactionConflictError, CompactionError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

log = logging.getLogger("streamops.compaction")


def nightly_table(
    bundle: Bundle, key: str, *, attempt: int, attempts: int, **engine: Any
) -> dict[str, Any]:
    """Compact one table (Z-order when it has zorder_by, then VACUUM); the report as a dict.

    On the last attempt a failure pages before it is raised again, so Airflow marks it failed.
    `engine`: what compact_table takes to run elsewhere (runner, spark, access, clock).
    """
    table = bundle.table(key)
    try:
        report = compact_table(bundle, key, zorder=bool(table.zorder_by), vacuum=True, **engine)
    except Exception as exc:
        log.error("compaction of %s failed (attempt %d of %d): %s", key, attempt, attempts, exc)
        if attempt >= attempts:
            _page_failure(bundle, key, attempts, exc)
        raise
    path = save(bundle, report)
    emit_metrics(bundle, report, datetime.now(UTC))
    for line in report.lines():
        log.info("%s", line)
    log.info("report: %s", path)
    return report.to_dict()


def _page_failure(bundle: Bundle, key: str, attempts: int, exc: Exception) -> None:
    """One page for the table's last failed attempt; a lost commit race names the operation."""
    from streamops.monitoring.paging import page

    details: dict[str, Any] = {
        "table": key,
        "target": bundle.target_name,
        "attempts": attempts,
        "error": f"{type(exc).__name__}: {exc}",
        "runbook": bundle.spec.alerts.runbook_url,
    }
    if isinstance(exc, CompactionConflictError):
        summary = (
            f"streamops: nightly compaction of table '{key}' lost every commit race to a "
            f"concurrent {exc.operation} ({exc.attempts} tries per attempt, {attempts} "
            "attempts)"
        )
        details |= {"conflicting_operation": exc.operation, "tries_per_attempt": exc.attempts}
    else:
        summary = f"streamops: nightly compaction of table '{key}' failed {attempts} times"
    page(
        bundle,
        summary=summary,
        severity="error",
        dedup_key=f"streamops/{bundle.target_name}/compaction/{key}",
        details=details,
    )


def summarize(bundle: Bundle, reports: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """One line per table; raises CompactionError naming the tables without a report."""
    done = [CompactionReport.from_dict(r) for r in reports if r]
    by_table = {r.table: r for r in done}
    for r in done:
        log.info(
            "%-24s %-13s files %d -> %d, bytes %d -> %d, small %.0f%% -> %.0f%%, %.1f s",
            r.table,
            r.status,
            r.before.files,
            r.after.files,
            r.before.bytes,
            r.after.bytes,
            100 * r.before.small_file_ratio,
            100 * r.after.small_file_ratio,
            r.duration_s,
        )
    missing = [k for k in bundle.spec.tables if k not in by_table]
    summary = {
        "tables": len(bundle.spec.tables),
        "compacted": sorted(k for k, r in by_table.items() if r.status == "compacted"),
        "managed_by_predictive_optimization": sorted(
            k for k, r in by_table.items() if r.status == "managed"
        ),
        "conflicts_retried": sum(r.retries for r in done),
        "failed": missing,
        "files_before": sum(r.before.files for r in done),
        "files_after": sum(r.after.files for r in done),
    }
    log.info("summary: %s", summary)
    if missing:
        raise CompactionError(
            f"nightly compaction failed for {', '.join(missing)} (the other tables were "
            "compacted; see each table's task log and the page sent)"
        )
    return summary
