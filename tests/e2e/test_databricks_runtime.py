"""What a deploy ships is what runs: `streamops deploy` to the local workspace, and the local
Databricks runtime (tests/dbr_runtime, behind tests/fake_databricks.py) runs the uploaded wheel,
entrypoint and bundle.yml from the job spec alone, in an environment holding only what DBR 18
provides plus the task's libraries, away from the checkout.

The target is prod's shape: Databricks mode, Unity Catalog table names, abfss:// storage (mapped
to local folders by the runtime's own Spark conf), a service principal running a single-user
cluster, secrets from a scope the principal may READ, metrics to Azure Monitor (Logs Ingestion,
with a service principal's token from an Entra authority) and pages to PagerDuty. Only Kafka is
the local broker (SASL). Everything the cluster needs arrives through the spec: the run fails if
the wheel lacks a dependency, a secret does not resolve, or the entrypoint imports the checkout.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamops.bundle import load
from streamops.clock import WaitTimeout, poll
from streamops.demo.sample import generate, produce, utc
from streamops.localstack import KafkaEndpoints
from tests.dbr_runtime import LocalRuntime
from tests.fake_databricks import FakeJobsApi
from tests.fake_entra import EntraAuthority, LogsIngestion, self_signed, serving
from tests.stack_fixtures import PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

RUN_AS = "9e7d5c3b-1a2f-4b6c-8d4e-0f1a2b3c4d5e"
TENANT = "0f1e2d3c-4b5a-4968-8776-655443322110"
MONITOR_CLIENT = "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
MONITOR_SECRET = "monitor-sp-secret"
ROUTING_KEY = "R0UTINGKEY-E2E"
ACCOUNT = "e2elake.dfs.core.windows.net"
LAKE = f"abfss://lake@{ACCOUNT}"
CHECKPOINTS = f"abfss://checkpoints@{ACCOUNT}"
SCOPE = "streamops-e2e"
DAG_FILE = PROJECT / "dags" / "streamops_nightly_compaction.py"
INTEGRITY_DAG = PROJECT / "dags" / "streamops_checkpoint_integrity.py"


class _PagerDuty(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PagerDutyHandler)
        self.events: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v2/enqueue"


class _PagerDutyHandler(BaseHTTPRequestHandler):
    server: _PagerDuty

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.events.append(body)
        out = json.dumps({"status": "success", "dedup_key": body.get("dedup_key")}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Workspace:
    api: FakeJobsApi
    bundle_file: Path
    lake: Path  # where abfss://lake@... lands
    ingestion: LogsIngestion
    entra: EntraAuthority
    pagerduty: _PagerDuty
    env: dict[str, str]  # the deployer's environment (Airflow connection, state folder)
    topic: str
    kafka: KafkaEndpoints
    checkpoints: Path  # where abfss://checkpoints@... lands
    cert: Path  # the local TLS servers' certificate


def _bundle_text(
    api: FakeJobsApi, kafka: KafkaEndpoints, ingestion: str, entra: str, pd: str, topic: str
) -> str:
    doc = yaml.safe_load((PROJECT / "bundle.yml").read_text())
    target = copy.deepcopy(doc["targets"]["prod"])
    secret = f"{{{{secrets/{SCOPE}/%s}}}}"
    target["kafka"] = {
        "bootstrap_servers": kafka.sasl,
        "security": {
            "protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": kafka.sasl_mechanism,
            "username": secret % "kafka-user",
            "password": secret % "kafka-password",
        },
    }
    target["storage_root"] = f"{LAKE}/streamops"
    target["checkpoint_root"] = f"{CHECKPOINTS}/streamops"
    target["cluster"].update(workers=1, cores_per_worker=2, memory_gb_per_worker=4)
    target["monitoring"].update(
        ingestion_endpoint=ingestion,
        azure_login={
            "via": "service_principal",
            "tenant_id": TENANT,
            "client_id": MONITOR_CLIENT,
            "client_secret": secret % "monitor-secret",
            "authority_host": entra,
        },
        paging="pagerduty",
        pagerduty_routing_key=secret % "pagerduty-routing-key",
        pagerduty_url=pd,
    )
    target["databricks"].update(
        host=api.url, token="{{env/E2E_DATABRICKS_TOKEN}}", airflow_conn_id="databricks_e2e"
    )
    target["databricks"].pop("permissions", None)
    doc["targets"] = {"local": doc["targets"]["local"], "e2e": target}
    doc["sources"] = {"claims": {**doc["sources"]["claims"], "topic": topic, "partitions": 2}}
    job = doc["jobs"]["claims_hourly"]
    job.update(trigger={"processing_time": "2 seconds"}, max_offsets_per_trigger=300)
    doc["jobs"] = {"claims_hourly": job}
    doc["tables"] = {"claims_hourly": doc["tables"]["claims_hourly"]}
    doc["tables"]["claims_hourly"].pop("readers", None)
    doc["alerts"].update(lag_records_per_partition=200, lag_for="1 second")
    doc["compaction"]["warehouse_ids"] = {}
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def workspace(
    tmp_path_factory: pytest.TempPathFactory, kafka_endpoints: KafkaEndpoints, new_topic: Any
) -> Iterator[Workspace]:
    base = tmp_path_factory.mktemp("e2e-dbr")
    cert, key = self_signed(base)
    lake, checkpoints = base / "lake", base / "checkpoints"
    runtime = LocalRuntime(
        cache_dir=PROJECT / ".cache" / "dbr",
        work_root=base / "clusters",
        mounts={LAKE: lake, CHECKPOINTS: checkpoints},
        # The cluster's trust store knows the local TLS servers (Entra, Logs Ingestion).
        extra_env={"REQUESTS_CA_BUNDLE": str(cert), "SSL_CERT_FILE": str(cert)},
    )
    topic = new_topic(partitions=2, prefix="e2e-claims")
    entra = EntraAuthority(cert, key, TENANT, MONITOR_CLIENT, MONITOR_SECRET)
    pd = _PagerDuty()
    threading.Thread(target=pd.serve_forever, daemon=True).start()
    with (
        FakeJobsApi(runtime=runtime) as api,
        serving(LogsIngestion(cert, key)) as ingestion,
        serving(entra),
    ):
        assert isinstance(ingestion, LogsIngestion)
        text = _bundle_text(api, kafka_endpoints, ingestion.url, entra.url, pd.url, topic)
        (base / "project").mkdir()
        bundle_file = base / "project" / "bundle.yml"
        bundle_file.write_text(text)
        for name, value in (
            ("kafka-user", kafka_endpoints.username),
            ("kafka-password", kafka_endpoints.password),
            ("monitor-secret", MONITOR_SECRET),
            ("pagerduty-routing-key", ROUTING_KEY),
        ):
            api.put_secret(SCOPE, name, value, readers=[RUN_AS])
        env = {
            **os.environ,
            "AIRFLOW_CONN_DATABRICKS_E2E": api.connection_uri(),
            "E2E_DATABRICKS_TOKEN": "dapi-test-token",
            "STREAMOPS_STATE_DIR": str(base / "state"),
        }
        try:
            yield Workspace(
                api,
                bundle_file,
                lake,
                ingestion,
                entra,
                pd,
                env,
                topic,
                kafka_endpoints,
                checkpoints,
                cert,
            )
        finally:
            api.stop_runtime()
            pd.shutdown()


def _deploy(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    cli = str(Path(sys.executable).parent / "streamops")
    cmd = [cli, "deploy", "--bundle", str(ws.bundle_file), "--target", "e2e", *args]
    return subprocess.run(
        cmd, cwd=ws.bundle_file.parent, env=ws.env, capture_output=True, text=True, timeout=300
    )


def _rows(location: Path) -> int:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return int(DeltaTable(str(location)).to_pyarrow_dataset().count_rows())
    except TableNotFoundError:
        return 0


def test_a_deployed_job_runs_from_its_spec_on_the_local_runtime(workspace: Workspace) -> None:
    ws = workspace
    deployed = _deploy(ws, "--job", "claims_hourly")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    (job_id,) = ws.api.state.jobs
    settings = ws.api.state.jobs[job_id]
    assert settings["continuous"]["pause_status"] == "UNPAUSED"
    task = settings["tasks"][0]
    assert task["spark_python_task"]["python_file"].startswith("/Volumes/")
    # A continuous job starts on create: the runtime installs the uploaded wheel and runs it.
    bundle = load(ws.bundle_file, "e2e")
    job = bundle.job("claims_hourly")
    sample = generate(job, partitions=2, start=utc("2026-11-24T06:00:00Z"),
                      span=timedelta(hours=3), n=1500, malformed=12)  # fmt: skip
    conf = {
        "bootstrap.servers": bundle.spec.targets["e2e"].kafka.bootstrap_servers,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": ws.kafka.username,
        "sasl.password": ws.kafka.password,
    }
    produce(conf, ws.topic, sample)

    def local(location: str) -> Path:
        return ws.lake / location.removeprefix(f"{LAKE}/")

    bronze, quarantine = local(bundle.bronze_location(job)), local(bundle.quarantine_location(job))
    gold = local(bundle.table_location(job.sink))

    def runs() -> list[Any]:
        with ws.api.lock:
            return sorted((r for r in ws.api.cluster_runs.values() if r.job_id == job_id),
                          key=lambda r: r.run_id)  # fmt: skip

    def landed() -> bool | None:
        failed = [r for r in runs() if r.result and r.result != "SUCCESS"]
        if failed:  # a continuous job restarts a failed run: the first failure is the finding
            raise AssertionError(f"run {failed[0].run_id} {failed[0].result}: "
                                 f"{failed[0].message}\n{ws.api.run_log(failed[0].run_id)[-6000:]}")  # fmt: skip
        return (_rows(bronze) + _rows(quarantine) >= 1500 and _rows(gold) > 0) or None

    try:
        poll(landed, timeout_s=900, interval_s=3, what="rows in bronze, quarantine and gold")
    except WaitTimeout:
        logs = "\n---\n".join(ws.api.run_log(r.run_id)[-4000:] for r in runs()[-2:])
        raise AssertionError(f"no rows landed; driver logs:\n{logs}") from None
    assert _rows(quarantine) == 12
    assert _rows(bronze) == 1500 - 12
    # Metrics reached Azure Monitor with the service principal's token from the Entra authority.
    poll(lambda: ws.ingestion.requests or None, timeout_s=120, interval_s=2, what="metric uploads")
    assert ws.entra.issued and ws.ingestion.requests[0]["auth"] == f"Bearer {ws.entra.issued[0]}"
    names = {row["Name"] for req in ws.ingestion.requests for row in req["rows"]}
    assert "streamops_kafka_lag_records" in names

    # 750 records per partition at once, read 150 per partition per batch: the lag stays above 200
    # for several batches and pages.
    def lag_page() -> dict[str, Any] | None:
        return next((e for e in list(ws.pagerduty.events)
                     if e.get("event_action") == "trigger" and ":lag" in e["dedup_key"]), None)  # fmt: skip

    page = poll(lag_page, timeout_s=120, interval_s=2, what="a lag page")
    assert page["routing_key"] == ROUTING_KEY
    # The stateful query's shuffle partitions follow the bundle's cluster (1 x 2 cores), not
    # Spark's 200: its checkpoint keeps the count for good.
    gold_checkpoint = bundle.checkpoint_location(job).removeprefix(f"{CHECKPOINTS}/")
    offsets = (ws.checkpoints / gold_checkpoint / "offsets" / "0").read_text()
    assert '"spark.sql.shuffle.partitions":"4"' in offsets

    # The nightly compaction, as Airflow runs it: its task submits jobs/compact.py (runs/submit)
    # and the runtime compacts the same gold table by its Unity Catalog name.
    _pause(ws, job_id)
    result, output = _airflow_dag(ws, DAG_FILE)
    assert result["state"] == "success", output[-6000:]
    with ws.api.lock:
        submitted = [r for r in ws.api.cluster_runs.values() if r.job_id is None]
    assert len(submitted) == 1 and submitted[0].principal == RUN_AS
    assert submitted[0].result == "SUCCESS", ws.api.run_log(submitted[0].run_id)[-6000:]
    from deltalake import DeltaTable

    assert any(c["operation"] == "OPTIMIZE" for c in DeltaTable(str(gold)).history())

    # The checkpoint-integrity DAG: this worker has no login for the checkpoints' storage, so its
    # task has the cluster check them (runs/submit of jobs/check.py) and judges the result.
    result, output = _airflow_dag(ws, INTEGRITY_DAG)
    assert result["state"] == "success", output[-6000:]
    with ws.api.lock:
        checks = [r for r in ws.api.cluster_runs.values() if r.job_id is None][1:]
    assert len(checks) == 1 and checks[0].principal == RUN_AS
    assert checks[0].result == "SUCCESS", ws.api.run_log(checks[0].run_id)[-6000:]
    assert "claims_hourly_bronze" in output and "healthy" in output


def _pause(ws: Workspace, job_id: int) -> None:
    """Pause the continuous job and cancel its run (the compaction then has the two cores)."""
    import requests

    auth = {"Authorization": "Bearer dapi-test-token"}
    body = {"job_id": job_id, "new_settings": {"continuous": {"pause_status": "PAUSED"}}}
    requests.post(f"{ws.api.url}/api/2.2/jobs/update", json=body, headers=auth, timeout=30)
    requests.post(f"{ws.api.url}/api/2.2/jobs/runs/cancel-all", json={"job_id": job_id},
                  headers=auth, timeout=30)  # fmt: skip

    def idle() -> bool | None:
        with ws.api.lock:
            active = [r for r in ws.api.cluster_runs.values()
                      if r.job_id == job_id and not r.ended.is_set()]  # fmt: skip
        return None if active else True

    poll(idle, timeout_s=120, interval_s=1, what="the streaming run to end")


CHILD = r"""
import json, sys
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dr = bag.get_dag(sys.argv[2]).test()
out = {"state": str(dr.state), "tis": sorted([ti.task_id, ti.map_index, str(ti.state)]
                                             for ti in dr.get_task_instances())}
print("RESULT " + json.dumps(out))
"""


def _airflow_dag(ws: Workspace, dag_file: Path) -> tuple[dict[str, Any], str]:
    project = ws.bundle_file.parent
    dags, home = project / "dags", project / "airflow"
    dags.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    (dags / dag_file.name).write_text(dag_file.read_text())
    env = {
        **ws.env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "STREAMOPS_TARGET": "e2e",
        # Airflow's side of the metrics (the compaction report) goes to the same TLS servers.
        "REQUESTS_CA_BUNDLE": str(ws.cert),
    }
    args = [sys.executable, "-c", CHILD, str(dags), dag_file.stem]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, f"the DAG run failed (rc {proc.returncode}):\n{output[-6000:]}"
    return json.loads(line.removeprefix("RESULT ")), output
