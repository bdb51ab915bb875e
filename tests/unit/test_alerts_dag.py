"""The streamops_alerts DAG: every 5 minutes; a dead job pages once through dag.test()."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.airflow_env import configure

HOME = configure()
ROOT = Path(__file__).resolve().parents[2]

from tests.unit.test_deploy_dag import airflow_db  # noqa: E402, F401


def test_watchdog_dag_pages_a_dead_job(
    airflow_db: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    # A worker names its target: a running task without STREAMOPS_TARGET fails.
    monkeypatch.setenv("STREAMOPS_TARGET", "local")

    from streamops.bundle import load
    from streamops.monitoring import metrics as m
    from streamops.monitoring.exporters import JsonlSink
    from streamops.pipeline.progress import BatchProgress

    bag = DagBag(dag_folder=str(ROOT / "dags" / "streamops_alerts.py"))
    assert not bag.import_errors
    dag = bag.dags["streamops_alerts"]
    (tmp_path / "bundle.yml").write_text("")
    b = dataclasses.replace(load(ROOT / "bundle.yml", "local"), path=tmp_path / "bundle.yml")
    last = datetime.now(UTC) - timedelta(hours=1)  # telemetry_5min runs every 30 s: dead for 1 h
    bp = BatchProgress("telemetry_5min", 7, last.isoformat(), 10, 0, 0, 500, 0, 0, None)
    JsonlSink(b.cache_dir / "metrics")(
        m.batch_points(bp, job="telemetry_5min", target="local", trigger_seconds=30)
    )
    dag.task_dict["watchdog"].python_callable.__globals__["BUNDLE"] = b
    for _ in range(2):
        dr = dag.test()
        assert dr.state == "success"
    pages = [json.loads(x) for x in (b.cache_dir / "pages.log").read_text().splitlines()]
    assert [p["dedup_key"] for p in pages] == [
        "streamops:local:stalled:telemetry_5min:telemetry_5min"
    ]
    assert pages[0]["severity"] == "critical" and pages[0]["details"]["runbook"]
