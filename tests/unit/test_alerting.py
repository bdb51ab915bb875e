"""Metrics, alert rules (injected clock), open-alert dedup, PagerDuty and Azure Monitor wire
formats against local servers, and the exporter never blocking the stream."""

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

from streamops.bundle import Bundle, load
from streamops.bundle.models import Alerts, Monitoring
from streamops.monitoring import metrics as m
from streamops.monitoring.alerts.evaluate import FastPath, evaluate_bundle
from streamops.monitoring.alerts.rules import evaluate
from streamops.monitoring.exporters import BufferedExporter, JsonlSink, read_points
from streamops.monitoring.paging import pages_log
from streamops.pipeline.progress import BatchProgress
from tests.unit.helpers import PROJECT

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
ALERTS = Alerts(lag_records_per_partition=1000, lag_for="10 minutes", consecutive_slow_batches=3,
                state_store_mb=100, state_growth_pct_per_hour=50, dropped_rows_per_minute=10,
                quarantined_rows_per_minute=10, stalled_after="15 minutes")  # fmt: skip


def bp(i: int, *, at: datetime, lag: int = 0, dur_ms: int = 1000, state: int = 0,
       dropped: int = 0, bad: int = 0, query: str = "q") -> BatchProgress:  # fmt: skip
    return BatchProgress(
        query_name=query, batch_id=i, timestamp=at.isoformat().replace("+00:00", "Z"),
        input_rows=100, malformed_rows=bad, dropped_by_watermark=dropped, duration_ms=dur_ms,
        state_rows=10, state_memory_bytes=state, watermark=None,
        end_offsets={"t": {"0": 100 * i, "1": 50}}, latest_offsets={"t": {"0": 100 * i + lag, "1": 50}},
    )  # fmt: skip


