"""Metric exporters. Exporting never blocks or fails the stream: a bounded buffer drained by a
background thread; a full buffer drops points (counted), a failing sink is counted and logged, and
a sink that keeps failing raises the alarm ("monitoring blind") instead of going quiet."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

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


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 300 characters), for a log line and a page."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if isinstance(exc, ImportError) and exc.name:
        # On a cluster this means the job's wheel does not declare what the sink imports.
        text += f" (module '{exc.name}' is not installed where the job runs)"
    return text[:300]


class BlindAlarm(Protocol):
    """Told when an exporter has failed `blind_after` sends in a row, and when one works again.
    Each returns True once the alarm is raised (or lowered); False: try again at the next send."""

    def blind(self, exporter: str, why: str, failures: int) -> bool: ...

    def sighted(self, exporter: str) -> bool: ...


class BufferedExporter:
    """Hands batches of points to `sink` on a background thread, through a bounded queue.

    A failed send is counted and logged with its reason; `watch` raises an alarm after a bounded
    number of failures in a row (an import error of the sink's client counts as one: it raises
    inside the send), and lowers it when a send works again.
    """

    def __init__(self, sink: Callable[[Points], None], *, max_batches: int = 1000, name: str = ""):
        self.sink = sink
        self.name = name or getattr(sink, "__name__", type(sink).__name__)
        self._q: queue.Queue[Points | None] = queue.Queue(maxsize=max_batches)
        self.exported = 0  # points written
        self.dropped = 0  # points dropped because the buffer was full
        self.failures = 0  # sink calls that raised
        self.consecutive_failures = 0  # since the last send that worked
        self.last_error: str | None = None
        self.blind = False  # the alarm is raised
        self._blind_after = 0
        self._alarm: BlindAlarm | None = None
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

    def watch(self, blind_after: int, alarm: BlindAlarm) -> None:
        """Raise `alarm` after `blind_after` failed sends in a row; lower it on the next success."""
        self._blind_after, self._alarm = blind_after, alarm

    def _drain(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                self.sink(item)
                self.exported += len(item)
                self._sent()
            except Exception as exc:
                self._failed(exc)
            finally:
                self._q.task_done()

    def _sent(self) -> None:
        self.consecutive_failures = 0
        if self.blind and self._alarm is not None:
            self.blind = not _safely(self._alarm.sighted, self.name)
            if not self.blind:
                log.warning("metrics exporter %s: sending again", self.name)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = one_line(exc)
        log.warning(
            "metrics exporter %s failed (%d in a row, %d so far): %s",
            self.name,
            self.consecutive_failures,
            self.failures,
            self.last_error,
        )
        if self._alarm is None or self.blind or self.consecutive_failures < self._blind_after:
            return
        log.error(
            "metrics exporter %s: monitoring is blind after %d failed sends in a row: %s",
            self.name,
            self.consecutive_failures,
            self.last_error,
        )
        self.blind = _safely(
            self._alarm.blind, self.name, self.last_error, self.consecutive_failures
        )

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
            "consecutive_failures": self.consecutive_failures,
            "blind": self.blind,
            "last_error": self.last_error,
        }


def _safely(fn: Callable[..., bool], *args: Any) -> bool:
    # The alarm runs on the exporter's thread, which must outlive any error in it.
    try:
        return bool(fn(*args))
    except Exception as exc:
        log.error("metrics exporter alarm failed (retried at the next send): %s", one_line(exc))
        return False


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


def exporters_of(exporter: BufferedExporter | FanOut) -> tuple[BufferedExporter, ...]:
    """The buffered exporters behind `exporter` (itself, or each of a fan-out)."""
    return exporter.exporters if isinstance(exporter, FanOut) else (exporter,)
