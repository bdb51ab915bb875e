"""The Databricks job as built from bundle.yml: cluster (runtime, access mode, storage login,
RocksDB state), secrets as platform references only, run_as, notifications and backlog health
rules; and every new setting refused with the YAML path when it is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamops.bundle import load
from streamops.bundle.runtime import TESTED_RUNTIME, TESTED_SPARK, spark_version_of
from streamops.deploy import governance, specs
from streamops.shipping import cluster
from tests.unit.helpers import SHIPPED, edited, only, problems, warnings_of, write

JOB = "claims_hourly"
PROD_SP = "9e7d5c3b-1a2f-4b6c-8d4e-0f1a2b3c4d5e"
DEV_SP = "3f2b6c1e-7a4d-4e2b-9c61-5d8e0a1b2c3d"
DEV_HOST = "streamopsdev.dfs.core.windows.net"
ROCKSDB = {
    "spark.sql.streaming.stateStore.providerClass": (
        "com.databricks.sql.streaming.state.RocksDBStateStoreProvider"
    )
}


def settings(target: str, job: str = JOB) -> dict[str, Any]:
    return specs.build_job_settings(load(SHIPPED, target), job).as_dict()


def test_prod_job_cluster_governance_and_health_exactly() -> None:
    d = settings("prod")
    assert d["job_clusters"] == [{"job_cluster_key": "streamops", "new_cluster": {
        "spark_version": TESTED_RUNTIME,
        "node_type_id": "Standard_E8ds_v5",
        "num_workers": 4,
        "data_security_mode": "SINGLE_USER",
        "single_user_name": PROD_SP,
        "spark_conf": ROCKSDB,  # Unity Catalog external location: no storage keys at all
        "spark_env_vars": {
            "PYSPARK_PYTHON": "/databricks/python3/bin/python3",
            "STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER": "{{secrets/streamops-prod/kafka-user}}",
            "STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_PASSWORD":
                "{{secrets/streamops-prod/kafka-password}}",
            # the pager: the job pages from the cluster
            "STREAMOPS_SECRET_STREAMOPS_PROD_PAGERDUTY_ROUTING_KEY":
                "{{secrets/streamops-prod/pagerduty-routing-key}}",
        },
    }}]  # fmt: skip
    assert spark_version_of(TESTED_RUNTIME) == TESTED_SPARK
    assert d["run_as"] == {"service_principal_name": PROD_SP}
    assert d["email_notifications"] == {
        "on_failure": ["streamops-oncall@example.com"],
        "on_streaming_backlog_exceeded": ["streamops-oncall@example.com"],
    }
    # 100000 records per partition x 4 partitions of `claims`; stalled_after: 15 minutes.
    assert d["health"] == {"rules": [
        {"metric": "STREAMING_BACKLOG_RECORDS", "op": "GREATER_THAN", "value": 400000},
        {"metric": "STREAMING_BACKLOG_SECONDS", "op": "GREATER_THAN", "value": 900},
    ]}  # fmt: skip
    assert d["tags"][governance.ACL_TAG]
    assert governance.access_control_list(load(SHIPPED, "prod")) == [
        {"group_name": "streamops-prod-operators", "permission_level": "CAN_MANAGE_RUN"},
        {"group_name": "data-platform-admins", "permission_level": "CAN_MANAGE"},
        {"group_name": "data-engineers", "permission_level": "CAN_VIEW"},
    ]


def test_dev_cluster_logs_in_to_adls_as_a_service_principal_by_reference() -> None:
    new = settings("dev")["job_clusters"][0]["new_cluster"]
    assert new["spark_conf"] == {**ROCKSDB,
        f"spark.hadoop.fs.azure.account.auth.type.{DEV_HOST}": "OAuth",
        f"spark.hadoop.fs.azure.account.oauth.provider.type.{DEV_HOST}":
            "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
        f"spark.hadoop.fs.azure.account.oauth2.client.id.{DEV_HOST}":
            "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        f"spark.hadoop.fs.azure.account.oauth2.client.secret.{DEV_HOST}":
            "{{secrets/streamops-dev/adls-client-secret}}",
        f"spark.hadoop.fs.azure.account.oauth2.client.endpoint.{DEV_HOST}":
            "https://login.microsoftonline.com/0f1e2d3c-4b5a-4968-8776-655443322110/oauth2/token",
    }  # fmt: skip
    # The driver's Python readers (checkpoint registry) get the same secret through the env.
    assert new["spark_env_vars"]["STREAMOPS_SECRET_STREAMOPS_DEV_ADLS_CLIENT_SECRET"] == (
        "{{secrets/streamops-dev/adls-client-secret}}"
    )
    assert new["single_user_name"] == DEV_SP


def test_catch_up_jobs_have_no_backlog_rules_and_stateless_jobs_no_rocksdb() -> None:
    d = settings("prod", "transactions_backfill")
    assert "health" not in d
    assert d["email_notifications"] == {"on_failure": ["streamops-oncall@example.com"]}
    b = load(SHIPPED, "prod")
    stateless = b.job(JOB).model_copy(update={"steps": []})
    assert cluster.STATE_STORE_PROVIDER not in cluster.spark_conf(b, stateless)


def test_notification_destinations_become_webhooks(tmp_path: Path) -> None:
    # (This test built a USER_ISOLATION cluster too: validation now refuses that access mode.)
    text = edited(
        ("prod:", "        emails: [streamops-oncall@example.com]",
         "        emails: []\n        destinations: [0a1b2c3d-pagerduty]"),
    )  # fmt: skip
    # Edited bundles sit apart from jobs/ and the wheel: their parts are built directly.
    b = load(write(tmp_path, text), "prod")
    new = cluster.cluster_spec(b, b.job(JOB)).as_dict()
    assert new["data_security_mode"] == "SINGLE_USER" and new["single_user_name"] == PROD_SP
    email, hooks = governance.notifications(b, b.job(JOB))
    assert email is None and hooks is not None
    assert hooks.as_dict() == {
        "on_failure": [{"id": "0a1b2c3d-pagerduty"}],
        "on_streaming_backlog_exceeded": [{"id": "0a1b2c3d-pagerduty"}],
    }


def test_no_secret_value_in_the_spec_while_the_job_resolves_the_same_references(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {
        "STREAMOPS_SECRET_STREAMOPS_DEV_KAFKA_USER": "svc-claims-7f3",
        "STREAMOPS_SECRET_STREAMOPS_DEV_KAFKA_PASSWORD": "pw-9c1e-never-shown",
        "STREAMOPS_SECRET_STREAMOPS_DEV_ADLS_CLIENT_SECRET": "sp-secret-4b2a-never-shown",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    bundle = load(SHIPPED, "dev")
    spec = specs.build_job_settings(bundle, JOB).as_dict()
    env = spec["job_clusters"][0]["new_cluster"]["spark_env_vars"]
    # On the cluster Databricks puts each secret into exactly the variable the resolver reads.
    for ref in (bundle.target.kafka.security.username, bundle.target.kafka.security.password):
        assert ref is not None and env[ref.env_var] == ref.text
        assert ref.resolve() == values[ref.env_var]
    # Kafka on Databricks: the shaded login module, from the same resolved settings.
    jaas = bundle.runtime.kafka_for("claims").spark_options()["kafka.sasl.jaas.config"]
    assert jaas.startswith("kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule")
    print(repr(bundle.runtime.kafka_for("claims")), repr(bundle.target))
    text = json.dumps(spec) + capsys.readouterr().out
    for v in values.values():
        assert v not in text


@pytest.mark.parametrize(
    ("old", "new", "path", "says"),
    [
        ("      run_as: 9e7d5c3b-1a2f-4b6c-8d4e-0f1a2b3c4d5e", "      run_as: ops@example.com",
         "targets.prod.databricks.run_as", "not a service principal's application id"),
        ("level: CAN_VIEW}", "level: CAN_READ}",
         "targets.prod.databricks.permissions[2].level", "CAN_READ"),
        ("      storage: {via: unity_catalog}", "      storage: {via: service_principal}",
         "targets.prod.databricks.storage", "needs client_id, tenant_id, client_secret"),
        ("      storage: {via: unity_catalog}",
         "      storage: {via: service_principal, client_id: 5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d,"
         " tenant_id: 0f1e2d3c-4b5a-4968-8776-655443322110, client_secret: '{{env/SP_SECRET}}'}",
         "targets.prod.databricks.storage", "must be a Databricks secret reference"),
        ("      data_security_mode: SINGLE_USER\n      storage: {via: unity_catalog}",
         "      data_security_mode: NO_ISOLATION\n      storage: {via: unity_catalog}",
         "targets.prod.databricks.data_security_mode", "NO_ISOLATION"),
        ("    name: main.claims.claims_hourly\n", "",
         "tables.claims_hourly", "no Unity Catalog `name`"),
        ("    name: main.claims.claims_hourly\n", "    name: claims_hourly\n",
         "tables.claims_hourly.name", "not a three-part"),
        ("      dcr_immutable_id: dcr-0000000000000000000000000000000f\n", "",
         "targets.prod.monitoring", "the default on Databricks targets"),
        # Standard (shared) access mode forbids sparkContext, the JVM gateway and driver state.
        ("      data_security_mode: SINGLE_USER\n      storage: {via: unity_catalog}",
         "      data_security_mode: USER_ISOLATION\n      storage: {via: unity_catalog}",
         "targets.prod.databricks.data_security_mode", "forbids what the streaming runner uses"),
        ("      data_security_mode: SINGLE_USER\n      storage: {via: unity_catalog}",
         "      data_security_mode: DATA_SECURITY_MODE_STANDARD\n      storage: {via: unity_catalog}",
         "targets.prod.databricks.data_security_mode", "standard (shared) access mode"),
        # The job's code needs a place that does not expire: no silent /Workspace default.
        ("      artifact_root: /Volumes/main/streamops/artifacts/streamops-demo\n", "",
         "targets.prod.databricks", "no `artifact_root`"),
    ],
)  # fmt: skip
def test_bad_databricks_settings_are_refused_naming_the_yaml_path(
    tmp_path: Path, old: str, new: str, path: str, says: str
) -> None:
    text = edited(("prod:", old, new)) if old in edited().split("prod:")[1] else edited((old, new))
    p = only(problems(write(tmp_path, text), "prod"), path)
    assert says in p.message, p.render()


def test_metrics_default_to_azure_monitor_on_databricks_only(tmp_path: Path) -> None:
    text = edited(("prod:", "      metrics: azure-monitor\n", ""))
    assert load(write(tmp_path, text), "prod").target.monitoring.metrics == "azure-monitor"
    assert load(SHIPPED, "local").target.monitoring.metrics == "jsonl"


def test_missing_run_as_is_a_warning_and_a_secret_the_cluster_cannot_read_an_error(
    tmp_path: Path,
) -> None:
    text = edited(
        ("prod:", "      run_as: 9e7d5c3b-1a2f-4b6c-8d4e-0f1a2b3c4d5e\n", ""),
        ('        password: "{{secrets/streamops-prod/kafka-password}}"',
         '        password: "{{conn/kafka_prod/password}}"'),
    )  # fmt: skip
    found = problems(write(tmp_path, text), "prod")
    run_as = only(found, "targets.prod.databricks")
    assert run_as.severity == "warning" and "run_as" in run_as.fix
    # an error since issue 19: the job would fail only once on the cluster
    e = only(found, "targets.prod.kafka.security.password")
    assert e.severity == "error" and "on the Databricks cluster" in e.message
    assert "{{secrets/<scope>/<key>}}" in e.fix


def test_standard_access_mode_names_the_fix_for_its_spelling(tmp_path: Path) -> None:
    old = "      data_security_mode: SINGLE_USER\n      storage: {via: unity_catalog}"
    for mode, fix in (("USER_ISOLATION", "SINGLE_USER"),
                      ("DATA_SECURITY_MODE_STANDARD", "DATA_SECURITY_MODE_DEDICATED")):  # fmt: skip
        text = edited(("prod:", old, old.replace("SINGLE_USER", mode)))
        p = only(
            problems(write(tmp_path, text), "prod"), "targets.prod.databricks.data_security_mode"
        )
        assert p.severity == "error" and f"data_security_mode: {fix}" in p.fix, p.render()


def test_a_workspace_artifact_root_is_a_warning_naming_the_30_days(tmp_path: Path) -> None:
    text = edited(
        ("prod:", "      artifact_root: /Volumes/main/streamops/artifacts/streamops-demo",
         "      artifact_root: /Workspace/Shared/streamops-demo/artifacts"),
    )  # fmt: skip
    w = only(warnings_of(write(tmp_path, text), "prod"), "targets.prod.databricks.artifact_root")
    assert "after 30 days" in w.message and "/Volumes/<catalog>/<schema>/<volume>/" in w.fix
    assert not [p for p in warnings_of(SHIPPED, "prod") if "artifact_root" in p.path]


def test_streaming_jobs_are_continuous_and_catch_up_jobs_triggered_with_retries(
    tmp_path: Path,
) -> None:
    d = settings("prod")
    assert d["continuous"] == {"pause_status": "UNPAUSED", "task_retry_mode": "ON_FAILURE"}
    # The Jobs API refuses task retry settings on a continuous job: the platform restarts it.
    assert not {"max_retries", "min_retry_interval_millis", "retry_on_timeout"} & set(d["tasks"][0])
    catch_up = settings("prod", "transactions_backfill")
    assert "continuous" not in catch_up
    assert catch_up["tasks"][0]["max_retries"] == specs.AVAILABLE_NOW_RETRIES
    # Written `continuous: false`: a triggered job, retried without end, retry_interval apart.
    text = edited(("    trigger: {processing_time: 2 minutes}\n",
                   "    trigger: {processing_time: 2 minutes}\n    continuous: false\n"))  # fmt: skip
    b = load(write(tmp_path, text), "prod")
    assert not b.job(JOB).continuous and b.job("telemetry_5min").continuous
    from streamops.shipping.artifacts import Artifacts

    arts = Artifacts(entrypoint="/Volumes/c/s/v/stream.py", bundle_file="/Volumes/c/s/v/b.yml",
                     wheel="/Volumes/c/s/v/streamops-0.1.0-py3-none-any.whl")  # fmt: skip
    triggered = specs.build_job_settings(b, JOB, arts).as_dict()
    assert "continuous" not in triggered
    assert triggered["tasks"][0]["max_retries"] == -1
    assert triggered["tasks"][0]["min_retry_interval_millis"] == 60_000


def test_the_compaction_run_runs_as_the_single_user_of_its_cluster() -> None:
    from streamops.compaction.databricks_job import JobRequest, submit_payload
    from streamops.shipping.artifacts import Artifacts

    b = load(SHIPPED, "prod")
    root = "/Volumes/main/streamops/artifacts/streamops-demo"
    arts = Artifacts(entrypoint=f"{root}/1/stream.py", bundle_file=f"{root}/2/bundle.yml",
                     wheel=f"{root}/3/streamops-0.1.0-py3-none-any.whl",
                     compact_entrypoint=f"{root}/4/compact.py")  # fmt: skip
    body = submit_payload(b, JobRequest("claims_hourly", vacuum=True), arts)
    cluster_spec = body["tasks"][0]["new_cluster"]
    assert cluster_spec["data_security_mode"] == "SINGLE_USER"
    assert body["run_as"] == {"service_principal_name": cluster_spec["single_user_name"]}
    assert cluster_spec["single_user_name"] == PROD_SP
    # The body is one the SDK's runs/submit takes (run_as is a JobRunAs there).
    from databricks.sdk.service import jobs

    assert jobs.JobRunAs.from_dict(body["run_as"]).service_principal_name == PROD_SP
