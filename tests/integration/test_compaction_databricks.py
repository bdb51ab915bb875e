"""The Databricks engine through the real Airflow Databricks provider hook, against a local HTTP
server speaking the SQL Statement Execution API (`/api/2.0/sql/statements`): exact SQL text,
polling to a terminal state, Delta conflicts retried, failures raised with Databricks' words."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streamops.bundle import Bundle, load
from streamops.clock import FakeClock, RealClock
from streamops.compaction import compact_table
from streamops.compaction.databricks import DatabricksSqlRunner
from streamops.databricks_access import DatabricksAccess, RetryPolicy
from streamops.errors import CompactionError
from tests.airflow_env import configure
from tests.fake_databricks import FakeJobsApi
from tests.unit.helpers import edited, write

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Airflow reads its configuration when first imported (here lazily, by the runner's hook): point
# it at the shared test home, never ~/airflow.
configure()

TOKEN = "dapi-test-not-a-secret"
CONN_ID = "streamops_dbx_test"


class FakeWarehouse:
    """The far side of the wire: records statements; `script` decides each one's fate."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.statements: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        # statement prefix -> list of outcomes, consumed in order ("ok" or an error message)
        self.script: dict[str, list[str]] = {}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                fake.auth.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path != "/api/2.0/sql/statements":
                    return self._send(404, {"error_code": "NOT_FOUND", "message": self.path})
                fake.requests.append(body)
                sid = f"stmt-{len(fake.requests)}"
                sql = body["statement"]
                outcome = "ok"
                for prefix, outcomes in fake.script.items():
                    if sql.startswith(prefix) and outcomes:
                        outcome = outcomes.pop(0)
                fake.statements[sid] = {"sql": sql, "outcome": outcome}
                self._send(200, {"statement_id": sid, "status": {"state": "PENDING"}})

            def do_GET(self) -> None:
                sid = self.path.rsplit("/", 1)[-1]
                st = fake.statements.get(sid)
                if st is None:
                    return self._send(404, {"error_code": "NOT_FOUND", "message": sid})
                fake.polls[sid] = fake.polls.get(sid, 0) + 1
                if fake.polls[sid] < 2:
                    return self._send(200, {"statement_id": sid, "status": {"state": "RUNNING"}})
                if st["outcome"] == "ok":
                    return self._send(200, {"statement_id": sid, "status": {"state": "SUCCEEDED"}})
                return self._send(200, {"statement_id": sid, "status": {
                    "state": "FAILED",
                    "error": {"error_code": "INTERNAL_ERROR", "message": st["outcome"]}}})  # fmt: skip

        return H


@pytest.fixture
def warehouse(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWarehouse]:
    fake = FakeWarehouse()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = {"conn_type": "databricks", "host": "127.0.0.1", "port": server.server_address[1],
            "schema": "http", "password": TOKEN}  # fmt: skip
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


TABLES = """tables:
  events:
    name: main.plant.events
    partition_by: [day]
    time_partition: day
    zorder_by: [device_id]
    target_file_size_mb: 1
    readers:
      - {name: weekly_fraud_scan, max_lag: 8 days}
"""


@pytest.fixture
def bundle(tmp_path: Path, spark: SparkSession) -> Bundle:
    """A local bundle whose events table (written by Spark) has three files in each of 3 days."""
    b = load(write(tmp_path, edited(("tables:\n", TABLES))), "local")
    uri = b.table_location("events")
    for i in range(3):
        rows = [(i * 3 + k, f"d{i * 3 + k}", day)
                for k, day in enumerate(["2026-11-20", "2026-11-21", "2026-11-22"])]  # fmt: skip
        df = spark.createDataFrame(rows, "id long, device_id string, day string").coalesce(1)
        df.write.format("delta").mode("append").partitionBy("day").save(uri)
    return b


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJobsApi]:
    """The Databricks REST fake as the local target's default connection (databricks_default)."""
    with FakeJobsApi() as fake:
        monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", fake.connection_uri())
        yield fake


@pytest.fixture
def uc_disabled(api: FakeJobsApi) -> None:
    """Unity Catalog knows the table, without predictive optimization: the nightly run compacts."""
    api.add_uc_table("main.plant.events", "DISABLE")


