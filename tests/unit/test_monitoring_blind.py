"""Monitoring that cannot go blind silently: an exporter that keeps failing pages "monitoring
blind" once and says why, and the watchdog watches every deployed query that started (from the
deploy record), paging one that never reported since, but never a job that was never started.

Far side of the wire only: a local PagerDuty (Events API v2) and a local Logs Ingestion server;
the deploy record is the real checkpoint registry, written by the real guard; time is a FakeClock.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from streamops.bundle import Bundle, load
from streamops.bundle.models import Alerts, Monitoring
from streamops.checkpoint.registry import guard
from streamops.clock import FakeClock
from streamops.deploy.watch import watchdog
from streamops.monitoring.alerts.evaluate import FastPath
from streamops.monitoring.exporters import (
    AzureMonitorSink,
    BufferedExporter,
    JsonlSink,
    metrics_dir,
)
from streamops.monitoring.metrics import batch_points
from streamops.monitoring.monitor import ExporterAlarm, JobMonitor
from streamops.monitoring.paging import pages_log
from streamops.pipeline.progress import BatchProgress
from tests.unit.helpers import PROJECT

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
ALERTS = Alerts(stalled_after="15 minutes")


class _Events(BaseHTTPRequestHandler):
    """PagerDuty Events API v2 (POST /v2/enqueue) and Logs Ingestion (POST /dataCollectionRules)
    on one loopback server: records each body, answers with the server's status for that API."""

    server: _Far

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/v2/enqueue"):
            self.server.pages.append(json.loads(raw))
            status, body = self.server.page_status, b'{"status": "success"}'
        else:
            self.server.uploads += 1
            status, body = self.server.ingestion_status, b'{"error": {"code": "Forbidden"}}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Far(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Events)
        self.pages: list[dict[str, Any]] = []
        self.uploads = 0
        self.page_status = 202
        self.ingestion_status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def actions(self) -> list[tuple[str, str]]:
        return [(p["event_action"], p["dedup_key"]) for p in self.pages]


@pytest.fixture
def far() -> Iterator[_Far]:
    srv = _Far()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def bundle_with(tmp_path: Path, **monitoring: Any) -> Bundle:
    """The shipped bundle's local target with these monitoring settings, its state in tmp_path."""
    b = load(PROJECT / "bundle.yml", "local")
    target = b.spec.targets["local"].model_copy(update={"monitoring": Monitoring(**monitoring)})
    spec = b.spec.model_copy(
        update={"targets": {**b.spec.targets, "local": target}, "alerts": ALERTS}
    )
    (tmp_path / "bundle.yml").write_text("")
    return dataclasses.replace(b, spec=spec, path=tmp_path / "bundle.yml")


def paged_bundle(tmp_path: Path, far: _Far, monkeypatch: pytest.MonkeyPatch, **more: Any) -> Bundle:
    monkeypatch.setenv("PD_KEY", "R0UTINGKEY")
    return bundle_with(
        tmp_path,
        paging="pagerduty",
        pagerduty_routing_key="{{env/PD_KEY}}",
        pagerduty_url=f"{far.url}/v2/enqueue",
        **more,
    )


def progress(i: int, at: datetime, query: str = "claims_hourly") -> BatchProgress:
    return BatchProgress(
        query_name=query,
        batch_id=i,
        timestamp=at.isoformat(),
        input_rows=10,
        malformed_rows=0,
        dropped_by_watermark=0,
        duration_ms=1000,
        state_rows=0,
        state_memory_bytes=0,
        watermark=None,
        end_offsets={"t": {"0": 10 * i}},
        latest_offsets={"t": {"0": 10 * i}},
    )


# --- the exporter: a bounded number of failed sends pages once, and the log says why --------


