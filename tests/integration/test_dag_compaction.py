"""The nightly compaction DAG under Airflow's own `dag.test()`, against real local Delta tables.

Airflow runs in a child process with AIRFLOW_HOME (SQLite) in a temporary folder, so its
configuration is set before airflow is imported and nothing leaks into other tests. The DAG file
is copied next to a test bundle.yml (it loads `../bundle.yml` relative to itself, as in the repo).
The tables are written with Spark here; the child compacts them through a Spark session of its
own, started by the task (the local target's engine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable

from streamops.bundle import load
from tests.unit.helpers import edited, write

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROJECT = Path(__file__).resolve().parents[2]
DAG_FILE = PROJECT / "dags" / "streamops_nightly_compaction.py"

TABLES = """tables:
  events:
    partition_by: [day]
    time_partition: day
    zorder_by: [device_id]
    target_file_size_mb: 1
  broken:
    location: broken_table
"""

# Runs in the child: migrate the SQLite metadata DB, parse the DAG folder, run one DAG run.
CHILD = r"""
import json, sys
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids)}
if len(sys.argv) > 2:
    dag = bag.get_dag(sys.argv[2])
    dr = dag.test()
    out["state"] = str(dr.state)
    out["tis"] = sorted([ti.task_id, ti.map_index, str(ti.state), ti.try_number]
                        for ti in dr.get_task_instances())
print("RESULT " + json.dumps(out))
"""


def airflow_env(home: Path, dags: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        # Airflow puts the plugins folder on sys.path: DAGs import the project's operators there.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "STREAMOPS_TARGET": "local",
    })  # fmt: skip
    return env


def run_child(home: Path, dags: Path, dag_id: str | None = None) -> tuple[dict, str]:
    home.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-c", CHILD, str(dags), *([dag_id] if dag_id else [])]
    proc = subprocess.run(
        args, env=airflow_env(home, dags), capture_output=True, text=True, timeout=480
    )
    output = proc.stdout + proc.stderr
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, f"child failed (rc {proc.returncode}):\n{output[-6000:]}"
    return json.loads(line[len("RESULT ") :]), output


def test_every_dag_file_imports(tmp_path: Path) -> None:
    result, output = run_child(tmp_path / "airflow", PROJECT / "dags")
    assert result["import_errors"] == {}, output[-3000:]
    assert "streamops_nightly_compaction" in result["dags"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: bundle.yml with a time-partitioned and a broken table, and the DAG."""
    text = edited(
        ("tables:\n", TABLES),
        ("  task_retries: 2", "  task_retry_delay: 1 second\n  task_retries: 1"),
    )
    write(tmp_path, text)
    (tmp_path / "dags").mkdir()
    shutil.copy(DAG_FILE, tmp_path / "dags" / DAG_FILE.name)
    return tmp_path


def test_nightly_dag_compacts_real_tables_and_pages_for_the_broken_one(
    project: Path, spark: SparkSession
) -> None:
    bundle = load(project / "bundle.yml", "local")
    events = bundle.table_location("events")
    # 40 small files: 30 of two rows each in the older day, 10 in the newest (left alone).
    for day, ids, files in (("2026-11-20", range(60), 30), ("2026-11-21", range(60, 80), 10)):
        rows = [(i, f"d{i // 2 % 5}", day) for i in ids]
        df = spark.createDataFrame(rows, "id long, device_id string, day string")
        df.repartition(files).write.format("delta").mode("append").partitionBy("day").save(events)
    assert len(DeltaTable(events).file_uris()) == 40
    # A table whose log is corrupt: its task fails on every attempt, the others must not care.
    broken = Path(bundle.table_location("broken")) / "_delta_log"
    broken.mkdir(parents=True)
    (broken / "00000000000000000000.json").write_text("{not json\n")

    result, output = run_child(
        project / "airflow", project / "dags", "streamops_nightly_compaction"
    )

    tables = list(bundle.spec.tables)
    states = {tables[m]: (s, tries) for task, m, s, tries in result["tis"] if task == "compact"}
    assert states["broken"] == ("failed", 2), output[-4000:]  # one retry, then failed
    assert all(s == "success" for t, (s, _) in states.items() if t != "broken"), states
    summary = [s for task, _, s, _ in result["tis"] if task == "summary"]
    assert summary == ["failed"] and result["state"] == "failed"  # ran after all, names broken

    report = json.loads(
        (project / ".cache/reports/compaction/events.latest.json").read_text(encoding="utf-8")
    )
    assert report["status"] == "compacted"
    assert report["before"]["files"] == 40 and report["after"]["files"] == 11  # fewer...
    assert report["after"]["bytes"] / report["after"]["files"] > (
        report["before"]["bytes"] / report["before"]["files"]
    )  # ...and larger
    assert report["partitions_touched"] == ["day=2026-11-20"]
    assert "files  40 -> 11" in output  # the report is in the task log
    assert sorted(DeltaTable(events).to_pyarrow_table().column("id").to_pylist()) == list(range(80))
    pages = (project / ".cache/pages.log").read_text(encoding="utf-8").splitlines()
    assert len(pages) == 1
    page = json.loads(pages[0])
    assert page["dedup_key"] == "streamops/local/compaction/broken"
    assert "broken" in page["summary"] and page["details"]["attempts"] == 2
    metrics = (project / ".cache/metrics/compaction.jsonl").read_text(encoding="utf-8")
    assert "streamops.compaction.files_after" in metrics
