"""The runtime context: one place resolves Kafka settings per source (Spark and librdkafka forms)
and storage logins per location (a rendering per library), secrets stay references until a
client asks, no repr shows them, and the local broker is looked up only through what the caller
hands in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamops.bundle import ENV_BOOTSTRAP, load
from streamops.bundle.kafka_settings import GeneratedSecret, KafkaClientSettings
from streamops.bundle.models import NO_DATABRICKS
from streamops.bundle.storage import StorageLogin, login_from_options
from streamops.errors import BundleError, LocalStackError, StorageAccessError
from tests.unit.helpers import edited, write

PROJECT = Path(__file__).resolve().parents[2]
ABFSS = "abfss://c@acct.dfs.core.windows.net/x"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_BOOTSTRAP, "STREAMOPS_STORAGE_OPTIONS", "STREAMOPS_LOCAL_STACK_DIR"):
        monkeypatch.delenv(var, raising=False)


@dataclasses.dataclass(frozen=True)
class FakeBroker:
    """What the local stack reports for its broker (streamops.localstack.KafkaEndpoints)."""

    plaintext: str = "127.0.0.1:1001"
    sasl: str = "127.0.0.1:1002"
    sasl_mechanism: str = "PLAIN"
    username: str = "local-user"
    password: str = "local-pw"


class Lookup:
    """A local-broker lookup that records each call (cache dir, state dir)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, Path | None]] = []

    def __call__(self, cache_dir: Path, state_dir: Path | None) -> FakeBroker:
        self.calls.append((cache_dir, state_dir))
        return FakeBroker()


def test_prod_kafka_settings_in_both_forms_with_the_shaded_login_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER", "svc-claims")
    monkeypatch.setenv("STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_PASSWORD", "s3cr3t-pw")
    kafka = load(PROJECT / "bundle.yml", "prod").runtime.kafka_for("claims")

    spark = kafka.spark_options()
    assert spark["kafka.bootstrap.servers"].startswith("kafka-prod-1.internal:9093")
    assert spark["kafka.security.protocol"] == "SASL_SSL"
    assert spark["kafka.sasl.mechanism"] == "PLAIN"
    # Databricks' Kafka client is shaded: the unshaded class would not load there.
    assert spark["kafka.sasl.jaas.config"] == (
        "kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="svc-claims" password="s3cr3t-pw";'
    )
    assert kafka.librdkafka() == {
        "bootstrap.servers": spark["kafka.bootstrap.servers"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc-claims",
        "sasl.password": "s3cr3t-pw",
    }
    assert "s3cr3t-pw" not in repr(kafka) and "svc-claims" not in repr(kafka)


def test_secrets_are_resolved_only_when_a_client_asks() -> None:
    # Loading and building the context needs no secret; asking for client settings does.
    kafka = load(PROJECT / "bundle.yml", "prod").runtime.kafka_for("claims")
    with pytest.raises(Exception, match="STREAMOPS_SECRET_STREAMOPS_PROD_KAFKA_USER"):
        kafka.librdkafka()


def test_local_scram_jaas_is_unshaded_and_escaped() -> None:
    k = KafkaClientSettings(
        "h:1", "SASL_PLAINTEXT", "SCRAM-SHA-512", GeneratedSecret("u"), GeneratedSecret('p"\\q')
    )
    assert k.spark_options()["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="u" password="p\\"\\\\q";'
    )
    assert repr(GeneratedSecret("p")) == "***"


def test_embedded_without_a_running_broker_names_the_fix(tmp_path: Path) -> None:
    from streamops.localstack import local_broker

    bundle = dataclasses.replace(
        load(PROJECT / "bundle.yml", "local", local_broker=local_broker),
        local_stack_dir=tmp_path / "no-stack",
    )
    ctx = bundle.runtime  # building the context needs no broker
    assert ctx.storage(str(tmp_path)).adlfs() == {}
    with pytest.raises(LocalStackError, match="embedded") as info:
        ctx.kafka_for("claims")
    assert "streamops local up" in str(info.value)


def test_embedded_is_looked_up_lazily_once_per_source_through_the_callers_lookup(
    tmp_path: Path,
) -> None:
    lookup = Lookup()
    bundle = load(PROJECT / "bundle.yml", "local", local_broker=lookup)
    assert lookup.calls == []  # loading (a DAG parse, validate) never asks
    kafka = bundle.runtime.kafka_for("claims")
    bundle.runtime.kafka_for("claims")
    assert lookup.calls == [(bundle.cache_dir, None)]
    assert kafka.librdkafka() == {
        "bootstrap.servers": "127.0.0.1:1002",  # the SASL listener: the target's protocol
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "local-user",
        "sasl.password": "local-pw",
    }
    stack = tmp_path / "stack"
    dataclasses.replace(bundle, local_stack_dir=stack).runtime.kafka_for("telemetry")
    assert lookup.calls[-1] == (bundle.cache_dir, stack)


def test_embedded_without_a_lookup_says_how_to_hand_one_in() -> None:
    bundle = load(PROJECT / "bundle.yml", "local")
    with pytest.raises(LocalStackError, match="embedded") as info:
        bundle.runtime.kafka_for("claims")
    assert "local_broker=streamops.localstack.local_broker" in str(info.value)
    assert (
        bundle.with_local_broker(Lookup()).runtime.kafka_for("claims").topic == "insurance.claims"
    )


def test_bootstrap_override_on_local_is_a_plaintext_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, "localhost:9092")
    kafka = load(PROJECT / "bundle.yml", "local").runtime.kafka_for("claims")
    assert kafka.librdkafka() == {"bootstrap.servers": "localhost:9092"}