def test_a_failing_sink_pages_monitoring_blind_once_and_resolves_when_it_sends(
    tmp_path: Path, far: _Far, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the job's monitor: the JSON-lines sink cannot write (its folder is a file)."""
    b = paged_bundle(tmp_path, far, monkeypatch, blind_after_failures=3)
    blocked = metrics_dir(b.state_dir)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    said: list[str] = []
    monitor = JobMonitor.for_job(
        b, "claims_hourly", kafka=None, trigger_seconds=120, say=said.append
    )
    key = "streamops:local:monitoring_blind:claims_hourly:jsonl"
    for i in range(2):
        monitor(progress(i, T0 + timedelta(minutes=2 * i)))
        assert monitor.exporter.flush(30)
    assert far.actions() == []  # two failures: not yet
    for i in range(2, 6):
        monitor(progress(i, T0 + timedelta(minutes=2 * i)))
        assert monitor.exporter.flush(30)
    assert far.actions() == [("trigger", key)]  # the third failure pages, later ones do not
    trigger = far.pages[0]
    assert trigger["payload"]["severity"] == "critical"
    assert "monitoring is blind" in trigger["payload"]["summary"]
    why = trigger["payload"]["custom_details"]["error"]
    assert why.startswith(("FileExistsError", "NotADirectoryError")), why
    assert [line for line in said if "monitoring is blind" in line and why in line]
    assert any("monitoring is blind" in r.getMessage() for r in caplog.records)

    blocked.unlink()  # the sink can write again
    monitor(progress(6, T0 + timedelta(minutes=12)))
    assert monitor.exporter.flush(30)
    monitor.close()
    assert far.actions() == [("trigger", key), ("resolve", key)]
    assert monitor.exporter.stats()["blind"] is False


class _Token:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


def test_a_refused_upload_to_azure_monitor_pages_blind_with_the_reason(
    tmp_path: Path, far: _Far, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real azure-monitor-ingestion client against a Logs Ingestion server answering 403."""
    b = paged_bundle(tmp_path, far, monkeypatch)
    far.ingestion_status = 403
    sink = AzureMonitorSink(far.url, "dcr-00000000000000000000000000000001", "Custom-S", _Token())
    exporter = BufferedExporter(sink, name="azure-monitor")
    said: list[str] = []
    exporter.watch(5, ExporterAlarm("claims_hourly", FastPath(b, say=said.append), said.append))
    for i in range(7):
        exporter(
            batch_points(progress(i, T0), job="claims_hourly", target="local", trigger_seconds=120)
        )
        assert exporter.flush(60)
    exporter.close()
    key = "streamops:local:monitoring_blind:claims_hourly:azure-monitor"
    assert far.uploads >= 5
    assert far.actions() == [("trigger", key)]
    why = far.pages[0]["payload"]["custom_details"]["error"]
    assert "Forbidden" in why and "\n" not in why
    assert exporter.stats()["consecutive_failures"] == 7


def test_a_missing_sink_client_counts_as_a_failed_send_and_says_which(
    tmp_path: Path, far: _Far, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a cluster does when the wheel lacks azure-monitor-ingestion: the import fails inside
    the send, on the exporter's thread."""
    b = paged_bundle(tmp_path, far, monkeypatch, blind_after_failures=2)
    monkeypatch.setitem(__import__("sys").modules, "azure.monitor.ingestion", None)
    sink = AzureMonitorSink(far.url, "dcr-00000000000000000000000000000001", "Custom-S", _Token())
    exporter = BufferedExporter(sink, name="azure-monitor")
    said: list[str] = []
    exporter.watch(2, ExporterAlarm("claims_hourly", FastPath(b, say=said.append), said.append))
    for i in range(3):
        exporter([{"ts": T0.isoformat(), "name": "n", "value": i, "query": "claims_hourly"}])
        assert exporter.flush(30)
    exporter.close()
    assert len(far.pages) == 1 and far.uploads == 0
    why = far.pages[0]["payload"]["custom_details"]["error"]
    assert why.startswith("ModuleNotFoundError") and "'azure.monitor.ingestion'" in why
    assert any("monitoring is blind" in line and "azure.monitor.ingestion" in line for line in said)


def test_a_pager_outage_while_blind_is_retried_at_the_next_failure(
    tmp_path: Path, far: _Far, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = paged_bundle(tmp_path, far, monkeypatch)
    fast = FastPath(b)

    def broken(_points: list[dict[str, Any]]) -> None:
        raise OSError("no route to host")

    exporter = BufferedExporter(broken, name="jsonl")
    exporter.watch(1, ExporterAlarm("claims_hourly", fast))
    far.page_status = 503
    exporter([{}])
    assert exporter.flush(30)
    key = "streamops:local:monitoring_blind:claims_hourly:jsonl"
    assert exporter.stats()["blind"] is False  # the page did not go out: tried again later
    assert key not in fast.opened.read()
    far.page_status = 202
    exporter([{}])
    assert exporter.flush(30)
    exporter([{}])
    assert exporter.flush(30)
    exporter.close()
    assert far.actions() == [("trigger", key)] * 2  # the refused one, then the one that went out
    assert exporter.stats()["blind"] is True and key in fast.opened.read()


# --- the watchdog: every deployed query that started, from the deploy record ---------------


def _at(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.time(), UTC)


def _record(b: Bundle, job: str, event: str, clock: FakeClock) -> None:
    """What a deploy (event "deploy") and a job's start on its cluster ("start") write."""
    guard(b, job, event=event, storage_options={}, now=clock.time())


def _stalled(summary: dict[str, Any]) -> list[str]:
    return [k for k in summary["triggered"] if ":stalled:" in k]


def test_a_started_query_that_never_reported_is_stalled(tmp_path: Path) -> None:
    b = bundle_with(tmp_path)
    clock = FakeClock(now=T0.timestamp())
    _record(b, "claims_hourly", "deploy", clock)
    clock.sleep(60)
    _record(b, "claims_hourly", "start", clock)  # started; never exports a point
    clock.sleep(14 * 60)
    assert _stalled(watchdog(b, _at(clock))) == []  # 14 min: within stalled_after
    clock.sleep(2 * 60)
    summary = watchdog(b, _at(clock))
    assert _stalled(summary) == [
        "streamops:local:stalled:claims_hourly:claims_hourly",
        "streamops:local:stalled:claims_hourly:claims_hourly_bronze",
    ]
    assert summary["deploy_record"] == "2 started queries"
    page = json.loads(pages_log(b).read_text().splitlines()[0])
    assert "no batch since it started at 2026-11-24T06:01:00+00:00" in page["summary"]
    assert page["details"]["started"] == "2026-11-24T06:01:00+00:00"
    assert page["details"]["last_batch"] is None


def test_a_job_deployed_but_never_started_is_not_paged(tmp_path: Path) -> None:
    b = bundle_with(tmp_path)
    clock = FakeClock(now=T0.timestamp())
    _record(b, "claims_hourly", "deploy", clock)  # e.g. paused, or no run yet
    clock.sleep(6 * 3600)
    summary = watchdog(b, _at(clock))
    assert summary["triggered"] == [] and summary["breaches"] == []
    assert summary["deploy_record"] == "0 started queries"


def test_a_started_query_that_reports_is_not_stalled_until_it_stops(tmp_path: Path) -> None:
    b = bundle_with(tmp_path)
    clock = FakeClock(now=T0.timestamp())
    _record(b, "claims_hourly", "start", clock)
    sink = JsonlSink(metrics_dir(b.state_dir))
    for i in range(10):  # both queries report every 2 minutes for 20 minutes
        clock.sleep(120)
        for q in ("claims_hourly", "claims_hourly_bronze"):
            sink(
                batch_points(
                    progress(i, _at(clock), q),
                    job="claims_hourly",
                    target="local",
                    trigger_seconds=120,
                )
            )
    assert _stalled(watchdog(b, _at(clock))) == []
    clock.sleep(16 * 60)
    assert len(_stalled(watchdog(b, _at(clock)))) == 2


def test_a_job_that_restarts_before_its_first_batch_stays_stalled(tmp_path: Path) -> None:
    """A crash loop rewrites the start record every few minutes; the watchdog remembers the
    first start that no batch followed, so the loop is paged after stalled_after all the same."""
    b = bundle_with(tmp_path)
    clock = FakeClock(now=T0.timestamp())
    for _round in range(2):  # a restart every 5 minutes, each seen by a watchdog round
        _record(b, "claims_hourly", "start", clock)
        clock.sleep(5 * 60)
        assert _stalled(watchdog(b, _at(clock))) == []
    _record(b, "claims_hourly", "start", clock)
    clock.sleep(6 * 60)  # 16 minutes after the first start, 6 after the latest
    assert len(_stalled(watchdog(b, _at(clock)))) == 2


def test_without_a_readable_deploy_record_the_watchdog_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = bundle_with(tmp_path)
    registry = Path(b.checkpoint_root) / "_streamops_registry.json"
    registry.parent.mkdir(parents=True)
    registry.write_text("{not json")
    summary = watchdog(b, T0)
    assert "not valid JSON" in summary["deploy_record"]
    assert any("cannot read the deploy record" in r.getMessage() for r in caplog.records)
