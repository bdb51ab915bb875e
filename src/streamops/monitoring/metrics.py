"""Per-batch metrics: names, units and dimensions defined once, and the emitter every job registers.

Each metric point is one flat JSON object (one JSON line locally, one row in Azure Monitor):

    {"ts": "<batch timestamp, ISO 8601 UTC>", "name": "<metric>", "value": <number>,
     "unit": "<unit>", "job": ..., "query": ..., "target": ..., "batch_id": N,
     "topic": ... (lag only), "partition": ... (per-partition lag only)}

Why polling and not a StreamingQueryListener: the runner already polls each query's
`recentProgress`, which holds every batch of the run in order, even the ones that finish while a
query shuts down; a Python listener runs on Spark's listener bus thread, can miss the last batches
on stop, and under Spark Connect runs in a different process. One source of batches keeps the
metrics, the fast-path alerts and the consumer-group commit consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamops.pipeline.progress import BatchProgress


@dataclass(frozen=True)
class MetricDef:
    name: str
    unit: str
    dimensions: tuple[str, ...]
    description: str


BASE_DIMS = ("job", "query", "target")

LAG = "streamops_kafka_lag_records"
LAG_TOPIC = "streamops_kafka_lag_topic_records"
BATCH_DURATION = "streamops_batch_duration_ms"
BATCH_RATIO = "streamops_batch_duration_trigger_ratio"
STATE_ROWS = "streamops_state_rows"
STATE_MEMORY = "streamops_state_memory_bytes"
# Per stateful operator; separate names so rules on the totals never mix in an operator's series.
STATE_OP_ROWS = "streamops_state_operator_rows"
STATE_OP_MEMORY = "streamops_state_operator_memory_bytes"
DROPPED = "streamops_watermark_dropped_rows"
INPUT_RATE = "streamops_input_rows_per_second"
PROCESSED_RATE = "streamops_processed_rows_per_second"
INPUT_ROWS = "streamops_input_rows"
QUARANTINED = "streamops_quarantined_rows"
# Event-time watermark minus the batch's processing time: negative while the stream is sane.
# A positive value means an event from the future moved the watermark, and from then on every
# on-time event is "late" and dropped.
WATERMARK_LEAD = "streamops_watermark_lead_seconds"

METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(
            LAG,
            "records",
            (*BASE_DIMS, "topic", "partition"),
            "records behind the end of the partition after the batch (latest - end offset)",
        ),
        MetricDef(
            LAG_TOPIC, "records", (*BASE_DIMS, "topic"), "lag summed over the topic's partitions"
        ),
        MetricDef(BATCH_DURATION, "milliseconds", BASE_DIMS, "triggerExecution time of the batch"),
        MetricDef(
            BATCH_RATIO,
            "ratio",
            BASE_DIMS,
            "batch duration / trigger interval (absent for availableNow triggers)",
        ),
        MetricDef(
            STATE_ROWS,
            "rows",
            (*BASE_DIMS, "operator"),
            "rows in the state store, summed over stateful operators (operator=all)",
        ),
        MetricDef(
            STATE_MEMORY,
            "bytes",
            (*BASE_DIMS, "operator"),
            "memory used by the state store, summed over operators (operator=all)",
        ),
        MetricDef(
            STATE_OP_ROWS,
            "rows",
            (*BASE_DIMS, "operator"),
            "rows in the state store of one operator ('<plan index>:<operator name>')",
        ),
        MetricDef(
            STATE_OP_MEMORY,
            "bytes",
            (*BASE_DIMS, "operator"),
            "memory used by the state store of one operator",
        ),
        MetricDef(
            DROPPED, "rows", BASE_DIMS, "rows dropped as later than the watermark in the batch"
        ),
        MetricDef(INPUT_ROWS, "rows", BASE_DIMS, "rows read in the batch"),
        MetricDef(
            INPUT_RATE,
            "rows/second",
            BASE_DIMS,
            "rows read / seconds since the previous batch started",
        ),
        MetricDef(PROCESSED_RATE, "rows/second", BASE_DIMS, "rows read / batch duration"),
        MetricDef(
            QUARANTINED,
            "rows",
            BASE_DIMS,
            "rows sent to quarantine (malformed, missing fields, ...) in the batch",
        ),
        MetricDef(
            WATERMARK_LEAD,
            "seconds",
            BASE_DIMS,
            "event-time watermark minus the batch's time (stateful queries; > 0: poisoned)",
        ),
    )
}


def _ts(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None


def batch_points(
    bp: BatchProgress,
    *,
    job: str,
    target: str,
    trigger_seconds: float | None,
    previous_ts: str | None = None,
) -> list[dict[str, Any]]:
    """The metric points of one batch (see the module docstring for the shape)."""
    base = {
        "ts": bp.timestamp,
        "job": job,
        "query": bp.query_name,
        "target": target,
        "batch_id": bp.batch_id,
    }

    def pt(name: str, value: float, **dims: Any) -> dict[str, Any]:
        return {**base, "name": name, "value": value, "unit": METRICS[name].unit, **dims}

    points: list[dict[str, Any]] = []
    for topic, parts in sorted(bp.lag.items()):
        for part, n in sorted(parts.items(), key=lambda kv: int(kv[0])):
            points.append(pt(LAG, n, topic=topic, partition=int(part)))
        points.append(pt(LAG_TOPIC, sum(parts.values()), topic=topic))
    points.append(pt(BATCH_DURATION, bp.duration_ms))
    if trigger_seconds:
        points.append(pt(BATCH_RATIO, round(bp.duration_ms / 1000.0 / trigger_seconds, 4)))
    points.append(pt(STATE_ROWS, bp.state_rows, operator="all"))
    points.append(pt(STATE_MEMORY, bp.state_memory_bytes, operator="all"))
    for name, rows, memory in bp.operators:
        points.append(pt(STATE_OP_ROWS, rows, operator=name))
        points.append(pt(STATE_OP_MEMORY, memory, operator=name))
    points.append(pt(DROPPED, bp.dropped_by_watermark))
    points.append(pt(INPUT_ROWS, bp.input_rows))
    if bp.duration_ms > 0:
        points.append(pt(PROCESSED_RATE, round(bp.input_rows * 1000.0 / bp.duration_ms, 2)))
    now, prev = _ts(bp.timestamp), _ts(previous_ts or "")
    if now is not None and prev is not None and now > prev:
        points.append(pt(INPUT_RATE, round(bp.input_rows / (now - prev).total_seconds(), 2)))
    points.append(pt(QUARANTINED, bp.malformed_rows))
    mark = _ts(bp.watermark or "")
    # Spark reports the epoch until the first event sets a watermark: no lead to speak of.
    if now is not None and mark is not None and mark.timestamp() > 0:
        points.append(pt(WATERMARK_LEAD, round((mark - now).total_seconds(), 3)))
    return points


def console_line(bp: BatchProgress, trigger_seconds: float | None) -> str:
    """A compact line per batch for the console."""
    ratio = (
        f" ({bp.duration_ms / 1000.0 / trigger_seconds:.2f}x trigger)" if trigger_seconds else ""
    )
    worst = max((n for parts in bp.lag.values() for n in parts.values()), default=0)
    return (
        f"[{bp.query_name} #{bp.batch_id}] rows={bp.input_rows} dur={bp.duration_ms}ms{ratio} "
        f"lag={bp.total_lag} (max/partition {worst}) state={bp.state_rows} rows/"
        f"{bp.state_memory_bytes / 1e6:.1f}MB dropped={bp.dropped_by_watermark} "
        f"quarantined={bp.malformed_rows}"
    )


class BatchMetrics:
    """The per-batch emitter: BatchProgress -> metric points -> exporter (+ a console line).

    Called from the runner's on_batch path. Never raises: the exporter buffers and counts its own
    failures, and any error here is counted in `errors` and logged through `say`.
    """

    def __init__(
        self,
        *,
        job: str,
        target: str,
        trigger_seconds: float | None,
        export: Callable[[list[dict[str, Any]]], None],
        say: Callable[[str], None] | None = None,
        listeners: tuple[Callable[[BatchProgress, list[dict[str, Any]]], None], ...] = (),
    ):
        self.job = job
        self.target = target
        self.trigger_seconds = trigger_seconds
        self.export = export
        self.say = say or (lambda _m: None)
        self.listeners = listeners
        self.errors = 0
        self._prev: dict[str, str] = {}

    def __call__(self, bp: BatchProgress) -> list[dict[str, Any]]:
        try:
            points = batch_points(
                bp,
                job=self.job,
                target=self.target,
                trigger_seconds=self.trigger_seconds,
                previous_ts=self._prev.get(bp.query_name),
            )
            self._prev[bp.query_name] = bp.timestamp
            self.export(points)
            self.say(console_line(bp, self.trigger_seconds))
            for fn in self.listeners:
                fn(bp, points)
            return points
        except Exception as exc:  # monitoring never fails the stream
            self.errors += 1
            self.say(f"warning: metrics for {bp.query_name} batch {bp.batch_id} failed: {exc}")
            return []