# --- per source: a join's two sources, each with its own brokers and login -----------------

TWO_LISTENERS = (
    "  telemetry:\n    topic: plant.telemetry\n",
    "  telemetry:\n    topic: plant.telemetry\n    security: {protocol: PLAINTEXT}\n",
)
OTHER_CLUSTER = (
    "  transactions:\n    topic: payments.transactions\n",
    "  transactions:\n    topic: payments.transactions\n"
    "    bootstrap_servers: kafka-payments.internal:9093\n"
    "    starting_offsets: latest\n"
    "    fail_on_data_loss: false\n"
    "    security:\n      protocol: SASL_SSL\n      sasl_mechanism: SCRAM-SHA-512\n"
    "      username: '{{secrets/payments/kafka-user}}'\n"
    "      password: '{{secrets/payments/kafka-password}}'\n",
)


def test_each_source_is_read_with_its_own_listener_and_login(tmp_path: Path) -> None:
    # Two sources on two listeners of the local broker: the target's SASL one, a PLAINTEXT one.
    bundle = load(write(tmp_path, edited(TWO_LISTENERS)), "local", local_broker=Lookup())
    claims = bundle.source_options("claims", "claims_hourly_bronze")
    telemetry = bundle.source_options("telemetry", "claims_hourly", "latest")
    assert claims["kafka.bootstrap.servers"] == "127.0.0.1:1002"
    assert claims["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert telemetry == {
        "kafka.bootstrap.servers": "127.0.0.1:1001",
        "subscribe": "plant.telemetry",
        "startingOffsets": "latest",
        "failOnDataLoss": "true",
        "groupIdPrefix": "spark-claims_hourly",
    }


def test_a_source_on_another_cluster_has_its_brokers_login_and_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMOPS_SECRET_PAYMENTS_KAFKA_USER", "pay-user")
    monkeypatch.setenv("STREAMOPS_SECRET_PAYMENTS_KAFKA_PASSWORD", "pay-pw")
    bundle = load(write(tmp_path, edited(OTHER_CLUSTER)), "prod")
    opts = bundle.source_options("transactions", "claims_hourly")
    assert opts["kafka.bootstrap.servers"] == "kafka-payments.internal:9093"
    assert opts["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert opts["kafka.sasl.jaas.config"] == (
        "kafkashaded.org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="pay-user" password="pay-pw";'
    )
    assert (opts["subscribe"], opts["startingOffsets"], opts["failOnDataLoss"]) == (
        "payments.transactions",
        "latest",
        "false",
    )
    assert opts["groupIdPrefix"] == "spark-claims_hourly"
    # On the job cluster the source's secrets come from its scope, as the target's do.
    from streamops.shipping.cluster import secret_env_vars

    assert secret_env_vars(bundle)["STREAMOPS_SECRET_PAYMENTS_KAFKA_USER"] == (
        "{{secrets/payments/kafka-user}}"
    )
    # The other sources keep the target's brokers and login.
    claims = bundle.runtime.kafka_for("claims")
    assert claims.bootstrap_servers.startswith("kafka-prod-1.internal:9093")
    assert claims.mechanism == "PLAIN" and claims.topic == "insurance.claims"


# --- storage: one login per location, one rendering per library -----------------------------


def test_a_local_folder_needs_no_options_and_a_remote_one_without_login_is_unreachable() -> None:
    ctx = load(PROJECT / "bundle.yml", "prod").runtime
    local = ctx.storage("/local/path")
    assert (local.kind, local.reachable, local.deltalake(), local.adlfs()) == (
        "local",
        True,
        {},
        {},
    )
    remote = ctx.storage(ABFSS)
    assert (remote.kind, remote.reachable, remote.deltalake(), remote.adlfs()) == (
        "unknown",
        False,
        {},
        {},
    )
    assert ctx.storage(ABFSS) is remote  # resolved once per location


