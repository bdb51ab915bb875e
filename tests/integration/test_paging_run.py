"""A real run where the producer outpaces the job: it pages once per partition that falls behind,
and resolves each page once when the job has caught up (PagerDuty's far side is a local server)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from streamops.bundle.durations import parse_duration
from streamops.bundle.models import Monitoring
from streamops.demo.sample import generate, produce, utc
from streamops.localstack import LocalStack
from streamops.runner.job import run_job
from tests.integration.helpers import kafka_conf, local_bundle


class _PagerDuty(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    server: _PagerDuty

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v2/enqueue"
        self.server.events.append(body)
        out = json.dumps({"status": "success", "message": "Event processed",
                          "dedup_key": body["dedup_key"]}).encode()  # fmt: skip
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pagerduty() -> Iterator[_PagerDuty]:
    srv = _PagerDuty()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


@pytest.mark.slow
def test_lag_pages_once_then_resolves_once(
    tmp_path: Path,
    spark: Any,
    local_stack: LocalStack,
    new_topic: Callable[..., str],
    pagerduty: _PagerDuty,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PD_ROUTING_KEY", "R0UTINGKEY")
    topic = new_topic(partitions=2)
    bundle = local_bundle(tmp_path, topics={"claims": topic},
                          jobs={"claims_hourly": {"max_offsets_per_trigger": 200}})  # fmt: skip
    target = bundle.spec.targets["local"].model_copy(update={"monitoring": Monitoring(
        paging="pagerduty", pagerduty_routing_key="{{env/PD_ROUTING_KEY}}",  # type: ignore[arg-type]
        pagerduty_url=f"http://127.0.0.1:{pagerduty.server_address[1]}/v2/enqueue")})  # fmt: skip
    alerts = bundle.spec.alerts.model_copy(
        update={"lag_records_per_partition": 150, "lag_for": parse_duration("1 second")}
    )
    spec = bundle.spec.model_copy(update={"targets": {**bundle.spec.targets, "local": target},
                                          "alerts": alerts})  # fmt: skip
    (tmp_path / "bundle.yml").write_text("")  # pages, alert state and metrics under tmp_path/.cache
    bundle = dataclasses.replace(bundle, spec=spec, path=tmp_path / "bundle.yml")
    job = bundle.job("claims_hourly")
    # 2,000 events at once on 2 partitions, read 200 per batch: ~900 behind per partition at first.
    produce(kafka_conf(bundle), topic, generate(job, partitions=2,
            start=utc("2026-11-24T06:00:00Z"), span=timedelta(hours=2), n=2000))  # fmt: skip

    run = run_job(bundle, "claims_hourly", spark, available_now=True)

    assert max(b.total_lag for b in run.bronze_batches) > 300 and run.lag_end == {
        topic: {"0": 0, "1": 0}
    }
    triggers = Counter(e["dedup_key"] for e in pagerduty.events if e["event_action"] == "trigger")
    resolves = Counter(e["dedup_key"] for e in pagerduty.events if e["event_action"] == "resolve")
    assert triggers, "the lag breach did not page"
    assert set(triggers.values()) == {1}, "a breach paged more than once"
    assert resolves == triggers, "every page is resolved exactly once after the catch-up"
    lag_pages = [k for k in triggers if ":lag_partition:" in k]
    assert {k.rsplit(":", 1)[-1] for k in lag_pages} == {"0", "1"}  # one per partition behind
    first = next(e for e in pagerduty.events if e["event_action"] == "trigger")
    assert first["routing_key"] == "R0UTINGKEY"
    assert first["payload"]["custom_details"]["threshold"] == 150
