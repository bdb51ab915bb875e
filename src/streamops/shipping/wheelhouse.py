"""The wheelhouse: the wheel's runtime dependencies as wheels, for clusters without internet access.

`prepare` runs `pip download` for the project's `[project].dependencies`, pinned by the
requirements.lock beside pyproject.toml, for the cluster's platform (Linux x86_64, the runtime's
CPython), into `.cache/wheelhouse/<key>/`. The key hashes those inputs, so a code change reuses the
wheelhouse and a dependency change makes a new one. Only `prepare` touches the network (the
package index pip is configured with); `load` reads what it left, so a render stays offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from streamops.errors import DeployError

# CPython of each Databricks Runtime major version (the release notes' "System environment").
RUNTIME_PYTHON = {13: "3.10", 14: "3.10", 15: "3.11", 16: "3.12", 17: "3.12", 18: "3.12"}
# Azure VMs of Databricks clusters are x86_64; manylinux wheels for glibc 2.17..2.28 install there.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def python_for_runtime(spark_version: str) -> str:
    m = re.match(r"^(\d+)\.", spark_version)
    if not m or int(m.group(1)) not in RUNTIME_PYTHON:
        known = ", ".join(f"{k}.x" for k in RUNTIME_PYTHON)
        raise DeployError(
            f"cluster.spark_version '{spark_version}': no known Python version for this "
            f"Databricks Runtime (known: {known}), so no wheelhouse can be built for it. Fix: use "
            "one of those runtimes, or `dependencies: index`"
        )
    return RUNTIME_PYTHON[int(m.group(1))]


def requirements(root: Path) -> tuple[list[str], str]:
    """The project's runtime dependencies and the text of its constraints file ('' if none)."""
    project = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {})
    lock = root / "requirements.lock"
    return list(project.get("dependencies", [])), lock.read_text() if lock.is_file() else ""


def key(root: Path, python: str) -> str:
    deps, lock = requirements(root)
    text = json.dumps({"deps": deps, "lock": lock, "python": python, "platforms": PLATFORMS})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def location(root: Path, cache_dir: Path, python: str) -> Path:
    return cache_dir / "wheelhouse" / key(root, python)


def load(root: Path, cache_dir: Path, python: str, *, command: str) -> list[Path]:
    """The prepared wheelhouse's wheels (sorted), or an error naming `command` to prepare it."""
    where = location(root, cache_dir, python)
    if not (where / ".complete").is_file():
        raise DeployError(
            f"the wheelhouse of this project (dependencies: wheelhouse) is not prepared yet "
            f"({where}); a render makes no network call. Fix: run `{command}` once (downloads "
            "the dependencies' wheels from your package index), then render again"
        )
    return sorted(where.glob("*.whl"))


def prepare(root: Path, cache_dir: Path, python: str) -> list[Path]:
    """Download the dependencies' wheels for the cluster (once per key); return them sorted."""
    where = location(root, cache_dir, python)
    if (where / ".complete").is_file():
        return sorted(where.glob("*.whl"))
    deps, lock = requirements(root)
    if not deps:
        where.mkdir(parents=True, exist_ok=True)
        (where / ".complete").touch()
        return []
    abi = "cp" + python.replace(".", "")
    with tempfile.TemporaryDirectory(prefix="streamops-wheelhouse-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            tmp,
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python,
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        if lock:
            cmd += ["--constraint", str(root / "requirements.lock")]
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        done = subprocess.run([*cmd, *deps], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise DeployError(
                f"downloading the wheelhouse for Python {python} failed:\n{tail}\nFix: make sure "
                "this machine reaches your package index (pip config / PIP_INDEX_URL) and that "
                "every dependency has a wheel for Linux x86_64, then try again"
            )
        staged = where.with_name(f".{where.name}.{os.getpid()}")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(tmp, staged)
        (staged / ".complete").touch()
        if where.exists():  # another deploy prepared it meanwhile: same inputs, same wheels
            shutil.rmtree(staged)
        else:
            os.replace(staged, where)
    return sorted(where.glob("*.whl"))