def runner() -> DatabricksSqlRunner:
    """The warehouse runner on the fake's connection; its polls and retries never sleep."""
    access = DatabricksAccess(conn_id=CONN_ID, policy=RetryPolicy(clock=FakeClock()))
    return DatabricksSqlRunner(access=access, warehouse_id="wh-123", poll_s=0)


def test_the_plan_runs_as_sql_statements_through_the_provider_hook(
    bundle: Bundle, warehouse: FakeWarehouse, uc_disabled: None
) -> None:
    r = compact_table(
        bundle, "events", zorder=True, vacuum=True, engine="databricks-sql", runner=runner()
    )
    assert r.status == "compacted" and r.engine == "databricks-sql"
    # No ALTER TABLE: a metadata commit would fail the streams' in-flight commits.
    assert [q["statement"] for q in warehouse.requests] == [
        "OPTIMIZE `main`.`plant`.`events` WHERE `day` IN ('2026-11-20', '2026-11-21') "
        "ZORDER BY (`device_id`)",
        "VACUUM `main`.`plant`.`events` RETAIN 216 HOURS",
    ]
    assert all(q["warehouse_id"] == "wh-123" for q in warehouse.requests)
    assert all(a == f"Bearer {TOKEN}" for a in warehouse.auth)
    assert all(n >= 2 for n in warehouse.polls.values())  # waited until a terminal state
    assert r.partitions_skipped and "2026-11-22" in r.partitions_skipped[0]


def test_a_delta_conflict_on_databricks_is_retried(
    bundle: Bundle, warehouse: FakeWarehouse, uc_disabled: None
) -> None:
    warehouse.script["OPTIMIZE"] = ["ConcurrentAppendException: Files were added to partition"]
    r = compact_table(bundle, "events", engine="databricks-sql", runner=runner(), clock=FakeClock())
    optimizes = [q for q in warehouse.requests if q["statement"].startswith("OPTIMIZE")]
    assert len(optimizes) == 2 and r.retries == 1


def test_a_failed_statement_is_an_error_with_databricks_words(
    bundle: Bundle, warehouse: FakeWarehouse, uc_disabled: None
) -> None:
    warehouse.script["OPTIMIZE"] = ["PERMISSION_DENIED: User does not have MODIFY on table"]
    with pytest.raises(CompactionError, match="PERMISSION_DENIED: User does not have MODIFY"):
        compact_table(bundle, "events", engine="databricks-sql", runner=runner())
    assert [q["statement"].split()[0] for q in warehouse.requests] == ["OPTIMIZE"]


# --- predictive optimization (Unity Catalog, through databricks-sdk) ---------------------------


def test_a_table_under_predictive_optimization_is_left_to_it(
    bundle: Bundle, warehouse: FakeWarehouse, api: FakeJobsApi
) -> None:
    api.add_uc_table("main.plant.events", "ENABLE",
                     inherited_from_type="SCHEMA", inherited_from_name="main.plant")  # fmt: skip
    r = compact_table(bundle, "events", zorder=True, vacuum=True, engine="databricks-sql",
                      runner=runner())  # fmt: skip
    assert r.status == "managed" and warehouse.requests == []  # neither OPTIMIZE nor VACUUM
    assert r.message.startswith("managed by predictive optimization")
    assert "inherited from schema main.plant" in r.message
    assert r.before.files == r.after.files == 9
    uc = [c for c in api.state.calls if "unity-catalog" in c.path]
    assert [(c.method, c.path) for c in uc] == [
        ("GET", "/api/2.1/unity-catalog/tables/main.plant.events")
    ]

    # Disabled (or inherited as disabled): the nightly run compacts it.
    api.add_uc_table("main.plant.events", "DISABLE")
    r = compact_table(bundle, "events", engine="databricks-sql", runner=runner())
    assert r.status == "compacted" and warehouse.requests[0]["statement"].startswith("OPTIMIZE")


