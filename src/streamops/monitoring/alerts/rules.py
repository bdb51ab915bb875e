"""Alert rules over metric points (streamops.monitoring.metrics), evaluated with an injected clock.

Each rule yields one Finding per thing it watches (a partition for lag, a query for the rest),
breached or not, so a recovered breach can be resolved. The thresholds are the bundle's `alerts:`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
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
        Rule("lag_partition", m.LAG,
             "lag per partition above lag_records_per_partition for lag_for"),
        Rule("slow_batches", m.BATCH_RATIO,
             "batch duration above batch_duration_ratio x trigger for consecutive_slow_batches"),
        Rule("state_size", m.STATE_MEMORY, "state store memory above state_store_mb"),
        Rule("state_growth", m.STATE_MEMORY,
             "state store memory growing faster than state_growth_pct_per_hour", severity="warning"),
        Rule("watermark_drops", m.DROPPED,
             "rows dropped by the watermark above dropped_rows_per_minute", severity="warning"),
        Rule("quarantine_rate", m.QUARANTINED,
             "quarantined rows above quarantined_rows_per_minute", severity="warning"),
        Rule("watermark_ahead", m.WATERMARK_LEAD,
             "event-time watermark ahead of processing time by more than watermark_ahead",
             severity="critical"),
        Rule("stalled", "", "no batch for stalled_after (dead or stalled job)",
             per_batch=False, severity="critical"),
    )
}  # fmt: skip

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


def evaluate(
    points: Iterable[dict[str, Any]],
    alerts: Alerts,
    now: datetime,
    *,
    rules: Iterable[str] | None = None,
    stall_queries: set[str] | None = None,
) -> list[Finding]:
    """Evaluate `rules` (default: all) over `points` as of `now`.

    `stall_queries`: the queries expected to keep running (processingTime triggers); the stalled
    rule watches only those (None: every query seen).
    """
    wanted = set(RULES) if rules is None else set(rules)
    series: dict[tuple[str, ...], list[tuple[datetime, float, dict[str, Any]]]] = defaultdict(list)
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

    def of(
        metric: str,
    ) -> Iterable[tuple[tuple[str, ...], list[tuple[datetime, float, dict[str, Any]]]]]:
        return ((k, v) for k, v in sorted(series.items()) if k[0] == metric)

    out: list[Finding] = []
    if "lag_partition" in wanted:
        limit = alerts.lag_records_per_partition
        for (_, job, query, topic, part), s in of(m.LAG):
            since = None
            for ts, v, _p in reversed(s):
                if v <= limit:
                    break
                since = ts
            value = s[-1][1]
            held = (now - since) if since is not None else timedelta(0)
            breached = since is not None and held >= timedelta(seconds=alerts.lag_for.seconds)
            out.append(Finding(
                "lag_partition", job, query, breached, value, limit,
                f"{job}: lag {int(value)} records on {topic}[{part}] above {limit} "
                f"for {int(held.total_seconds() // 60)} min (limit {alerts.lag_for.text})",
                {"topic": topic, "partition": int(part)},
                {"above_since": since.isoformat() if since else None},
            ))  # fmt: skip
    if "slow_batches" in wanted:
        k, ratio = alerts.consecutive_slow_batches, alerts.batch_duration_ratio
        for (_, job, query, _t, _p), s in of(m.BATCH_RATIO):
            last = [v for _ts, v, _ in s[-k:]]
            breached = len(last) >= k and all(v > ratio for v in last)
            out.append(Finding(
                "slow_batches", job, query, breached, last[-1], ratio,
                f"{job}/{query}: last {len(last)} batches took {', '.join(f'{v:.2f}' for v in last)}"
                f" x the trigger interval (limit {ratio} x for {k} batches)",
                details={"ratios": last},
            ))  # fmt: skip
    for (_, job, query, _t, _p), s in of(m.STATE_MEMORY):
        mb = s[-1][1] / 1e6
        if "state_size" in wanted:
            out.append(Finding(
                "state_size", job, query, mb > alerts.state_store_mb, round(mb, 3),
                alerts.state_store_mb,
                f"{job}/{query}: state store {mb:.1f} MB above {alerts.state_store_mb} MB",
            ))  # fmt: skip
        if "state_growth" in wanted:
            recent = [(ts, v) for ts, v, _ in s if ts >= now - GROWTH_WINDOW]
            pct = 0.0
            if len(recent) >= 2 and recent[0][1] > 0:
                span = recent[-1][0] - recent[0][0]
                if span >= GROWTH_MIN_SPAN:
                    pct = (
                        (recent[-1][1] - recent[0][1])
                        / recent[0][1]
                        * 100
                        * 3600
                        / span.total_seconds()
                    )
            out.append(Finding(
                "state_growth", job, query, pct > alerts.state_growth_pct_per_hour, round(pct, 2),
                alerts.state_growth_pct_per_hour,
                f"{job}/{query}: state store growing {pct:.0f}%/hour "
                f"(limit {alerts.state_growth_pct_per_hour}%/hour)",
            ))  # fmt: skip
    for rule, metric, rate_limit, what in (
        ("watermark_drops", m.DROPPED, alerts.dropped_rows_per_minute, "dropped by the watermark"),
        ("quarantine_rate", m.QUARANTINED, alerts.quarantined_rows_per_minute, "quarantined"),
    ):
        if rule not in wanted:
            continue
        for (_, job, query, _t, _p), s in of(metric):
            total = sum(v for ts, v, _ in s if ts > now - RATE_WINDOW)
            rate = total / (RATE_WINDOW.total_seconds() / 60)
            out.append(Finding(
                rule, job, query, rate > rate_limit, round(rate, 2), rate_limit,
                f"{job}/{query}: {rate:.0f} rows/min {what} over the last "
                f"{int(RATE_WINDOW.total_seconds() // 60)} min (limit {rate_limit}/min)",
            ))  # fmt: skip
    if "watermark_ahead" in wanted:
        limit_s = alerts.watermark_ahead.seconds
        for (_, job, query, _t, _p), s in of(m.WATERMARK_LEAD):
            lead = s[-1][1]
            out.append(Finding(
                "watermark_ahead", job, query, lead > limit_s, lead, limit_s,
                f"{job}/{query}: event-time watermark {lead:.0f} s ahead of processing time "
                f"(limit {alerts.watermark_ahead.text}); an event from the future moved it and "
                "on-time events are being dropped as late. Fix: find it in the bronze table "
                "(largest event time), check max_clock_skew, then recover the job from a "
                "checkpoint backup taken before it",
                details={"watermark_lead_s": lead},
            ))  # fmt: skip
    if "stalled" in wanted:
        for (job, query), ts in sorted(last_seen.items()):
            if stall_queries is not None and query not in stall_queries:
                continue
            idle = now - ts
            out.append(Finding(
                "stalled", job, query, idle >= timedelta(seconds=alerts.stalled_after.seconds),
                round(idle.total_seconds() / 60, 1), alerts.stalled_after.seconds / 60,
                f"{job}/{query}: no batch for {int(idle.total_seconds() // 60)} min "
                f"(limit {alerts.stalled_after.text}); the job is dead or stalled",
                details={"last_batch": ts.isoformat()},
            ))  # fmt: skip
    return out
