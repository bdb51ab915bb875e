"""Metric exporters. Exporting never blocks or fails the stream: a bounded buffer drained by a
background thread; a full buffer drops points (counted), a failing sink is counted and logged."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamops.monitoring.metrics_table import to_row

log = logging.getLogger(__name__)

Points = list[dict[str, Any]]


class JsonlSink:
    """Local: one JSON line per point in `<dir>/<query>.jsonl`."""

    def __init__(self, directory: Path):
        self.directory = directory

    def __call__(self, points: Points) -> None:
        by_query: dict[str, list[str]] = {}
        for p in points:
            by_query.setdefault(str(p["query"]), []).append(
                json.dumps(p, separators=(",", ":"), default=str)
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        for q, lines in by_query.items():
            with (self.directory / f"{q}.jsonl").open("a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")


class AzureMonitorSink:
    """dev/prod: points uploaded to a Log Analytics custom table through a Data Collection Rule.

    azure-monitor-ingestion (the Logs Ingestion API) keeps each point as one row with all its
    dimensions, which is what the KQL of the alert rules and the watchdog query; metric-only
    exporters would flatten partitions away. Runs inside BufferedExporter's thread: a failure
    raises here, is counted there, and never reaches the stream.
    """

    def __init__(
        self,
        endpoint: str,
        rule_id: str,
        stream_name: str,
        credential: Any = None,
    ):
        self.endpoint = endpoint.rstrip("/")
        self.rule_id = rule_id
        self.stream_name = stream_name
        self._credential = credential
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from azure.monitor.ingestion import LogsIngestionClient

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            self._client = LogsIngestionClient(self.endpoint, credential)
        return self._client

    def __call__(self, points: Points) -> None:
        errors: list[str] = []
        kwargs: dict[str, Any] = {}
        if self.endpoint.startswith(("http://127.0.0.1", "http://localhost")):
            # Loopback test servers only: azure-core refuses bearer tokens over plain http.
            kwargs["enforce_https"] = False
        # The same columns the alert rules' KQL reads back (metrics_table.COLUMNS).
        rows = [to_row(p) for p in points]
        self._get_client().upload(
            self.rule_id,
            self.stream_name,
            json.loads(json.dumps(rows, default=str)),
            on_error=lambda e: errors.append(str(e.error)),
            **kwargs,
        )
        if errors:
            raise RuntimeError(
                f"Azure Monitor ingestion rejected {len(errors)} chunk(s): {errors[0]}"
            )


def metrics_dir(cache_dir: Path) -> Path:
    return cache_dir / "metrics"


def read_points(directory: Path, queries: set[str] | None = None) -> Points:
    """Every point under `directory` (optionally only these queries); bad lines are skipped."""
    out: Points = []
    if not directory.exists():
        return out
    for f in sorted(directory.glob("*.jsonl")):
        if queries is not None and f.stem not in queries:
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                p = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(p, dict) and "name" in p and "ts" in p:
                out.append(p)
    return out


class BufferedExporter:
    """Hands batches of points to `sink` on a background thread, through a bounded queue."""

    def __init__(self, sink: Callable[[Points], None], *, max_batches: int = 1000, name: str = ""):
        self.sink = sink
        self.name = name or getattr(sink, "__name__", type(sink).__name__)
        self._q: queue.Queue[Points | None] = queue.Queue(maxsize=max_batches)
        self.exported = 0  # points written
        self.dropped = 0  # points dropped because the buffer was full
        self.failures = 0  # sink calls that raised
        self.last_error: str | None = None
        self._thread = threading.Thread(
            target=self._drain, name=f"exporter-{self.name}", daemon=True
        )
        self._thread.start()

    def __call__(self, points: Points) -> None:
        try:
            self._q.put_nowait(list(points))
        except queue.Full:
            self.dropped += len(points)
            if self.dropped == len(points) or self.dropped % 10_000 < len(points):
                log.warning(
                    "metrics exporter %s: buffer full, %d points dropped so far",
                    self.name,
                    self.dropped,
                )

    def _drain(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                self.sink(item)
                self.exported += len(item)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "metrics exporter %s failed (%d so far): %s",
                    self.name,
                    self.failures,
                    self.last_error,
                )
            finally:
                self._q.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the buffer is empty (or `timeout`); True when it emptied."""
        done = threading.Event()

        def wait() -> None:
            self._q.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        try:
            self._q.put(None, timeout=1)
        except queue.Full:
            return
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "exported": self.exported,
            "dropped": self.dropped,
            "failures": self.failures,
            "last_error": self.last_error,
        }


class FanOut:
    """Hands each batch of points to several buffered exporters; one failing stalls none."""

    def __init__(self, *exporters: BufferedExporter):
        self.exporters = exporters

    def __call__(self, points: Points) -> None:
        for e in self.exporters:
            e(points)

    def flush(self, timeout: float = 10.0) -> bool:
        return all(e.flush(timeout) for e in self.exporters)

    def close(self, timeout: float = 10.0) -> None:
        for e in self.exporters:
            e.close(timeout)

    def stats(self) -> dict[str, Any]:
        return {e.name: e.stats() for e in self.exporters}
