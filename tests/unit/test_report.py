"""`streamops report`: a small JSON-lines file -> a PNG with three panels and a self-contained
HTML page under <cache_dir>/reports/<job>/."""

from __future__ import annotations

import base64
import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamops.bundle import Bundle, load
from streamops.errors import StreamopsError
from streamops.monitoring import metrics as m
from streamops.monitoring.exporters import JsonlSink
from streamops.monitoring.metrics_report import render_report
from streamops.pipeline.progress import BatchProgress
from tests.unit.helpers import PROJECT

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bundle(tmp_path: Path) -> Bundle:
    (tmp_path / "bundle.yml").write_text("")  # cache_dir = tmp_path/.cache
    return dataclasses.replace(load(PROJECT / "bundle.yml", "local"), path=tmp_path / "bundle.yml")


def _write_metrics(b: Bundle, job: str) -> int:
    q = b.job(job).query_name
    sink = JsonlSink(b.cache_dir / "metrics")
    prev, n = None, 0
    for i in range(6):
        at = T0 + timedelta(seconds=30 * i)
        bp = BatchProgress(
            query_name=q, batch_id=i, timestamp=at.isoformat().replace("+00:00", "Z"),
            input_rows=200, malformed_rows=0, dropped_by_watermark=0, duration_ms=800 + 100 * i,
            state_rows=10 * i, state_memory_bytes=1_000_000 * i, watermark=None,
            end_offsets={"t": {"0": 200 * i, "1": 100 * i}},
            latest_offsets={"t": {"0": 1200, "1": 600}},
        )  # fmt: skip
        pts = m.batch_points(bp, job=job, target="local", trigger_seconds=30, previous_ts=prev)
        sink(pts)
        prev, n = bp.timestamp, n + len(pts)
    # another job's points in the same folder are not this job's report
    sink([{"ts": T0.isoformat(), "name": m.LAG, "value": 1, "unit": "records", "job": "other",
           "query": q, "target": "local", "batch_id": 0}])  # fmt: skip
    (b.cache_dir / "metrics" / f"{q}.jsonl").open("a").write("not json\n")
    return n


def test_report_png_and_html(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    job = next(iter(b.jobs))
    n = _write_metrics(b, job)

    r = render_report(b, job)

    assert r.points == n
    assert r.png == b.cache_dir / "reports" / job / "report.png"
    data = r.png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    page = r.html.read_text()
    assert job in page
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found and base64.b64decode(found.group(1)) == data
    # the table of last values: lag of partition 0 after batch 5 is 1200 - 1000
    assert re.search(r"streamops_kafka_lag_records</td><td>[^<]+</td><td>topic=t partition=0"
                     r"</td><td class=n>200</td>", page)  # fmt: skip


def test_report_command_prints_paths(tmp_path: Path) -> None:
    from streamops.cli import app

    b = _bundle(tmp_path)
    job = next(iter(b.jobs))
    _write_metrics(b, job)
    bundle_yml = tmp_path / "bundle.yml"
    bundle_yml.write_text((PROJECT / "bundle.yml").read_text())
    res = CliRunner().invoke(app, ["report", "--job", job, "--bundle", str(bundle_yml)])
    assert res.exit_code == 0, res.output
    assert str(b.cache_dir / "reports" / job / "report.html") in res.output
    assert (b.cache_dir / "reports" / job / "report.png").stat().st_size > 20_000


def test_report_without_metrics_says_so(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    job = next(iter(b.jobs))
    with pytest.raises(StreamopsError, match="no metrics"):
        render_report(b, job)