def test_the_bundle_switch_forces_compaction_and_an_unknown_table_is_named(
    tmp_path: Path, bundle: Bundle, warehouse: FakeWarehouse, api: FakeJobsApi
) -> None:
    with pytest.raises(CompactionError, match=r"tables.events.name: Unity Catalog has no table"):
        compact_table(bundle, "events", engine="databricks-sql", runner=runner())
    api.add_uc_table("main.plant.events", "ENABLE")
    forced = load(write(bundle.path.parent, bundle.path.read_text().replace(
        "    name: main.plant.events\n",
        "    name: main.plant.events\n    predictive_optimization: compact\n"), "forced.yml"), "local")  # fmt: skip
    calls = len(api.state.calls)
    r = compact_table(forced, "events", engine="databricks-sql", runner=runner())
    assert r.status == "compacted" and len(api.state.calls) == calls  # not even asked


# --- the job engine: a one-time run of jobs/compact.py --------------------------------------------


class _BriefPolls(RealClock):
    """Real time, but the run is polled every 0.1 s rather than every 15 s."""

    def sleep(self, seconds: float) -> None:
        super().sleep(min(seconds, 0.1))


def test_the_job_engine_tags_the_optimize_commit_on_the_cluster(
    tmp_path: Path, bundle: Bundle, spark: SparkSession, api: FakeJobsApi
) -> None:
    """Airflow submits jobs/compact.py; the 'cluster' (the fake runs the real entrypoint on the
    local Spark session) compacts with the marker in the OPTIMIZE commit; the report comes back
    through runs/get-output."""
    from deltalake import DeltaTable

    from streamops.compaction.cluster import cluster_main
    from streamops.compaction.databricks_job import JobRequest
    from streamops.compaction.log import Marker

    text = bundle.path.read_text().replace(
        "cluster: {workers: 1, cores_per_worker: 2, memory_gb_per_worker: 4}",
        "cluster: {workers: 1, cores_per_worker: 2, memory_gb_per_worker: 4, "
        "spark_version: 18.0.x-scala2.13, node_type_id: Standard_D8ds_v5}",
    )
    # Addressed by path: local Spark has no Unity Catalog to resolve main.plant.events.
    text = text.replace("    name: main.plant.events\n", "")
    b = load(write(bundle.path.parent, text, "job.yml"), "local")

    def on_cluster(body: dict[str, Any]) -> tuple[int, str]:
        params = body["tasks"][0]["spark_python_task"]["parameters"]
        args = dict(zip(params[::2], params[1::2], strict=False))
        assert args["--bundle"].endswith("/bundle.yml") and args["--table"] == "events"
        lines: list[str] = []
        req = JobRequest(args["--table"], zorder="--zorder" in params, vacuum="--vacuum" in params)
        code = cluster_main(str(b.path), args["--target"], req, spark=spark, out=lines.append)
        return code, "\n".join(lines)

    api.on_submit = on_cluster
    r = compact_table(
        b, "events", zorder=True, vacuum=True, engine="databricks-job", clock=_BriefPolls()
    )
    assert r.status == "compacted" and r.engine == "databricks-job"
    assert r.partitions_touched == ("day=2026-11-20", "day=2026-11-21") and r.zorder_by
    assert r.vacuum_retention_hours == 216 and "weekly_fraud_scan" in (r.vacuum_reason or "")
    (submitted,) = api.submitted.values()
    task = submitted.body["tasks"][0]
    # The run starts the uploaded code: jobs/compact.py, bundle.yml and the wheel, each at its
    # content-addressed path, uploaded before the run was submitted.
    sent = {path.rsplit("/", 1)[-1]: path for path in api.workspace.files}
    assert {"compact.py", "bundle.yml"} <= set(sent) and any(n.endswith(".whl") for n in sent)
    assert task["spark_python_task"]["python_file"] == sent["compact.py"]
    assert task["spark_python_task"]["parameters"][1] == sent["bundle.yml"]
    assert task["libraries"][0]["whl"] in sent.values()
    assert task["new_cluster"]["spark_version"] == "18.0.x-scala2.13"
    assert task["new_cluster"]["data_security_mode"] == "SINGLE_USER"
    history = DeltaTable(b.table_location("events")).history()
    optimize = next(c for c in history if c["operation"] == "OPTIMIZE")
    marker = Marker.from_commit_info(optimize, ("day",))
    assert marker is not None and marker.read_version == r.read_version
    # The marker makes the next night plan only what changed since: nothing.
    assert compact_table(b, "events", engine="databricks-job").status == "nothing_to_do"
    assert len(api.submitted) == 1 and len(api.workspace.files) == len(sent)
