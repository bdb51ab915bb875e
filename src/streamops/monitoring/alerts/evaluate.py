"""Evaluate the alert rules: from exported metrics (CLI, watchdog DAG) or in the job (fast path),
and page / resolve through OpenAlerts so each breach pages once and each recovery resolves once."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from streamops.monitoring.alerts import kql
from streamops.monitoring.alerts.pager import Pager
from streamops.monitoring.alerts.rules import RULES, Finding, evaluate, group, parse_ts
from streamops.monitoring.alerts.state import (
    OpenAlerts,
    SyncResult,
    silent_file,
    silent_since,
    state_file,
)
from streamops.monitoring.exporters import metrics_dir, read_points
from streamops.monitoring.metrics_table import from_row

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.pipeline.progress import BatchProgress

log = logging.getLogger(__name__)

PER_BATCH_RULES = tuple(r.name for r in RULES.values() if r.per_batch)
BLIND_RULE = "monitoring_blind"
DEFAULT_LOOKBACK = timedelta(hours=2)


def stall_queries(bundle: Bundle) -> set[str]:
    """Queries expected to keep running: jobs with a processingTime trigger (bronze and gold)."""
    out: set[str] = set()
    for job in bundle.jobs.values():
        if job.trigger.processing_time is not None:
            out |= {job.query_name, job.bronze_query_name}
    return out


def query_azure(
    bundle: Bundle,
    now: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
    *,
    credential: Any = None,
    request_kwargs: dict[str, Any] | None = None,
    **client_kwargs: Any,
) -> list[dict[str, Any]]:
    """The target's metric points from Log Analytics, with azure-monitor-query's LogsQueryClient.

    Raises on any failure (including a partial result): the watchdog pages "monitoring is blind".
    """
    from azure.monitor.query import LogsQueryClient, LogsQueryStatus

    mon = bundle.target.monitoring
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client = LogsQueryClient(credential, endpoint=mon.logs_endpoint, **client_kwargs)
    text = kql.points_query(mon.metrics_table, bundle.target_name, lookback.total_seconds())
    assert mon.workspace_id is not None  # validated in the bundle
    result = client.query_workspace(
        mon.workspace_id, text, timespan=(now - lookback, now), **(request_kwargs or {})
    )
    if result.status != LogsQueryStatus.SUCCESS:
        raise RuntimeError(f"Log Analytics returned a partial result: {result.partial_error}")
    points = []
    for table in result.tables:
        for row in table.rows:
            points.append(from_row(dict(zip(table.columns, row, strict=False))))
    return points


def load_points(bundle: Bundle, now: datetime, **azure_kwargs: Any) -> list[dict[str, Any]]:
    if bundle.target.monitoring.metrics == "azure-monitor":
        return query_azure(bundle, now, **azure_kwargs)
    return read_points(metrics_dir(bundle.state_dir))


@dataclass
class Evaluation:
    findings: list[Finding]
    sync: SyncResult | None = None
    blind: str | None = None  # why the metrics could not be read

    @property
    def breaches(self) -> list[Finding]:
        return [f for f in self.findings if f.breached]


def _now_text(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


def evaluate_bundle(
    bundle: Bundle,
    now: datetime,
    *,
    page: bool = False,
    points: list[dict[str, Any]] | None = None,
    started: dict[tuple[str, str], datetime] | None = None,
    **azure_kwargs: Any,
) -> Evaluation:
    """Evaluate every rule from the exported metrics; with `page`, page and resolve.

    When the metrics cannot be read, that is itself paged (monitoring is blind) and nothing else
    is resolved; once they can be read again, the blind alert is resolved. `started`: (job,
    query) -> when it last started (the deploy record's): each must report since, points or not.
    """
    opened = OpenAlerts(state_file(bundle.state_dir))
    pager = Pager(bundle)
    blind = Finding(
        BLIND_RULE,
        "*",
        "*",
        False,
        0,
        0,
        f"{bundle.target_name}: the alert query failed; monitoring is blind",
    )
    try:
        if points is None:
            points = load_points(bundle, now, **azure_kwargs)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        log.error("alert query failed: %s", why)
        if page:
            failed = Finding(
                BLIND_RULE,
                "*",
                "*",
                True,
                1,
                0,
                f"{bundle.target_name}: the alert query failed, monitoring is blind: {why[:300]}",
                details={"error": why[:1000]},
            )
            return Evaluation([], _sync(opened, [failed], bundle, pager, now), blind=why)
        return Evaluation([], blind=why)
    stall = stall_queries(bundle)
    expected = {k: at for k, at in (started or {}).items() if k[1] in stall}
    if page and started is not None:  # remembered across watchdog rounds: see silent_since
        last_batch = group(points, now).last_seen
        expected = silent_since(silent_file(bundle.state_dir), expected, last_batch)
    findings = evaluate(points, bundle.spec.alerts, now, stall_queries=stall, started=expected)
    sync = _sync(opened, [blind, *findings], bundle, pager, now) if page else None
    return Evaluation(findings, sync)


def _sync(
    opened: OpenAlerts, findings: list[Finding], bundle: Bundle, pager: Pager, now: datetime
) -> SyncResult:
    def trigger(f: Finding, key: str) -> None:
        if f.rule == BLIND_RULE:
            from streamops.monitoring.paging import page

            page(
                bundle,
                summary=f.summary,
                severity="critical",
                dedup_key=key,
                details={
                    "rule": BLIND_RULE,
                    "target": bundle.target_name,
                    **f.details,
                    "runbook": bundle.spec.alerts.runbook_url,
                },
            )
        else:
            pager.trigger(f, key)

    return opened.sync(
        findings, bundle.target_name, trigger=trigger, resolve=pager.resolve, now=_now_text(now)
    )


class FastPath:
    """In-job evaluation of the per-batch rules on each batch's points (no dead-job detection:
    that is the watchdog's). Never raises; errors are counted and logged."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        clock: Callable[[], datetime] | None = None,
        say: Callable[[str], None] | None = None,
        window: timedelta = DEFAULT_LOOKBACK,
        max_points: int = 50_000,
    ):
        self.bundle = bundle
        self.clock = clock
        self.say = say or (lambda _m: None)
        self.window = window
        self.points: dict[str, deque[dict[str, Any]]] = {}
        self.max_points = max_points
        self.opened = OpenAlerts(state_file(bundle.state_dir))
        self.pager = Pager(bundle)
        self.errors = 0
        self.results: list[SyncResult] = []

    def __call__(self, bp: BatchProgress, points: list[dict[str, Any]]) -> None:
        try:
            buf = self.points.setdefault(bp.query_name, deque(maxlen=self.max_points))
            buf.extend(points)
            now = self.clock() if self.clock else parse_ts(bp.timestamp)
            while buf and parse_ts(buf[0]["ts"]) < now - self.window:
                buf.popleft()
            findings = evaluate(buf, self.bundle.spec.alerts, now, rules=PER_BATCH_RULES)
            res = _sync(self.opened, findings, self.bundle, self.pager, now)
            self.results.append(res)
            for key in res.triggered:
                self.say(f"PAGE {key}")
            for key in res.resolved:
                self.say(f"RESOLVED {key}")
        except Exception as exc:
            self.errors += 1
            self.say(f"warning: fast-path alerting failed for {bp.query_name}: {exc}")

    def exporter_blind(self, job: str, exporter: str, why: str, failures: int) -> bool:
        """Page "monitoring blind" for `job`'s `exporter` (one incident per job, exporter and
        target); True when it is paged now or was already open."""
        summary = (
            f"{self.bundle.target_name}: {job}: monitoring is blind: the {exporter} metrics "
            f"exporter failed {failures} sends in a row: {why}"
        )
        details = {"exporter": exporter, "error": why, "failures": failures}
        f = Finding(BLIND_RULE, job, exporter, True, failures, 0, summary, details=details)
        res = _sync(self.opened, [f], self.bundle, self.pager, self.clock_now())
        for key in res.triggered:
            self.say(f"PAGE {key}")
        return not res.failed

    def exporter_sighted(self, job: str, exporter: str) -> bool:
        """Resolve `job`'s "monitoring blind" page for `exporter`; True when resolved (or none)."""
        summary = f"{self.bundle.target_name}: {job}: the {exporter} metrics exporter sends again"
        f = Finding(BLIND_RULE, job, exporter, False, 0, 0, summary)
        res = _sync(self.opened, [f], self.bundle, self.pager, self.clock_now())
        for key in res.resolved:
            self.say(f"RESOLVED {key}")
        return not res.failed

    def clock_now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)


