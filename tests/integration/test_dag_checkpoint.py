"""The checkpoint integrity DAG under Airflow's own `dag.test()`, against real checkpoints made
by one real job run: a healthy job is checked and backed up, a broken one pages once and fails,
a job that never ran is reported missing without failing.

The checkpoints come from the one data path: Spark's Kafka source (bronze, Kafka offsets) and the
bronze table read as a Delta stream (gold, Delta source offsets and window state). Airflow runs in
a child process (see test_dag_compaction); the DAG file is copied next to a test bundle.yml whose
local target's 'embedded' broker is the session's (over its SASL listener).
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from pyspark.sql import SparkSession

from streamops.bundle import load
from streamops.checkpoint import backup as bk
from streamops.checkpoint.checks import check
from streamops.demo.sample import generate, produce, utc
from streamops.localstack import LocalStack, local_broker
from streamops.runner.job import run_job
from tests.integration.helpers import kafka_conf
from tests.integration.test_dag_compaction import run_child
from tests.unit.helpers import edited, write

PROJECT = Path(__file__).resolve().parents[2]
DAG_FILE = PROJECT / "dags" / "streamops_checkpoint_integrity.py"
DAG_ID = "streamops_checkpoint_integrity"
HEALTHY, BROKEN, NEVER_RAN = "claims_hourly", "telemetry_5min", "transactions_backfill"
pytestmark = pytest.mark.slow


def test_dag_imports(tmp_path: Path) -> None:
    result, output = run_child(tmp_path / "airflow", PROJECT / "dags")
    assert result["import_errors"] == {}, output[-3000:]
    assert DAG_ID in result["dags"]


@pytest.fixture
def project(tmp_path: Path, spark: SparkSession, local_stack: LocalStack) -> Path:
    """bundle.yml on the session broker, the DAG, and checkpoints from one real run."""
    topic = f"claims-dagck-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": local_stack.broker_bootstrap()})
    admin.create_topics([NewTopic(topic, num_partitions=2)])[topic].result(timeout=30)
    write(tmp_path, edited(("topic: insurance.claims", f"topic: {topic}")))
    (tmp_path / "dags").mkdir()
    shutil.copy(DAG_FILE, tmp_path / "dags" / DAG_FILE.name)
    bundle = load(tmp_path / "bundle.yml", "local", local_broker=local_broker)
    sample = generate(bundle.job(HEALTHY), partitions=2, start=utc("2026-11-24T06:00:00Z"),
                      span=timedelta(hours=1), n=200, malformed=3, seed=11)  # fmt: skip
    produce(kafka_conf(bundle), topic, sample)
    run = run_job(bundle, HEALTHY, spark, available_now=True, timeout_s=300)
    assert run.batches and run.bronze_batches
    return tmp_path


def test_integrity_dag_pages_for_the_broken_checkpoint_and_backs_up_the_healthy_one(
    project: Path,
) -> None:
    bundle = load(project / "bundle.yml", "local")
    healthy, broken = bundle.job(HEALTHY), bundle.job(BROKEN)
    # The broken job: a copy of the real checkpoints whose gold one lost its metadata (CK101).
    shutil.copytree(bundle.checkpoint_location(healthy), bundle.checkpoint_location(broken))
    shutil.copytree(
        bundle.bronze_checkpoint_location(healthy), bundle.bronze_checkpoint_location(broken)
    )
    Path(bundle.checkpoint_location(broken), "metadata").unlink()
    assert not Path(bundle.checkpoint_location(bundle.job(NEVER_RAN))).exists()

    result, output = run_child(project / "airflow", project / "dags", DAG_ID)

    jobs = list(bundle.jobs)
    states = {jobs[m]: s for task, m, s, _ in result["tis"] if task == "integrity"}
    assert states == {HEALTHY: "success", BROKEN: "failed", NEVER_RAN: "success"}, output[-5000:]
    assert result["state"] == "failed"
    assert "CK101" in output and "missing" in output

    pages = (project / ".cache/pages.log").read_text(encoding="utf-8").splitlines()
    assert len(pages) == 1, pages
    page = json.loads(pages[0])
    assert page["dedup_key"] == f"streamops/local/checkpoint/{BROKEN}"
    assert "CK101" in page["summary"]
    assert page["details"]["broker"].startswith("ran against")  # the session broker was reached
    by_kind = {q["kind"]: q for q in page["details"]["queries"]}
    assert by_kind["gold"]["status"] == "problems" and by_kind["bronze"]["status"] == "healthy"
    # Bronze's Kafka offsets went to the broker; gold's Delta source offsets are no Kafka topic.
    assert "broker" in by_kind["bronze"]["report"]["checks_run"]
    assert "reads no Kafka topic" in by_kind["gold"]["report"]["checks_skipped"]["broker"]

    root = bk.backup_root(bundle)
    for name in (healthy.query_name, healthy.bronze_query_name):
        made = bk.list_backups(root, name)
        assert len(made) == 1, (name, made)
        assert check(made[0]).exit_code == 0
    assert bk.list_backups(root, broken.query_name) == []  # a broken checkpoint is not backed up
