"""The local Databricks runtime's executor: runs a Jobs API task the way a DBR 18 job cluster
does, from the task and its cluster spec alone (DESIGN.md, "What a deploy ships is what a test
runs"). tests/fake_runs.py calls `LocalRuntime.start` on `run-now` / `runs/submit`.

- environment.py: a fresh venv per library set: the runtime layer (layer.py, packages.py) plus the
  task's `libraries`, installed from files only (the wheelhouse of wheelhouse.py, `make setup`);
- launch.py: secrets resolved into spark_env_vars / spark_conf, a working folder outside the
  project, the driver process;
- bootstrap.py: the cluster's SparkSession, then the task's file as `__main__`;
- translate.py: what only Databricks has, and what stands in for it here (one table);
- storage.py (its own owner): how `abfss://` and Unity Catalog names land in local folders.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.dbr_runtime import environment, launch, translate
from tests.dbr_runtime.launch import ClusterRun

__all__ = ["ClusterRun", "LocalRuntime", "SecretDenied"]

MASTER = "local[2]"
# What every DBR cluster's session has before the job's spark_conf: Delta Lake built in.
RUNTIME_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "1g",
    # Open-source Delta computes each snapshot in 50 tasks (Databricks' Delta caches them): on
    # local[2] that is most of a micro-batch. Performance only; what the job writes is the same.
    "spark.databricks.delta.snapshotPartitions": "2",
}


class SecretDenied(Exception):
    """Raised by the `secret` callback: the run's principal may not read the scope."""


class LocalRuntime:
    """Starts tasks as job clusters of Databricks Runtime 18 would (see the module docstring)."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        work_root: Path,
        mounts: dict[str, Path],
        extra_env: dict[str, str] | None = None,
        catalogs: tuple[str, ...] = ("main",),
        start_session: bool = True,
    ) -> None:
        if launch._in_project(work_root):
            raise ValueError(f"work_root {work_root} is inside the project; use a folder outside")
        self.cache_dir, self.work_root, self.mounts = cache_dir, work_root, dict(mounts)
        self.extra_env = dict(extra_env or {})
        self.catalogs = catalogs  # Unity Catalog catalogs the session resolves (storage.py)
        # False: no SparkSession before the task (tests of the environment alone, no JVM).
        self.start_session = start_session

    def start(
        self,
        *,
        task: dict[str, Any],
        cluster: dict[str, Any],
        principal: str,
        fetch: Callable[[str], bytes],
        secret: Callable[[str, str], str],
        workspace_url: str,
        token: str,
    ) -> ClusterRun:
        """The task's driver process, started; a RuntimeError (its text the run's state message)
        when the cluster cannot start or a library or the task's file cannot be installed."""
        env_vars = launch.resolve_secrets(
            cluster.get("spark_env_vars") or {}, secret, "spark_env_vars"
        )
        conf = launch.resolve_secrets(cluster.get("spark_conf") or {}, secret, "spark_conf")
        wheels, pypi = environment.library_files(list(task.get("libraries") or []), fetch)
        python = environment.cluster_env(self.cache_dir, wheels, pypi) / "bin" / "python"
        spt = task.get("spark_python_task")
        if not spt:
            raise RuntimeError(
                f"task {task.get('task_key')}: the local runtime runs spark_python_task only"
            )
        try:
            source = fetch(spt["python_file"])
        except Exception as exc:
            raise RuntimeError(f"Could not read python_file {spt['python_file']}: {exc}") from exc
        work, params = launch.working_folder(
            self.work_root,
            spt["python_file"],
            source,
            [str(p) for p in spt.get("parameters", [])],
            fetch,
        )
        spec = {
            "master": MASTER,
            "spark_conf": self.spark_conf(conf) if self.start_session else None,
            "python_file": str(work / Path(spt["python_file"]).name),
            "parameters": params,
        }
        env = launch.process_env(python, env_vars, self.extra_env, workspace_url, token)
        return launch.start(python, work, spec, env)

    def spark_conf(self, cluster_conf: dict[str, str]) -> dict[str, str]:
        """The session's conf: the runtime's defaults, the cluster's (translated), then the
        storage mapping (the runtime's own file systems, which a job cannot replace), and the
        runtime's jars."""
        storage = _storage()
        jars = [*self.runtime_jars(), *(storage.jars(self.cache_dir) if storage else [])]
        conf = RUNTIME_CONF | translate.spark_conf(cluster_conf)
        if storage is not None:
            # The registry lives as long as this runtime's runs: later runs find earlier tables.
            registry = self.work_root / "unity-catalog"
            conf |= storage.spark_conf(self.mounts, self.catalogs, registry=registry)
        return conf | {"spark.jars": ",".join(str(j) for j in jars)}

    def runtime_jars(self) -> list[Path]:
        """The jars DBR ships that Apache Spark lacks: Kafka connector and Delta (`make setup`),
        and the shaded Kafka login module names."""
        spark_jars = self.cache_dir.parent / "jvm" / "spark"
        found = sorted(spark_jars.glob("*.jar"))
        if not found:
            raise RuntimeError(f"no Spark jars in {spark_jars}. Fix: run `make setup`")
        return [*found, translate.kafka_shim_jar(self.cache_dir)]


def _storage() -> Any:
    """tests/dbr_runtime/storage.py (abfss:// and Unity Catalog names -> local folders), or
    None while it does not exist."""
    try:
        return importlib.import_module("tests.dbr_runtime.storage")
    except ModuleNotFoundError as exc:
        if exc.name != "tests.dbr_runtime.storage":
            raise
        return None
