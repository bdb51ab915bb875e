"""Alert rules over metric points (streamops.monitoring.metrics), evaluated with an injected clock.

Each rule yields one Finding per thing it watches (a partition for lag, a query for the rest),
breached or not, so a recovered breach can be resolved. The thresholds are the bundle's `alerts:`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streamops.bundle.models import Alerts
from streamops.monitoring import metrics as m


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    description: str
    per_batch: bool = True  # evaluated in the job (fast path) as well as by the watchdog
    severity: str = "error"


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "lag_partition", m.LAG, "lag per partition above lag_records_per_partition for lag_for"
        ),
        Rule(
            "slow_batches",
            m.BATCH_RATIO,
            "batch duration above batch_duration_ratio x trigger for consecutive_slow_batches",
        ),
        Rule("state_size", m.STATE_MEMORY, "state store memory above state_store_mb"),
        Rule(
            "state_growth",
            m.STATE_MEMORY,
            "state store memory growing faster than state_growth_pct_per_hour",
            severity="warning",
        ),
        Rule(
            "watermark_drops",
            m.DROPPED,
            "rows dropped by the watermark above dropped_rows_per_minute",
            severity="warning",
        ),
        Rule(
            "quarantine_rate",
            m.QUARANTINED,
            "quarantined rows above quarantined_rows_per_minute",
            severity="warning",
        ),
        Rule(
            "watermark_ahead",
            m.WATERMARK_LEAD,
            "event-time watermark ahead of processing time by more than watermark_ahead",
            severity="critical",
        ),
        Rule(
            "stalled",
            "",
            "no batch for stalled_after, or none since the job started (dead or stalled job)",
            per_batch=False,
            severity="critical",
        ),
    )
}

RATE_WINDOW = timedelta(minutes=5)  # rows/minute rules average over this window
GROWTH_WINDOW = timedelta(hours=1)
GROWTH_MIN_SPAN = timedelta(minutes=10)  # do not extrapolate growth from a few seconds


@dataclass(frozen=True)
class Finding:
    rule: str
    job: str
    query: str
    breached: bool
    value: float
    threshold: float
    summary: str
    dims: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def dedup_key(self, target: str) -> str:
        """One incident per rule + job + query (+ topic/partition for lag)."""
        parts = ["streamops", target, self.rule, self.job, self.query]
        parts += [str(self.dims[k]) for k in ("topic", "partition") if k in self.dims]
        return ":".join(parts)

    @property
    def severity(self) -> str:
        return RULES[self.rule].severity


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


Series = list[tuple[datetime, float, dict[str, Any]]]  # (time, value, point), oldest first
SeriesKey = tuple[str, str, str, str, str]  # (metric, job, query, topic, partition)


@dataclass(frozen=True)
class Seen:
    """The points up to `now`, as one series per metric and thing watched, and each query's last
    batch time: what every rule reads."""

    now: datetime
    series: dict[SeriesKey, Series]
    last_seen: dict[tuple[str, str], datetime]  # (job, query) -> newest point's time
    stall_queries: set[str] | None  # the queries the stalled rule watches (None: every one)
    # (job, query) -> when it last started: queries that must report even if no point of theirs
    # is in sight (the deploy record's; a query that never exported is stalled, not unseen).
    started: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def of(self, metric: str) -> Iterator[tuple[SeriesKey, Series]]:
        """Each series of `metric`, in key order."""
        return ((k, v) for k, v in sorted(self.series.items()) if k[0] == metric)


def group(
    points: Iterable[dict[str, Any]],
    now: datetime,
    stall_queries: set[str] | None = None,
    started: dict[tuple[str, str], datetime] | None = None,
) -> Seen:
    """`points` up to `now` grouped into series (points after `now` are not seen yet)."""
    series: dict[SeriesKey, Series] = defaultdict(list)
    last_seen: dict[tuple[str, str], datetime] = {}
    for p in points:
        ts = parse_ts(p["ts"])
        if ts > now:
            continue
        job, query = str(p.get("job", "")), str(p.get("query", ""))
        key = (p["name"], job, query, str(p.get("topic", "")), str(p.get("partition", "")))
        series[key].append((ts, float(p["value"]), p))
        if last_seen.get((job, query), ts) <= ts:
            last_seen[(job, query)] = ts
    for s in series.values():
        s.sort(key=lambda x: x[0])
    return Seen(now, dict(series), last_seen, stall_queries, dict(started or {}))


def _lag_partition(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit = alerts.lag_records_per_partition
    for (_, job, query, topic, part), s in seen.of(m.LAG):
        since = None
        for ts, v, _p in reversed(s):
            if v <= limit:
                break
            since = ts
        value = s[-1][1]
        held = (seen.now - since) if since is not None else timedelta(0)
        breached = since is not None and held >= timedelta(seconds=alerts.lag_for.seconds)
        yield Finding(
            "lag_partition",
            job,
            query,
            breached,
            value,
            limit,
            f"{job}: lag {int(value)} records on {topic}[{part}] above {limit} "
            f"for {int(held.total_seconds() // 60)} min (limit {alerts.lag_for.text})",
            {"topic": topic, "partition": int(part)},
            {"above_since": since.isoformat() if since else None},
        )


def _slow_batches(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    k, ratio = alerts.consecutive_slow_batches, alerts.batch_duration_ratio
    for (_, job, query, _t, _p), s in seen.of(m.BATCH_RATIO):
        last = [v for _ts, v, _ in s[-k:]]
        breached = len(last) >= k and all(v > ratio for v in last)
        yield Finding(
            "slow_batches",
            job,
            query,
            breached,
            last[-1],
            ratio,
            f"{job}/{query}: last {len(last)} batches took {', '.join(f'{v:.2f}' for v in last)}"
            f" x the trigger interval (limit {ratio} x for {k} batches)",
            details={"ratios": last},
        )


def _state_size(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit = alerts.state_store_mb
    for (_, job, query, _t, _p), s in seen.of(m.STATE_MEMORY):
        mb = s[-1][1] / 1e6
        summary = f"{job}/{query}: state store {mb:.1f} MB above {limit} MB"
        yield Finding("state_size", job, query, mb > limit, round(mb, 3), limit, summary)


def _growth_pct_per_hour(s: Series, now: datetime) -> float:
    """How fast the newest hour of `s` grew, in % per hour (0 over too short a span)."""
    recent = [(ts, v) for ts, v, _ in s if ts >= now - GROWTH_WINDOW]
    if len(recent) < 2 or recent[0][1] <= 0:
        return 0.0
    (t0, v0), (t1, v1) = recent[0], recent[-1]
    if t1 - t0 < GROWTH_MIN_SPAN:
        return 0.0
    return (v1 - v0) / v0 * 100 * 3600 / (t1 - t0).total_seconds()


def _state_growth(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit = alerts.state_growth_pct_per_hour
    for (_, job, query, _t, _p), s in seen.of(m.STATE_MEMORY):
        pct = _growth_pct_per_hour(s, seen.now)
        summary = f"{job}/{query}: state store growing {pct:.0f}%/hour (limit {limit}%/hour)"
        yield Finding("state_growth", job, query, pct > limit, round(pct, 2), limit, summary)


def _row_rate(rule: str, metric: str, what: str, seen: Seen, limit: float) -> Iterator[Finding]:
    """Rows per minute of `metric` over the last RATE_WINDOW, per query, against `limit`."""
    minutes = RATE_WINDOW.total_seconds() / 60
    for (_, job, query, _t, _p), s in seen.of(metric):
        rate = sum(v for ts, v, _ in s if ts > seen.now - RATE_WINDOW) / minutes
        yield Finding(
            rule,
            job,
            query,
            rate > limit,
            round(rate, 2),
            limit,
            f"{job}/{query}: {rate:.0f} rows/min {what} over the last "
            f"{int(minutes)} min (limit {limit}/min)",
        )


def _watermark_drops(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit = alerts.dropped_rows_per_minute
    return _row_rate("watermark_drops", m.DROPPED, "dropped by the watermark", seen, limit)


def _quarantine_rate(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit = alerts.quarantined_rows_per_minute
    return _row_rate("quarantine_rate", m.QUARANTINED, "quarantined", seen, limit)


def _watermark_ahead(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit_s = alerts.watermark_ahead.seconds
    for (_, job, query, _t, _p), s in seen.of(m.WATERMARK_LEAD):
        lead = s[-1][1]
        yield Finding(
            "watermark_ahead",
            job,
            query,
            lead > limit_s,
            lead,
            limit_s,
            f"{job}/{query}: event-time watermark {lead:.0f} s ahead of processing time "
            f"(limit {alerts.watermark_ahead.text}); an event from the future moved it and "
            "on-time events are being dropped as late. Fix: find it in the bronze table "
            "(largest event time), check max_clock_skew, then recover the job from a "
            "checkpoint backup taken before it",
            details={"watermark_lead_s": lead},
        )


def _stalled(seen: Seen, alerts: Alerts) -> Iterator[Finding]:
    limit = timedelta(seconds=alerts.stalled_after.seconds)
    for job, query in sorted(set(seen.last_seen) | set(seen.started)):
        if seen.stall_queries is not None and query not in seen.stall_queries:
            continue
        last, started = seen.last_seen.get((job, query)), seen.started.get((job, query))
        if started is not None and started > seen.now:
            continue  # a start after `now` is not seen yet
        # Idle since its newest batch, or since it started when no batch came after that.
        since = max(t for t in (last, started) if t is not None)
        idle = seen.now - since
        if last is not None and since == last:
            why = f"no batch for {int(idle.total_seconds() // 60)} min"
        else:
            why = f"no batch since it started at {since.isoformat(timespec='seconds')}"
        yield Finding(
            "stalled",
            job,
            query,
            idle >= limit,
            round(idle.total_seconds() / 60, 1),
            alerts.stalled_after.seconds / 60,
            f"{job}/{query}: {why} (limit {alerts.stalled_after.text}); the job is dead or "
            "stalled, or cannot export its metrics",
            details={
                "last_batch": last.isoformat() if last else None,
                "started": started.isoformat() if started else None,
            },
        )


Evaluator = Callable[[Seen, Alerts], Iterable[Finding]]

# Rule name -> its evaluator, in the order findings are reported.
EVALUATORS: dict[str, Evaluator] = {
    "lag_partition": _lag_partition,
    "slow_batches": _slow_batches,
    "state_size": _state_size,
    "state_growth": _state_growth,
    "watermark_drops": _watermark_drops,
    "quarantine_rate": _quarantine_rate,
    "watermark_ahead": _watermark_ahead,
    "stalled": _stalled,
}


def evaluate(
    points: Iterable[dict[str, Any]],
    alerts: Alerts,
    now: datetime,
    *,
    rules: Iterable[str] | None = None,
    stall_queries: set[str] | None = None,
    started: dict[tuple[str, str], datetime] | None = None,
) -> list[Finding]:
    """Evaluate `rules` (default: all) over `points` as of `now`.

    `stall_queries`: the queries expected to keep running (processingTime triggers); the stalled
    rule watches only those (None: every query seen). `started`: (job, query) -> when it last
    started, for queries that must report whether or not a point of theirs is in `points`.
    """
    wanted = set(RULES) if rules is None else set(rules)
    seen = group(points, now, stall_queries, started)
    return [f for name, check in EVALUATORS.items() if name in wanted for f in check(seen, alerts)]