def test_the_environment_login_wins_for_remote_paths_in_each_librarys_terms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", '{"account_name": "acct", "anon": "false"}')
    ctx = load(PROJECT / "bundle.yml", "prod").runtime
    login = ctx.storage(ABFSS)
    assert login.kind == "cluster_identity"
    assert login.adlfs() == {"account_name": "acct", "anon": False}
    assert login.deltalake() == {"account_name": "acct"}  # delta-rs refuses a bool
    assert ctx.storage("/local/path").adlfs() == {}


def test_an_account_key_with_an_emulator_endpoint_renders_for_both_libraries() -> None:
    endpoint = "http://127.0.0.1:10000/devstoreaccount1"
    login = login_from_options(
        {"account_name": "devstoreaccount1", "account_key": "a2V5", "endpoint": endpoint}
    )
    assert login.kind == "account_key"
    assert login.deltalake() == {
        "account_name": "devstoreaccount1",
        "account_key": "a2V5",
        "endpoint": endpoint,
        "allow_http": "true",
    }
    assert login.adlfs() == {
        "account_name": "devstoreaccount1",
        "account_key": "a2V5",
        "connection_string": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey=a2V5;BlobEndpoint={endpoint};",
    }
    assert "a2V5" not in repr(login)
    # adlfs's form (a connection string) gives delta-rs the same account, key and endpoint.
    same = login_from_options({"connection_string": login.adlfs()["connection_string"]})
    assert same.deltalake() == login.deltalake()


def test_a_sas_token_and_plain_fsspec_options_pass_through() -> None:
    sas = login_from_options({"account_name": "acct", "sas_token": "sv=2024&sig=abc"})
    assert sas.kind == "sas"
    assert (
        sas.deltalake() == sas.adlfs() == {"account_name": "acct", "sas_token": "sv=2024&sig=abc"}
    )
    plain = login_from_options({"skip_instance_cache": "true"})
    assert (plain.kind, plain.adlfs(), plain.deltalake()) == (
        "options",
        {"skip_instance_cache": "true"},
        {"skip_instance_cache": "true"},
    )


def test_a_malformed_environment_login_names_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for raw, what in (("{", "not valid JSON"), ('{"anon": false}', "JSON object of strings")):
        monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", raw)
        with pytest.raises(BundleError, match=what) as info:
            load(PROJECT / "bundle.yml", "prod").runtime.storage(ABFSS)
        assert "$STREAMOPS_STORAGE_OPTIONS" in str(info.value)


def test_on_the_cluster_each_library_logs_in_as_the_cluster_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 19: on the cluster every reader goes through the cluster's Spark session (the one
    # login that works there), whatever databricks.storage says; delta-rs is not used there.
    prod = dataclasses.replace(load(PROJECT / "bundle.yml", "prod"), on_cluster=True)
    dev = dataclasses.replace(load(PROJECT / "bundle.yml", "dev"), on_cluster=True)
    for bundle in (prod, dev):
        login = bundle.runtime.storage(bundle.checkpoint_root)
        assert login.kind == "cluster_spark"
        assert login.adlfs() == {"protocol": "streamops-spark"}
        with pytest.raises(StorageAccessError, match="delta-spark"):
            login.deltalake()
    # $STREAMOPS_STORAGE_OPTIONS still wins where it is set.
    monkeypatch.setenv("STREAMOPS_STORAGE_OPTIONS", '{"account_name": "acct", "account_key": "k"}')
    prod = dataclasses.replace(load(PROJECT / "bundle.yml", "prod"), on_cluster=True)
    assert prod.runtime.storage(prod.checkpoint_root).kind == "account_key"


def test_a_target_without_databricks_reads_as_the_defaults() -> None:
    local = load(PROJECT / "bundle.yml", "local").target
    assert local.databricks is None
    assert local.databricks_or_default is NO_DATABRICKS
    assert NO_DATABRICKS.airflow_conn_id == "databricks_default"
    assert NO_DATABRICKS.storage.via == "unity_catalog" and NO_DATABRICKS.run_as is None
    prod = load(PROJECT / "bundle.yml", "prod").target
    assert prod.databricks_or_default is prod.databricks


def test_storage_login_reprs_hide_every_secret() -> None:
    login = StorageLogin(
        "service_principal",
        account_name="acct",
        client_secret=GeneratedSecret("s3cr3t"),
        connection_string=GeneratedSecret("AccountKey=zzz"),
    )
    assert "s3cr3t" not in repr(login) and "zzz" not in repr(login)
    assert "acct" in repr(login)
