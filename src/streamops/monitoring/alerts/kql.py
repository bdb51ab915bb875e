"""KQL for the Azure Monitor path: the metric points query the watchdog evaluates, and one
standalone query per rule (shown by `streamops alerts evaluate --explain`; each can also be pasted
into an Azure Monitor log alert rule).

The custom table (default `StreamopsMetrics_CL`) has one row per metric point; its columns are
in `streamops.monitoring.metrics_table`.
"""

from __future__ import annotations

from collections.abc import Callable

from streamops.bundle.models import Alerts
from streamops.monitoring import metrics as m
from streamops.monitoring.alerts.rules import GROWTH_WINDOW, RATE_WINDOW, RULES
from streamops.monitoring.metrics_table import COLUMNS


def _q(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _span(seconds: float) -> str:
    return f"{int(seconds)}s"


def points_query(table: str, target: str, lookback_s: float) -> str:
    """Every metric point of the target in the lookback window, oldest first."""
    return (
        f"{table}\n| where TimeGenerated > ago({_span(lookback_s)}) and Target == {_q(target)}\n"
        f"| project {', '.join(COLUMNS)}\n| order by TimeGenerated asc"
    )


def _lag_partition(base: str, alerts: Alerts) -> str:
    return (
        f"{base} and Name == {_q(m.LAG)} and TimeGenerated > ago({_span(alerts.lag_for.seconds)})\n"
        "| summarize MinLag = min(Value), MaxLag = max(Value), Since = min(TimeGenerated) "
        "by Job, Query, Topic, Partition\n"
        f"| where MinLag > {alerts.lag_records_per_partition} "
        f"and Since <= ago({_span(alerts.lag_for.seconds * 0.9)})"
    )


def _slow_batches(base: str, alerts: Alerts) -> str:
    k = alerts.consecutive_slow_batches
    return (
        f"{base} and Name == {_q(m.BATCH_RATIO)} and TimeGenerated > ago(1d)\n"
        "| sort by Job asc, Query asc, TimeGenerated desc\n"
        "| extend Rank = row_number(1, prev(Job) != Job or prev(Query) != Query)\n"
        f"| where Rank <= {k}\n"
        f"| summarize N = count(), Slow = countif(Value > {alerts.batch_duration_ratio}), "
        "Ratios = make_list(Value) by Job, Query\n"
        f"| where N >= {k} and Slow == N"
    )


def _state_size(base: str, alerts: Alerts) -> str:
    return (
        f"{base} and Name == {_q(m.STATE_MEMORY)} and TimeGenerated > ago(1h)\n"
        "| summarize arg_max(TimeGenerated, Value) by Job, Query\n"
        f"| extend StateMB = Value / 1e6\n| where StateMB > {alerts.state_store_mb}"
    )


def _state_growth(base: str, alerts: Alerts) -> str:
    return (
        f"{base} and Name == {_q(m.STATE_MEMORY)} "
        f"and TimeGenerated > ago({_span(GROWTH_WINDOW.total_seconds())})\n"
        "| summarize arg_min(TimeGenerated, Value), arg_max(TimeGenerated, Value) by Job, Query\n"
        "| extend Hours = (TimeGenerated1 - TimeGenerated) / 1h\n"
        "| where Hours >= 1.0/6 and Value > 0\n"
        "| extend PctPerHour = (Value1 - Value) / Value * 100 / Hours\n"
        f"| where PctPerHour > {alerts.state_growth_pct_per_hour}"
    )


def _row_rate(base: str, name: str, limit: float) -> str:
    minutes = RATE_WINDOW.total_seconds() / 60
    return (
        f"{base} and Name == {_q(name)} "
        f"and TimeGenerated > ago({_span(RATE_WINDOW.total_seconds())})\n"
        f"| summarize RowsPerMinute = sum(Value) / {minutes:g} by Job, Query\n"
        f"| where RowsPerMinute > {limit}"
    )


def _watermark_drops(base: str, alerts: Alerts) -> str:
    return _row_rate(base, m.DROPPED, alerts.dropped_rows_per_minute)


def _quarantine_rate(base: str, alerts: Alerts) -> str:
    return _row_rate(base, m.QUARANTINED, alerts.quarantined_rows_per_minute)


def _watermark_ahead(base: str, alerts: Alerts) -> str:
    return (
        f"{base} and Name == {_q(m.WATERMARK_LEAD)} and TimeGenerated > ago(1h)\n"
        "| summarize arg_max(TimeGenerated, Value) by Job, Query\n"
        f"| where Value > {alerts.watermark_ahead.seconds:g}"
    )


def _stalled(base: str, alerts: Alerts) -> str:
    return (
        f"{base} and TimeGenerated > ago(1d)\n"
        "| summarize LastBatch = max(TimeGenerated) by Job, Query\n"
        f"| where LastBatch < ago({_span(alerts.stalled_after.seconds)})"
    )


# Rule name -> its query, given the table/target filter and the bundle's thresholds.
QUERIES: dict[str, Callable[[str, Alerts], str]] = {
    "lag_partition": _lag_partition,
    "slow_batches": _slow_batches,
    "state_size": _state_size,
    "state_growth": _state_growth,
    "watermark_drops": _watermark_drops,
    "quarantine_rate": _quarantine_rate,
    "watermark_ahead": _watermark_ahead,
    "stalled": _stalled,
}


def rule_query(rule: str, alerts: Alerts, table: str, target: str) -> str:
    """A standalone KQL query returning one row per breach of `rule`."""
    if rule not in QUERIES:
        raise KeyError(f"unknown rule '{rule}'; rules: {', '.join(RULES)}")
    return QUERIES[rule](f"{table}\n| where Target == {_q(target)}", alerts)
