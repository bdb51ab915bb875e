"""The job cluster of one streaming job: runtime, size, access mode, storage login, state store,
and the secrets the job reads, all as platform references (never values).

Secrets: the job code resolves `{{secrets/scope/key}}` from the environment variable
`SecretRef.env_var` on every target; on Databricks the cluster's `spark_env_vars` map that
variable to the secret itself (`{{secrets/scope/key}}` values are resolved by Databricks when the
cluster starts), so the same resolver works there and the spec holds only references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.bundle.secrets import SecretRef
from streamops.bundle.storage_access import spark_conf as storage_spark_conf

if TYPE_CHECKING:
    from databricks.sdk.service import compute

    from streamops.bundle import Bundle, Job

PYSPARK_PYTHON = "/databricks/python3/bin/python3"
STATE_STORE_PROVIDER = "spark.sql.streaming.stateStore.providerClass"
# Databricks' own RocksDB provider (the runtime's class, not Apache Spark's of the same name).
DATABRICKS_ROCKSDB = "com.databricks.sql.streaming.state.RocksDBStateStoreProvider"
# Access modes in which the cluster belongs to one identity (named by single_user_name).
DEDICATED_MODES = ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")


def cluster_secrets(bundle: Bundle) -> list[tuple[str, SecretRef]]:
    """(YAML path, reference) of every secret the job reads on the cluster."""
    t = bundle.target
    tp = f"targets.{bundle.target_name}"
    found: list[tuple[str, SecretRef | None]] = [
        (f"{tp}.kafka.security.username", t.kafka.security.username),
        (f"{tp}.kafka.security.password", t.kafka.security.password),
        (f"{tp}.monitoring.pagerduty_routing_key", t.monitoring.pagerduty_routing_key),
        (f"{tp}.monitoring.webhook_url", t.monitoring.webhook_url),
        (f"{tp}.databricks.storage.client_secret", t.databricks_or_default.storage.client_secret),
        (
            f"{tp}.monitoring.azure_login.client_secret",
            t.monitoring.azure_login.client_secret if t.monitoring.azure_login else None,
        ),
    ]
    for name, src in bundle.spec.sources.items():
        if src.security is not None:
            found.append((f"sources.{name}.security.username", src.security.username))
            found.append((f"sources.{name}.security.password", src.security.password))
    return [(path, ref) for path, ref in found if ref is not None]


def secret_env_vars(bundle: Bundle) -> dict[str, str]:
    """{STREAMOPS_SECRET_<SCOPE>_<KEY>: '{{secrets/scope/key}}'} for the cluster's environment."""
    return {ref.env_var: ref.text for _, ref in cluster_secrets(bundle) if ref.kind == "secrets"}


def spark_conf(bundle: Bundle, job: Job | None) -> dict[str, str]:
    """The cluster's Spark settings: RocksDB state for stateful jobs, the storage login."""
    conf: dict[str, str] = {}
    if job is not None and job.is_stateful:
        # State of long windows and joins outgrows the JVM heap in the default provider.
        conf[STATE_STORE_PROVIDER] = DATABRICKS_ROCKSDB
    storage = bundle.target.databricks_or_default.storage
    return conf | storage_spark_conf(storage, storage_locations(bundle))


def storage_locations(bundle: Bundle) -> list[str]:
    """Every storage location the job cluster writes: tables, checkpoints, their backups."""
    t = bundle.target
    out = [bundle.storage_root, bundle.checkpoint_root]
    out += [bundle.table_location(k) for k in bundle.spec.tables]
    out += [bundle.checkpoint_location(j) for j in bundle.spec.jobs.values()]
    if t.checkpoints.backup_root:
        out.append(t.checkpoints.backup_root)
    return out


def cluster_spec(bundle: Bundle, job: Job | None) -> compute.ClusterSpec:
    """The job cluster, before `databricks.cluster_settings` are merged over it (`job` None:
    a cluster that runs no streaming query, such as the nightly compaction's)."""
    from databricks.sdk.service import compute

    cl = bundle.target.cluster
    db = bundle.target.databricks_or_default
    mode = db.data_security_mode
    spec = compute.ClusterSpec(
        spark_version=cl.spark_version,
        node_type_id=cl.node_type_id,
        num_workers=cl.workers,
        spark_env_vars={"PYSPARK_PYTHON": PYSPARK_PYTHON, **secret_env_vars(bundle)},
        spark_conf=spark_conf(bundle, job) or None,
        data_security_mode=compute.DataSecurityMode(mode),
    )
    if mode in DEDICATED_MODES and db.run_as:
        spec.single_user_name = db.run_as
    return spec
