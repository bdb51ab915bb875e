"""One task on the local Databricks runtime: the cluster's environment variables and Spark conf
(secret references resolved as Databricks resolves them at cluster start), a fresh working folder
outside the project, and the driver process started there."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from tests.dbr_runtime import translate

SECRET_REF = re.compile(r"\{\{secrets/([^/{}]+)/([^/{}]+)\}\}")
# What a cluster's process inherits from the machine (the JVM, locale); nothing of the checkout.
PASSTHROUGH = ("JAVA_HOME", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "SPARK_LOCAL_IP")
RUNTIME_VERSION = "18.0"
# Workspace files and volumes are local paths (FUSE) on a cluster: a parameter naming one reads a
# fetched copy here.
FUSE_PREFIXES = ("/Workspace/", "/Volumes/")
CANCEL_GRACE_S = 10.0
PROJECT = Path(__file__).resolve().parents[2]


def _in_project(path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(PROJECT)


def resolve_secrets(
    values: dict[str, str], secret: Callable[[str, str], str], where: str
) -> dict[str, str]:
    """`values` with every {{secrets/scope/key}} replaced by its value; a refused one is a
    RuntimeError that names the setting (the secret callback's text says why)."""

    def one(name: str, text: str) -> str:
        def value(m: re.Match[str]) -> str:
            try:
                return secret(m.group(1), m.group(2))
            except Exception as exc:
                raise RuntimeError(
                    f"Cluster failed to start: {where}.{name} references {m.group(0)}: {exc}"
                ) from exc

        return SECRET_REF.sub(value, text)

    return {name: one(name, str(text)) for name, text in values.items()}


def process_env(
    python: Path, env_vars: dict[str, str], extra_env: dict[str, str], host: str, token: str
) -> dict[str, str]:
    """The driver's environment: the machine's basics, the cluster's spark_env_vars (translated),
    the runtime's own variables, then extra_env."""
    env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not _in_project(p)]
    env["PATH"] = os.pathsep.join([str(python.parent), *path])
    env |= translate.env_vars(env_vars, python)
    env.setdefault("PYSPARK_PYTHON", str(python))
    env |= {
        "PYSPARK_DRIVER_PYTHON": str(python),
        "DATABRICKS_RUNTIME_VERSION": RUNTIME_VERSION,
        "DATABRICKS_HOST": host,
        "DATABRICKS_TOKEN": token,
    }
    return env | extra_env


def working_folder(
    work_root: Path,
    python_file: str,
    source: bytes,
    parameters: list[str],
    fetch: Callable[[str], bytes],
) -> tuple[Path, list[str]]:
    """A fresh folder holding the task's file and the bootstrap; the parameters, with workspace
    and volume paths pointing at fetched copies inside it."""
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    (work / PurePosixPath(python_file).name).write_bytes(source)
    shutil.copy(Path(__file__).with_name("bootstrap.py"), work / "bootstrap.py")
    out = []
    for p in parameters:
        if p.startswith(FUSE_PREFIXES):
            try:
                data = fetch(p)
            except Exception:  # not a file the workspace serves: the job sees the path as is
                out.append(p)
                continue
            copy = work / "fuse" / p.lstrip("/")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
            out.append(str(copy))
        else:
            out.append(p)
    return work, out


class ClusterRun:
    """The driver process of one task run; its log is the driver log (stdout + stderr)."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log_file = cwd / "driver.log"
        with open(self.log_file, "wb") as out:
            # A session of its own: cancel reaches the JVM that pyspark starts under it.
            self._proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def poll(self) -> int | None:
        return self._proc.poll()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def cancel(self) -> None:
        """SIGTERM to the driver (it stops its queries, then Spark), SIGKILL to the driver and
        its JVM after a grace period; then it has ended. Only the driver gets the SIGTERM: a JVM
        that got one too would tear its RPC down under queries still stopping."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._proc.poll() is not None:
                break
            try:
                if sig == signal.SIGTERM:
                    os.kill(self._proc.pid, sig)
                else:
                    os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._proc.wait(timeout=CANCEL_GRACE_S)
            except subprocess.TimeoutExpired:
                continue
        self._proc.wait()
        with contextlib.suppress(ProcessLookupError):  # the JVM of a driver that ended on SIGTERM
            os.killpg(self._proc.pid, signal.SIGKILL)


def start(python: Path, work: Path, spec: dict, env: dict[str, str]) -> ClusterRun:
    """Start the bootstrap in `work` with the cluster's spec (cluster.json beside it)."""
    (work / "cluster.json").write_text(json.dumps(spec, indent=1))
    # -I: no PYTHON* variables, no user site, no script folder on sys.path; the env's
    # site-packages (and through it the runtime layer) stays. -u: the driver log streams.
    return ClusterRun([str(python), "-I", "-u", "bootstrap.py"], work, env)
