"""The cluster's Python environment for one library set, as a job cluster builds it: the
runtime's packages (the runtime layer, one .pth line) plus the task's `libraries`, installed by
pip from files only (the fetched wheels and the wheelhouse `make setup` downloaded; no index).

Environments are cached under cache_dir by a hash of the libraries' bytes and the layer, so a
second run of the same deploy starts at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from tests.dbr_runtime import layer

MANIFEST = "wheelhouse.json"


def wheelhouse(cache_dir: Path) -> Path:
    """The lock-pinned wheels `make setup` downloads (tests/dbr_runtime/wheelhouse.py)."""
    where = cache_dir / "wheels"
    if not (where / MANIFEST).is_file():
        raise RuntimeError(
            f"the local Databricks runtime's wheelhouse is not prepared ({where / MANIFEST} is "
            "missing). Fix: run `make setup` (it downloads the lock-pinned wheels of the "
            "project's dependencies once)"
        )
    return where


def library_files(
    libraries: list[dict], fetch: Callable[[str], bytes]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(file name, bytes) of each `whl` library and the requirement of each `pypi` one; an entry
    the runtime cannot install, or a file the workspace does not serve, is a RuntimeError."""
    wheels: list[tuple[str, bytes]] = []
    pypi: list[str] = []
    for i, lib in enumerate(libraries):
        if "whl" in lib:
            path = str(lib["whl"])
            try:
                data = fetch(path)
            except Exception as exc:
                raise RuntimeError(
                    f"Library installation failed for library due to user error for whl: "
                    f"'{path}' (libraries[{i}]): {exc}. Fix: upload the wheel (streamops deploy) "
                    "or correct the path"
                ) from exc
            wheels.append((PurePosixPath(path).name, data))
        elif "pypi" in lib:
            pypi.append(str(lib["pypi"]["package"]))
        else:
            kinds = ", ".join(sorted(lib)) or "empty entry"
            raise RuntimeError(
                f"Library installation failed: libraries[{i}] ({kinds}) is not a library kind "
                "the local runtime installs (whl, pypi)"
            )
    return wheels, pypi


def env_key(wheels: list[tuple[str, bytes]], pypi: list[str]) -> str:
    h = hashlib.sha256(layer.key().encode())
    h.update(Path(__file__).read_bytes())  # a change to how envs are built makes new ones
    for name, data in wheels:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(json.dumps(pypi).encode())
    return h.hexdigest()[:16]


def cluster_env(cache_dir: Path, wheels: list[tuple[str, bytes]], pypi: list[str]) -> Path:
    """The environment folder for these libraries (its python: <env>/bin/python), built once."""
    where = cache_dir / "envs" / env_key(wheels, pypi)
    if (where / ".complete").is_file():
        return where
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{where}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (where / ".complete").is_file():
            shutil.rmtree(where, ignore_errors=True)
            try:
                _build(where, cache_dir, wheels, pypi)
            except BaseException:
                shutil.rmtree(where, ignore_errors=True)
                raise
            (where / ".complete").touch()
    return where


def _build(where: Path, cache_dir: Path, wheels: list[tuple[str, bytes]], pypi: list[str]) -> None:
    # The venv's base CPython (3.11): the layer's compiled packages are built for it.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True
    )
    site = next((where / "lib").glob("python3.*/site-packages"))
    (site / "databricks-runtime.pth").write_text(f"{layer.runtime_layer(cache_dir)}\n")
    if not wheels and not pypi:
        return
    files = where / "libraries"
    files.mkdir()
    for name, data in wheels:
        (files / name).write_bytes(data)
    house = wheelhouse(cache_dir)
    cmd = [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"), "install"]
    cmd += ["--no-index", "--find-links", str(house), "--disable-pip-version-check", "--quiet"]
    cmd += [str(files / name) for name, _ in wheels] + pypi
    # This machine's pip config (mirrors, find-links) is not the cluster's: files only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(_install_error(done.stdout + done.stderr, house))


def _install_error(output: str, house: Path) -> str:
    missing = re.search(r"satisfies the requirement (\S+)(?: \(from ([^)]+)\))?", output)
    if missing:
        req, owner = missing.group(1), missing.group(2) or "the task's libraries"
        return (
            f"Library installation failed for library due to user error: {owner} needs "
            f"'{req}', which neither Databricks Runtime 18 (tests/dbr_runtime/packages.py) nor "
            f"the wheelhouse ({house}) provides. Fix: declare it in pyproject.toml "
            "[project].dependencies, pin it in requirements.lock, and run `make setup`"
        )
    tail = "\n".join(output.strip().splitlines()[-12:])
    return f"Library installation failed for library due to user error:\n{tail}"
