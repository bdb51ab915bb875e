"""Streaming progress -> per-batch figures: rows, malformed, late drops, duration, state, lag."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamops.kafka.offsets import lag as offsets_lag
from streamops.pipeline.commit_meta import is_kafka_offsets
from streamops.pipeline.quality import QUALITY


@dataclass(frozen=True)
class BatchProgress:
    """One micro-batch of one query, as its progress event reports it."""

    query_name: str
    batch_id: int
    timestamp: str
    input_rows: int
    malformed_rows: int
    dropped_by_watermark: int
    duration_ms: int
    state_rows: int
    state_memory_bytes: int
    watermark: str | None
    end_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    start_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    latest_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per stateful operator (in plan order): (operator name, state rows, state memory bytes).
    operators: tuple[tuple[str, int, int], ...] = ()

    @property
    def lag(self) -> dict[str, dict[str, int]]:
        """Records behind per topic partition after this batch."""
        return offsets_lag(self.latest_offsets, self.end_offsets)

    @property
    def skipped_records(self) -> int:
        """Offsets in this batch's range that were not read (deleted by retention and skipped
        with failOnDataLoss=false). Transaction markers also take offsets, so a topic written by
        transactional producers counts those too."""
        if not self.start_offsets or not self.end_offsets:
            return 0
        span = sum(
            max(0, end - self.start_offsets.get(t, {}).get(p, end))
            for t, parts in self.end_offsets.items()
            for p, end in parts.items()
        )
        return max(0, span - self.input_rows)

    @property
    def total_lag(self) -> int:
        return sum(n for parts in self.lag.values() for n in parts.values())


def _offsets(text: Any) -> dict[str, dict[str, int]]:
    if not text:
        return {}
    data = json.loads(text) if isinstance(text, str) else text
    # Only Kafka sources have per-partition offsets; a Delta source's offset is another shape.
    return data if is_kafka_offsets(data) else {}


def parse_progress(p: dict[str, Any]) -> BatchProgress:
    """Parse StreamingQueryProgress JSON (the same for the built-in and the streamops source)."""
    end: dict[str, dict[str, int]] = {}
    start: dict[str, dict[str, int]] = {}
    latest: dict[str, dict[str, int]] = {}
    for s in p.get("sources", []):
        end.update(_offsets(s.get("endOffset")))
        start.update(_offsets(s.get("startOffset")))
        latest.update(_offsets(s.get("latestOffset")))
    ops = p.get("stateOperators", []) or []
    quality = (p.get("observedMetrics") or {}).get(QUALITY) or {}
    return BatchProgress(
        query_name=p.get("name") or "",
        batch_id=int(p.get("batchId", -1)),
        timestamp=p.get("timestamp", ""),
        input_rows=int(p.get("numInputRows", 0)),
        malformed_rows=int(quality.get("malformed_rows") or 0),
        dropped_by_watermark=sum(int(o.get("numRowsDroppedByWatermark", 0)) for o in ops),
        duration_ms=int((p.get("durationMs") or {}).get("triggerExecution", 0)),
        state_rows=sum(int(o.get("numRowsTotal", 0)) for o in ops),
        state_memory_bytes=sum(int(o.get("memoryUsedBytes", 0)) for o in ops),
        watermark=(p.get("eventTime") or {}).get("watermark"),
        end_offsets=end,
        start_offsets=start,
        latest_offsets=latest,
        operators=tuple(
            (
                f"{i}:{o.get('operatorName') or 'stateful'}",
                int(o.get("numRowsTotal", 0)),
                int(o.get("memoryUsedBytes", 0)),
            )
            for i, o in enumerate(ops)
        ),
    )


class ProgressCollector:
    """Keeps every batch's progress per query and calls `on_batch` as each one completes."""

    def __init__(self, on_batch: Callable[[BatchProgress], None] | None = None):
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self.batches: dict[str, list[BatchProgress]] = {}

    def add(self, progress_json: str) -> BatchProgress:
        bp = parse_progress(json.loads(progress_json))
        with self._lock:
            self.batches.setdefault(bp.query_name, []).append(bp)
        if self.on_batch is not None:
            self.on_batch(bp)
        return bp

    def for_query(self, name: str) -> list[BatchProgress]:
        with self._lock:
            return list(self.batches.get(name, []))

    def listener(self) -> Any:
        """A pyspark StreamingQueryListener feeding this collector."""
        from pyspark.sql.streaming import StreamingQueryListener

        collector = self

        class _Listener(StreamingQueryListener):
            def onQueryStarted(self, event: Any) -> None:
                pass

            def onQueryProgress(self, event: Any) -> None:
                collector.add(event.progress.json)

            def onQueryIdle(self, event: Any) -> None:
                pass

            def onQueryTerminated(self, event: Any) -> None:
                pass

        return _Listener()
