"""The compaction report reaches Azure Monitor like the streams' metrics: the real
azure-monitor-ingestion client against a local Logs Ingestion API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamops.bundle import load
from streamops.compaction.run_report import CompactionReport, Snapshot, emit_metrics
from tests.unit.helpers import edited, write
from tests.unit.test_azure_monitor_export import RULE, _Credential, _Ingestion


@pytest.fixture
def server() -> Iterator[_Ingestion]:
    srv = _Ingestion()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


REPORT = CompactionReport(
    table="claims_hourly", target="local", engine="spark-sql", status="compacted", dry_run=False,
    started_at="2026-11-24T02:00:00+00:00", duration_s=12.5, before=Snapshot(40, 4_000_000, 38),
    after=Snapshot(2, 3_900_000, 0), partitions_touched=("day=2026-11-23",), retries=2,
    vacuum_retention_hours=192, vacuum_reason="reader 'fraud' (max lag 7 days) + margin 24 hours",
)  # fmt: skip


def test_compaction_metrics_reach_azure_monitor_and_the_json_lines(
    tmp_path: Path, server: _Ingestion
) -> None:
    monitoring = (f"    monitoring: {{metrics: azure-monitor, workspace_id: ws-1, "
                  f"ingestion_endpoint: '{server.url}', dcr_immutable_id: {RULE}}}\n")  # fmt: skip
    b = load(write(tmp_path, edited(("    storage_root: .cache/data\n",
                                     "    storage_root: .cache/data\n" + monitoring))), "local")  # fmt: skip
    now = datetime(2026, 11, 24, 2, 1, tzinfo=UTC)
    path = emit_metrics(b, REPORT, now, credential=_Credential())
    [req] = server.requests
    rows = {r["Name"]: r for r in req["body"]}
    assert rows["streamops.compaction.files_after"] == {
        "TimeGenerated": now.isoformat(), "Name": "streamops.compaction.files_after", "Value": 2,
        "Unit": "count", "Job": "claims_hourly", "Query": "compaction", "Target": "local",
    }  # fmt: skip
    assert rows["streamops.compaction.commit_retries"]["Value"] == 2
    assert rows["streamops.compaction.vacuum_retention_hours"]["Value"] == 192
    assert rows["streamops.compaction.bytes_before"]["Value"] == 4_000_000
    assert "streamops.compaction.vacuum_files_deleted" not in rows  # unknown: not sent as 0
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert {p["name"] for p in lines} == set(rows)


def test_an_ingestion_outage_does_not_fail_the_compaction(
    tmp_path: Path, server: _Ingestion
) -> None:
    server.status = 500
    monitoring = (f"    monitoring: {{metrics: azure-monitor, workspace_id: ws-1, "
                  f"ingestion_endpoint: '{server.url}', dcr_immutable_id: {RULE}}}\n")  # fmt: skip
    b = load(write(tmp_path, edited(("    storage_root: .cache/data\n",
                                     "    storage_root: .cache/data\n" + monitoring))), "local")  # fmt: skip
    path = emit_metrics(b, REPORT, datetime.now(UTC), credential=_Credential())
    assert server.requests and path.exists()  # it tried, and the local lines are written


def test_the_report_says_why_this_retention_and_how_many_conflicts() -> None:
    text = "\n".join(REPORT.lines())
    assert "VACUUM retain 192 hours (reader 'fraud' (max lag 7 days) + margin 24 hours)" in text
    assert "conflicts retried 2" in text
    assert CompactionReport.from_dict(json.loads(REPORT.to_json())) == REPORT