def points(*batches: BatchProgress, trigger: float = 30.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev = None
    for b in batches:
        out += m.batch_points(b, job="j", target="local", trigger_seconds=trigger, previous_ts=prev)
        prev = b.timestamp
    return out


def breached(findings: list[Any], rule: str) -> list[Any]:
    return [f for f in findings if f.rule == rule and f.breached]


def test_batch_points_names_units_dimensions() -> None:
    pts = points(bp(1, at=T0), bp(2, at=T0 + timedelta(seconds=30), lag=700, dur_ms=45_000))
    last = [p for p in pts if p["batch_id"] == 2]
    by = {(p["name"], p.get("partition")): p for p in last}
    assert by[(m.LAG, 0)]["value"] == 700 and by[(m.LAG, 0)]["topic"] == "t"
    assert by[(m.LAG, 1)]["value"] == 0
    assert by[(m.LAG_TOPIC, None)]["value"] == 700
    assert by[(m.BATCH_RATIO, None)]["value"] == 1.5
    assert by[(m.INPUT_RATE, None)]["value"] == 3.33
    assert by[(m.PROCESSED_RATE, None)]["value"] == 2.22
    for p in last:
        assert (
            set(m.METRICS[p["name"]].dimensions) <= set(p)
            and p["unit"] == m.METRICS[p["name"]].unit
        )
    assert "(1.50x trigger)" in m.console_line(bp(2, at=T0, dur_ms=45_000), 30)


def test_lag_must_hold_for_the_window() -> None:
    pts = points(*(bp(i, at=T0 + timedelta(minutes=i), lag=5000) for i in range(12)))
    at = lambda minutes: T0 + timedelta(minutes=minutes)  # noqa: E731
    assert not breached(evaluate(pts, ALERTS, at(9), rules=["lag_partition"]), "lag_partition")
    hit = breached(evaluate(pts, ALERTS, at(11), rules=["lag_partition"]), "lag_partition")
    assert [(f.dims, f.value) for f in hit] == [({"topic": "t", "partition": 0}, 5000)]
    # one batch back under the limit restarts the clock
    pts += points(bp(12, at=at(12), lag=0), bp(13, at=at(13), lag=5000))
    assert not breached(evaluate(pts, ALERTS, at(14), rules=["lag_partition"]), "lag_partition")


def test_slow_batches_consecutive_and_state_rules() -> None:
    slow = [bp(i, at=T0 + timedelta(seconds=40 * i), dur_ms=40_000) for i in range(3)]
    assert not breached(
        evaluate(points(*slow[:2]), ALERTS, T0 + timedelta(minutes=5)), "slow_batches"
    )
    assert breached(evaluate(points(*slow), ALERTS, T0 + timedelta(minutes=5)), "slow_batches")
    fast_again = points(*slow, bp(3, at=T0 + timedelta(minutes=2), dur_ms=1000))
    assert not breached(evaluate(fast_again, ALERTS, T0 + timedelta(minutes=5)), "slow_batches")
    # state: 50 MB -> 80 MB in 20 minutes = +180%/hour; 120 MB is above the 100 MB limit
    grow = points(
        bp(0, at=T0, state=50_000_000), bp(1, at=T0 + timedelta(minutes=20), state=80_000_000)
    )
    g = breached(evaluate(grow, ALERTS, T0 + timedelta(minutes=21)), "state_growth")
    assert len(g) == 1 and g[0].value == pytest.approx(180)
    assert not breached(evaluate(grow, ALERTS, T0 + timedelta(minutes=21)), "state_size")
    big = points(bp(0, at=T0, state=120_000_000))
    assert breached(evaluate(big, ALERTS, T0 + timedelta(minutes=1)), "state_size")


def test_rates_and_stalled() -> None:
    pts = points(bp(0, at=T0, dropped=30, bad=80), bp(1, at=T0 + timedelta(minutes=1), dropped=10))
    f = evaluate(pts, ALERTS, T0 + timedelta(minutes=2))
    assert [x.value for x in breached(f, "quarantine_rate")] == [16.0]  # 80 rows / 5 min
    assert not breached(f, "watermark_drops")  # 40 rows / 5 min = 8/min
    assert not breached(evaluate(pts, ALERTS, T0 + timedelta(minutes=10)), "quarantine_rate")
    assert not breached(evaluate(pts, ALERTS, T0 + timedelta(minutes=15)), "stalled")
    dead = breached(evaluate(pts, ALERTS, T0 + timedelta(minutes=17)), "stalled")
    assert [(f.query, f.value) for f in dead] == [("q", 16.0)]
    assert not evaluate(pts, ALERTS, T0 + timedelta(minutes=17), stall_queries={"other"})[
        -1:
    ] or all(
        f.rule != "stalled"
        for f in evaluate(pts, ALERTS, T0 + timedelta(minutes=17), stall_queries=set())
    )


def test_every_rule_has_one_evaluator_and_one_query() -> None:
    """The rule table, its Python evaluators and its KQL queries name the same rules."""
    from streamops.monitoring.alerts.kql import QUERIES
    from streamops.monitoring.alerts.rules import EVALUATORS, RULES

    assert list(EVALUATORS) == list(RULES) == list(QUERIES)


# --- bundles with monitoring settings -------------------------------------------------------


def bundle_with(tmp_path: Path, **monitoring: Any) -> Bundle:
    b = load(PROJECT / "bundle.yml", "local")
    target = b.spec.targets["local"].model_copy(update={"monitoring": Monitoring(**monitoring)})
    spec = b.spec.model_copy(update={"targets": {**b.spec.targets, "local": target}})
    (tmp_path / "bundle.yml").write_text("")  # cache_dir = tmp_path/.cache
    return dataclasses.replace(b, spec=spec, path=tmp_path / "bundle.yml")


class Recorder(BaseHTTPRequestHandler):
    """Records each POST (path, JSON body, headers) on the server; answers server.reply_fn."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append((self.path, body, dict(self.headers)))  # type: ignore[attr-defined]
        out = json.dumps(self.server.reply_fn(self.path, body)).encode()  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.bodies = []  # type: ignore[attr-defined]
    srv.status = 202  # type: ignore[attr-defined]
    srv.reply_fn = lambda path, body: {
        "status": "success",
        "message": "Event processed",  # type: ignore[attr-defined]
        "dedup_key": body.get("dedup_key"),
    }
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def test_pagerduty_trigger_once_resolve_once(tmp_path: Path, server: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PD_KEY", "R0UTINGKEY")
    b = bundle_with(tmp_path, paging="pagerduty", pagerduty_routing_key="{{env/PD_KEY}}",
                    pagerduty_url=f"http://127.0.0.1:{server.server_port}/v2/enqueue")  # fmt: skip
    b = dataclasses.replace(b, spec=b.spec.model_copy(update={"alerts": ALERTS.model_copy(
        update={"runbook_url": "https://wiki.example.com/runbook"})}))  # fmt: skip
    clock = [T0]  # the injected clock: 5 s after each batch started
    fast = FastPath(b, clock=lambda: clock[0])
    metrics = m.BatchMetrics(job="claims_hourly", target="local", trigger_seconds=30,
                             export=lambda _p: None, listeners=(fast,))  # fmt: skip

    def batch(i: int, minute: float, lag: int) -> None:
        at = T0 + timedelta(minutes=minute)
        clock[0] = at + timedelta(seconds=5)
        metrics(bp(i, at=at, lag=lag, query="claims_hourly"))

    for i in range(13):  # lag 5000 on t[0]: pages at minute 10, not again at 11 and 12
        batch(i, i, 5000)
        assert len(server.bodies) == (1 if i >= 10 else 0)
    batch(13, 13, 0)  # recovered: one resolve
    batch(14, 13.5, 0)
    assert fast.errors == 0
    sent = [(p, body) for p, body, _h in server.bodies]
    assert [body["event_action"] for _p, body in sent] == ["trigger", "resolve"]
    key = "streamops:local:lag_partition:claims_hourly:claims_hourly:t:0"
    trigger = sent[0][1]
    ts = trigger["payload"].pop("timestamp")
    assert datetime.fromisoformat(ts).tzinfo is not None
    assert sent[0][0] == "/v2/enqueue"
    assert trigger == {
        "routing_key": "R0UTINGKEY",
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": "claims_hourly: lag 5000 records on t[0] above 1000 for 10 min (limit 10 minutes)",
            "source": "streamops/local",
            "severity": "error",
            "component": "claims_hourly",
            "group": "streamops-demo",
            "class": "lag_partition",
            "custom_details": {
                "rule": "lag_partition", "job": "claims_hourly", "query": "claims_hourly",
                "value": 5000.0, "threshold": 1000, "target": "local", "topic": "t", "partition": 0,
                "above_since": "2026-11-24T06:00:00+00:00",
                "runbook": "https://wiki.example.com/runbook",
            },
        },
        "links": [{"href": "https://wiki.example.com/runbook", "text": "Runbook"}],
    }  # fmt: skip
    assert sent[1][1] == {"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": key}
    log = [json.loads(x) for x in pages_log(b).read_text().splitlines()]
    assert [x.get("action", "trigger") for x in log] == ["trigger", "resolve"]


def test_pagerduty_outage_retries_next_time(tmp_path: Path, server: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PD_KEY", "k")
    b = bundle_with(tmp_path, paging="pagerduty", pagerduty_routing_key="{{env/PD_KEY}}",
                    pagerduty_url=f"http://127.0.0.1:{server.server_port}/v2/enqueue")  # fmt: skip
    b = dataclasses.replace(b, spec=b.spec.model_copy(update={"alerts": ALERTS}))
    pts = points(bp(0, at=T0, state=500_000_000))
    server.status = 500
    ev = evaluate_bundle(b, T0 + timedelta(minutes=1), page=True, points=pts)
    assert ev.sync is not None and ev.sync.failed and not ev.sync.triggered
    server.status = 202
    ev = evaluate_bundle(b, T0 + timedelta(minutes=2), page=True, points=pts)
    assert ev.sync is not None and len(ev.sync.triggered) == 1
    ev = evaluate_bundle(b, T0 + timedelta(minutes=3), page=True, points=pts)
    assert ev.sync is not None and not ev.sync.triggered  # still open: no second page
    assert [b["event_action"] for _p, b, _h in server.bodies] == ["trigger", "trigger"]


def test_local_jsonl_evaluate_and_blind(tmp_path: Path) -> None:
    b = bundle_with(tmp_path)
    b = dataclasses.replace(b, spec=b.spec.model_copy(update={"alerts": ALERTS}))
    JsonlSink(b.cache_dir / "metrics")(points(bp(0, at=T0, query="claims_hourly")))
    (b.cache_dir / "metrics" / "claims_hourly.jsonl").open("a").write("not json\n")
    assert len(read_points(b.cache_dir / "metrics")) == len(points(bp(0, at=T0)))
    ev = evaluate_bundle(b, T0 + timedelta(minutes=30), page=True)
    assert [f.query for f in ev.breaches] == ["claims_hourly"] and ev.breaches[0].rule == "stalled"
    assert ev.sync is not None and ev.sync.triggered == ["streamops:local:stalled:j:claims_hourly"]


def test_exporter_outage_never_blocks(tmp_path: Path) -> None:
    import threading

    calls = {"n": 0}
    outage = threading.Event()  # the sink hangs until the test lets it fail

    def broken(_points: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        outage.wait(10)
        raise OSError("disk gone")

    ex = BufferedExporter(broken, max_batches=5)
    # 200 batches handed over while the sink hangs: every call returns (the stream never waits),
    # the bounded buffer keeps 5 and the rest are dropped and counted.
    for i in range(200):
        ex([{"i": i}])
    assert calls["n"] <= 1 and ex.dropped >= 150
    outage.set()
    ex.flush(5)
    assert (
        ex.failures == calls["n"] >= 1 and ex.dropped >= 150 and "disk gone" in str(ex.last_error)
    )
    ex.close()
    good = BufferedExporter(JsonlSink(tmp_path), max_batches=100)
    good(points(bp(0, at=T0)))
    good.close()
    assert good.exported == len(points(bp(0, at=T0))) and good.failures == 0


class StaticToken:
    """A TokenCredential with a fixed token (the far side is a local server)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes = scopes
        return AccessToken("test-token", int(time.time()) + 3600)


def test_azure_monitor_query_and_blind(tmp_path: Path, server: Any) -> None:
    b = bundle_with(tmp_path, metrics="azure-monitor", workspace_id="ws-123",
                    logs_endpoint=f"http://127.0.0.1:{server.server_port}/v1",
                    ingestion_endpoint=f"http://127.0.0.1:{server.server_port}",
                    dcr_immutable_id="dcr-00000000000000000000000000000001")  # fmt: skip
    b = dataclasses.replace(b, spec=b.spec.model_copy(update={"alerts": ALERTS}))
    rows = [[p["ts"], p["name"], p["value"], p["unit"], p["job"], p["query"], p["target"],
             p.get("topic", ""), p.get("partition"), p["batch_id"], p.get("operator", "")]
            for p in points(bp(0, at=T0, state=500_000_000, query="claims_hourly"))]  # fmt: skip
    types = ["datetime", "string", "real", "string", "string", "string", "string", "string",
             "int", "long", "string"]  # fmt: skip
    from streamops.monitoring.metrics_table import COLUMNS

    server.status = 200
    server.reply_fn = lambda path, body: {"tables": [{
        "name": "PrimaryResult", "columns": [{"name": c, "type": t} for c, t in zip(COLUMNS, types, strict=True)],
        "rows": rows}]}  # fmt: skip
    now = T0 + timedelta(minutes=1)
    kw = {"credential": StaticToken(), "request_kwargs": {"enforce_https": False}, "retry_total": 0}
    ev = evaluate_bundle(b, now, page=True, **kw)
    assert ev.blind is None
    assert [f.rule for f in ev.breaches] == ["state_size"]
    path, body, headers = server.bodies[0]
    assert path == "/v1/workspaces/ws-123/query"
    assert headers["Authorization"] == "Bearer test-token"
    assert body == {
        "query": "StreamopsMetrics_CL\n| where TimeGenerated > ago(7200s) and Target == 'local'\n"
        "| project TimeGenerated, Name, Value, Unit, Job, Query, Target, Topic, Partition, BatchId, Operator\n"
        "| order by TimeGenerated asc",
        "timespan": "2026-11-24T04:01:00.000Z/2026-11-24T06:01:00.000Z",
        "workspaces": None,
    }
    # the alert query fails: that pages ("monitoring is blind"), once; recovery resolves it
    server.status = 500
    server.reply_fn = lambda path, body: {"error": {"code": "InternalError", "message": "down"}}
    for _ in range(2):
        ev = evaluate_bundle(b, now, page=True, **kw)
        assert ev.blind and ev.sync is not None
    log = [json.loads(x) for x in pages_log(b).read_text().splitlines()]
    blind = [x for x in log if "blind" in x["summary"]]
    assert len(blind) == 1 and blind[0]["severity"] == "critical"
    server.status = 200
    server.reply_fn = lambda path, body: {"tables": [{"name": "PrimaryResult", "columns": [
        {"name": c, "type": t} for c, t in zip(COLUMNS, types, strict=True)], "rows": []}]}  # fmt: skip
    ev = evaluate_bundle(b, now, page=True, **kw)
    assert ev.sync is not None and ev.sync.resolved == ["streamops:local:monitoring_blind:*:*"]


def test_a_watermark_from_the_future_is_measured_and_pages() -> None:
    """The gold query's watermark against its batch's time: behind the clock on a sane stream;
    an event from the future (had it passed the quarantine) puts it ahead, and that pages."""
    from streamops.monitoring.alerts.kql import rule_query

    def gold(i: int, at: datetime, watermark: datetime | None) -> BatchProgress:
        mark = watermark.isoformat().replace("+00:00", "Z") if watermark else None
        return dataclasses.replace(bp(i, at=at, query="gold"), watermark=mark)

    sane = [gold(1, T0, None), gold(2, T0 + timedelta(minutes=1), T0 - timedelta(minutes=30))]
    pts = points(*sane)
    leads = [p["value"] for p in pts if p["name"] == m.WATERMARK_LEAD]
    assert leads == [-31 * 60.0]  # none before the first event sets one
    now = T0 + timedelta(minutes=2)
    [f] = [x for x in evaluate(pts, ALERTS, now) if x.rule == "watermark_ahead"]
    assert not f.breached

    poisoned = gold(3, T0 + timedelta(minutes=2), datetime(2099, 1, 1, tzinfo=UTC))
    pts += points(poisoned)
    [f] = breached(evaluate(pts, ALERTS, now + timedelta(seconds=1)), "watermark_ahead")
    assert f.query == "gold" and f.severity == "critical" and f.value > 365 * 86400
    assert "on-time events are being dropped" in f.summary and "max_clock_skew" in f.summary
    assert m.WATERMARK_LEAD in rule_query("watermark_ahead", ALERTS, "T_CL", "prod")
