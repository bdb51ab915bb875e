"""Metrics to Azure Monitor through the real azure-monitor-ingestion client, against a local
server that speaks the Logs Ingestion API (the far side of the wire only)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from streamops.monitoring.exporters import AzureMonitorSink, BufferedExporter

RULE = "dcr-00000000000000000000000000000001"
STREAM = "Custom-StreamopsMetrics_CL"


class _Credential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://monitor.azure.com/.default",)
        return AccessToken("test-token", int(time.time()) + 3600)


class _Ingestion(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Ingestion

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        self.server.requests.append({
            "path": self.path, "auth": self.headers.get("Authorization"),
            "type": self.headers.get("Content-Type"), "body": json.loads(body),
        })  # fmt: skip
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Ingestion]:
    srv = _Ingestion()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


POINTS = [
    {"ts": "2026-11-24T06:00:00+00:00", "name": "streamops_kafka_lag_records", "value": 42,
     "unit": "records", "job": "claims_hourly", "query": "claims_hourly", "target": "prod",
     "batch_id": 7, "topic": "insurance.claims", "partition": 3},
]  # fmt: skip


def test_points_are_uploaded_as_rows_of_the_custom_table(server: _Ingestion) -> None:
    AzureMonitorSink(server.url, RULE, STREAM, credential=_Credential())(POINTS)
    [req] = server.requests
    assert req["path"] == f"/dataCollectionRules/{RULE}/streams/{STREAM}?api-version=2023-01-01"
    assert req["auth"] == "Bearer test-token"
    assert req["type"] == "application/json"
    assert req["body"] == [{
        "TimeGenerated": "2026-11-24T06:00:00+00:00", "Name": "streamops_kafka_lag_records",
        "Value": 42, "Unit": "records", "Job": "claims_hourly", "Query": "claims_hourly",
        "Target": "prod", "Topic": "insurance.claims", "Partition": 3, "BatchId": 7,
    }]  # fmt: skip


def test_an_outage_is_counted_and_never_reaches_the_stream(server: _Ingestion) -> None:
    server.status = 500
    exporter = BufferedExporter(
        AzureMonitorSink(server.url, RULE, STREAM, credential=_Credential()), name="azure-monitor"
    )
    exporter(POINTS)  # returns at once; the upload happens on the exporter's thread
    exporter.flush(60)
    exporter.close(5)
    assert exporter.stats()["failures"] >= 1
    assert server.requests  # it did try
