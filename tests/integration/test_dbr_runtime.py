"""The local Databricks runtime's executor (tests/dbr_runtime), without the Jobs server: a task
and its cluster spec in, a driver process out, run the way a DBR 18 job cluster runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamops.clock import poll
from tests.dbr_runtime import ClusterRun, LocalRuntime, SecretDenied, translate

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "dbr"
WHEEL_PATH = "/Volumes/main/streamops/artifacts/hello_job-0.1-py3-none-any.whl"
BUNDLE_PATH = "/Volumes/main/streamops/artifacts/bundle.yml"
SECRETS = {("jobs", "token"): "s3cr3t-value"}

HELLO = """
import typer  # declared: comes from the wheelhouse, not from DBR 18


def greet(name: str) -> str:
    return f"hello {name} (typer {typer.__name__})"


def undeclared() -> None:
    import confluent_kafka  # noqa: F401  (in the project's venv, neither declared nor in DBR 18)
"""


def _wheel(tmp: Path, name: str, requires: list[str], module: str) -> bytes:
    """A wheel built from source here, byte-identical across builds (so its env is cached)."""
    src = tmp / f"src-{name}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(module)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.1"
        dependencies = {requires!r}
    """)
    )
    out = tmp / f"dist-{name}"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation"]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_CONFIG_FILE": os.devnull}
    subprocess.run([*cmd, "-q", "-w", str(out), str(src)], check=True, env=env)
    return next(out.glob("*.whl")).read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The local Workspace/Files server's contents, as `fetch` serves them."""
    tmp = tmp_path_factory.mktemp("wheels")
    return {
        BUNDLE_PATH: b"bundle: as uploaded",
        WHEEL_PATH: _wheel(tmp, "hello_job", ["typer>=0.12"], HELLO),
        "/Volumes/main/streamops/artifacts/needs_airflow-0.1-py3-none-any.whl": _wheel(
            tmp, "needs_airflow", ["apache-airflow"], ""
        ),
    }


def _runtime(tmp: Path, extra_env: dict[str, str] | None = None) -> LocalRuntime:
    """A runtime that starts no SparkSession: these tests are about the environment."""
    return LocalRuntime(
        cache_dir=CACHE,
        work_root=tmp / "clusters",
        mounts={},
        extra_env=extra_env,
        start_session=False,
    )


def _start(
    runtime: LocalRuntime,
    files: dict[str, bytes],
    code: str,
    *,
    params: list[str] | None = None,
    libraries: list[dict] | None = None,
    cluster: dict | None = None,
) -> ClusterRun:
    workspace = {**files, "/Workspace/jobs/main.py": textwrap.dedent(code).encode()}

    def fetch(path: str) -> bytes:
        if path not in workspace:
            raise FileNotFoundError(f"{path}: no such file in the local workspace")
        return workspace[path]

    def secret(scope: str, key: str) -> str:
        if (scope, key) not in SECRETS:
            raise SecretDenied(
                f"principal sp-jobs has no READ permission on secret scope '{scope}'"
            )
        return SECRETS[(scope, key)]

    task = {
        "task_key": "main",
        "spark_python_task": {"python_file": "/Workspace/jobs/main.py", "parameters": params or []},
        "libraries": [{"whl": WHEEL_PATH}] if libraries is None else libraries,
    }
    return runtime.start(
        task=task,
        cluster=cluster or {"spark_version": "18.0.x-scala2.13"},
        principal="sp-jobs",
        fetch=fetch,
        secret=secret,
        workspace_url="http://127.0.0.1:9",
        token="dapi-test",
    )


def _finish(run: ClusterRun, timeout: float = 120) -> tuple[int, str]:
    try:
        code = poll(run.poll, timeout_s=timeout, interval_s=0.1, what="the task's process to end")
    except BaseException:
        run.cancel()
        raise
    return code, run.log()