@dataclass
class Explained:
    rule: str
    description: str
    kql: str
    extra: dict[str, Any] = field(default_factory=dict)


def explain(bundle: Bundle) -> list[Explained]:
    mon = bundle.target.monitoring
    return [
        Explained(
            r.name,
            r.description,
            kql.rule_query(r.name, bundle.spec.alerts, mon.metrics_table, bundle.target_name),
        )
        for r in RULES.values()
    ]


def watchdog(
    bundle: Bundle,
    now: datetime | None = None,
    *,
    started: dict[tuple[str, str], datetime] | None = None,
    **azure_kwargs: Any,
) -> dict[str, Any]:
    """One watchdog round (the streamops_alerts DAG): evaluate every rule from the exported
    metrics, page and resolve. Raises when a page could not be sent, so the task fails loudly.

    `started`: the deployed queries that started, and when (`streamops.deploy.watch` reads them
    from the deploy record); each is stalled when it has not reported since, even if it never
    exported a point. None: only the queries seen in the metrics are watched.
    """
    from streamops.errors import StreamopsError

    at = now or datetime.now(UTC)
    ev = evaluate_bundle(bundle, at, page=True, started=started, **azure_kwargs)
    summary = {
        "target": bundle.target_name,
        "now": _now_text(at),
        "checks": len(ev.findings),
        "breaches": [f.dedup_key(bundle.target_name) for f in ev.breaches],
        "blind": ev.blind,
        "watched": sorted(f"{f.job}/{f.query}" for f in ev.findings if f.rule == "stalled"),
        "triggered": ev.sync.triggered if ev.sync else [],
        "resolved": ev.sync.resolved if ev.sync else [],
    }
    log.info("watchdog: %s", summary)
    if ev.sync and ev.sync.failed:
        raise StreamopsError(
            f"could not send {len(ev.sync.failed)} page(s)/resolve(s): {', '.join(ev.sync.failed)}; "
            "they are retried on the next run (see pages.log)"
        )
    return summary