def test_a_wheel_runs_with_its_declared_dependency_and_its_parameters(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    run = _start(
        _runtime(tmp_path),
        files,
        """
        import sys
        from hello_job import greet
        print(greet(sys.argv[2]), sys.argv[1:3])
        # A volume path reads as a local file, as through a cluster's FUSE mount.
        print("bundle", open(sys.argv[4]).read())
        sys.exit(3)
    """,
        params=["--name", "claims", "--bundle", BUNDLE_PATH],
    )
    code, log = _finish(run)
    assert code == 3, log
    assert "hello claims (typer typer) ['--name', 'claims']" in log
    assert "bundle bundle: as uploaded" in log


def test_an_undeclared_import_fails_in_the_driver_log(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    run = _start(_runtime(tmp_path), files, "from hello_job import undeclared; undeclared()")
    code, log = _finish(run)
    assert code == 1
    assert "ModuleNotFoundError: No module named 'confluent_kafka'" in log


def test_a_declared_dependency_the_wheelhouse_lacks_stops_the_start(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    lib = [{"whl": "/Volumes/main/streamops/artifacts/needs_airflow-0.1-py3-none-any.whl"}]
    with pytest.raises(RuntimeError, match=r"needs 'apache-airflow'.*make setup"):
        _start(_runtime(tmp_path), files, "print('never')", libraries=lib)


def test_a_missing_library_or_file_stops_the_start(tmp_path: Path, files: dict[str, bytes]) -> None:
    with pytest.raises(RuntimeError, match=r"Library installation failed.*nope\.whl"):
        _start(_runtime(tmp_path), files, "", libraries=[{"whl": "/Volumes/x/nope.whl"}])


def test_secrets_resolve_into_the_environment_and_a_denied_one_stops_the_start(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    cluster = {
        "spark_env_vars": {
            "JOB_TOKEN": "{{secrets/jobs/token}}",
            "PYSPARK_PYTHON": translate.DATABRICKS_PYTHON,
        }
    }
    run = _start(
        _runtime(tmp_path, extra_env={"EXTRA": "yes"}),
        files,
        """
        import os, sys
        print("token", os.environ["JOB_TOKEN"], os.environ["EXTRA"])
        print("python", os.environ["PYSPARK_PYTHON"] == sys.executable)
        print("runtime", os.environ["DATABRICKS_RUNTIME_VERSION"], os.environ["DATABRICKS_HOST"])
    """,
        cluster=cluster,
    )
    code, log = _finish(run)
    assert code == 0, log
    assert "token s3cr3t-value yes" in log
    assert "python True" in log and "runtime 18.0 http://127.0.0.1:9" in log

    denied = {"spark_env_vars": {"X": "{{secrets/prod-pager/key}}"}}
    with pytest.raises(RuntimeError, match=r"spark_env_vars\.X .*no READ permission.*prod-pager"):
        _start(_runtime(tmp_path), files, "", cluster=denied)


def test_nothing_of_the_checkout_or_its_venv_is_importable(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    run = _start(
        _runtime(tmp_path),
        files,
        f"""
        import importlib, os, sys
        for name in ("streamops", "tests", "airflow", "confluent_kafka", "pyspark", "delta",
                     "hello_job", "azure.core", "azure.monitor.query"):
            try:
                importlib.import_module(name)
                print("importable", name)
            except ImportError:
                print("hidden", name)
        root, runtime = {str(ROOT)!r}, {str(CACHE)!r}  # the env and runtime layer live in the cache
        print("checkout on sys.path", [p for p in sys.path if p.startswith(root)
                                       and not p.startswith(runtime + "/")])
        print("cwd in checkout", os.getcwd().startswith(root))
    """,
        libraries=[],
    )
    code, log = _finish(run)
    assert code == 0, log
    for name in ("streamops", "tests", "airflow", "confluent_kafka", "hello_job"):
        assert f"hidden {name}" in log
    assert "importable pyspark" in log and "importable delta" in log  # the runtime's own
    # A namespace shared with packages DBR 18 lacks: azure-core is in it, azure-monitor-query not.
    assert "importable azure.core" in log and "hidden azure.monitor.query" in log
    assert "checkout on sys.path []" in log and "cwd in checkout False" in log


def test_cancel_ends_the_process(tmp_path: Path, files: dict[str, bytes]) -> None:
    run = _start(
        _runtime(tmp_path), files, "import time\nwhile True: time.sleep(0.1)", libraries=[]
    )
    assert run.poll() is None
    run.cancel()
    assert run.poll() is not None


def test_work_root_inside_the_project_is_refused() -> None:
    with pytest.raises(ValueError, match="inside the project"):
        LocalRuntime(cache_dir=CACHE, work_root=ROOT / "tmp-runs", mounts={})


def test_the_session_conf_translates_databricks_classes_and_adds_the_runtime_jars(
    tmp_path: Path,
) -> None:
    runtime = LocalRuntime(cache_dir=CACHE, work_root=tmp_path, mounts={})
    conf = runtime.spark_conf(
        {"spark.sql.streaming.stateStore.providerClass": translate.DATABRICKS_ROCKSDB, "a": "b"}
    )
    assert conf["spark.sql.streaming.stateStore.providerClass"] == translate.APACHE_ROCKSDB
    assert conf["a"] == "b"
    jars = [Path(j).name for j in conf["spark.jars"].split(",")]
    assert "kafkashaded-login-modules.jar" in jars
    assert any(j.startswith("spark-sql-kafka-0-10_") for j in jars)
    assert any(j.startswith("delta-spark_") for j in jars)


def test_the_cluster_session_has_the_runtime_jars_and_translated_conf(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    cluster = {
        "spark_conf": {"spark.sql.streaming.stateStore.providerClass": translate.DATABRICKS_ROCKSDB}
    }
    runtime = LocalRuntime(cache_dir=CACHE, work_root=tmp_path / "clusters", mounts={})
    run = _start(
        runtime,
        files,
        """
        from pyspark.sql import SparkSession
        spark = SparkSession.getActiveSession()
        print("master", spark.sparkContext.master)
        print("provider", spark.conf.get("spark.sql.streaming.stateStore.providerClass"))
        jvm = spark._jvm
        loader = jvm.org.apache.spark.util.Utils.getContextOrSparkClassLoader()
        names = ["kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule",
                 "org.apache.spark.sql.kafka010.KafkaSourceProvider",
                 *spark.conf.get("spark.sql.extensions").split(",")]
        for name in names:
            print("loads", jvm.java.lang.Class.forName(name, True, loader).getName())
    """,
        cluster=cluster,
        libraries=[],
    )
    code, log = _finish(run, timeout=480)
    assert code == 0, log
    assert "master local[2]" in log
    assert f"provider {translate.APACHE_ROCKSDB}" in log
    assert "loads kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule" in log
    assert "loads io.delta.sql.DeltaSparkSessionExtension" in log  # Delta built in, as on DBR
