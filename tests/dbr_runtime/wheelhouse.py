"""`make setup` step: the wheelhouse of the local Databricks runtime.

    python -m tests.dbr_runtime.wheelhouse .cache/dbr/wheels

Downloads, once, the wheels of every package the project's `[project].dependencies` need
(closure from the venv's installed metadata) that Databricks Runtime 18 does not preinstall
(packages.py), pinned by requirements.lock, for this machine's Python. Cluster environments
install from these files only: no registry access while tests run. Idempotent: wheels already
present are not downloaded again; `wheelhouse.json` records what a complete download holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.dbr_runtime.environment import MANIFEST
from tests.dbr_runtime.packages import closure, layer_distributions

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    """requirements.lock as {canonical name: version}."""
    out: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            out[canonicalize_name(name)] = version.split(";")[0].strip()
    return out


def needed() -> list[str]:
    """`name==version` of each dependency the runtime layer does not provide."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    provided = layer_distributions()
    locked = pins()
    out = []
    for name, dist in sorted(closure(deps).items()):
        if name in provided:
            continue
        if name not in locked:
            raise SystemExit(
                f"{name} (needed by pyproject.toml [project].dependencies) is not pinned in "
                "requirements.lock. Fix: run `make lock`"
            )
        if locked[name] != dist.version:
            raise SystemExit(
                f"{name}: the venv has {dist.version}, requirements.lock pins {locked[name]}. "
                "Fix: run `make setup` to reinstall the pins"
            )
        out.append(f"{name}=={locked[name]}")
    return out


def _pin(wheel_name: str) -> str:
    """`name==version` of a wheel file name (`{name}-{version}-{tags}.whl`)."""
    name, version = wheel_name.split("-")[:2]
    return f"{canonicalize_name(name)}=={version}"


def main(dest: Path) -> None:
    reqs = needed()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).unlink(missing_ok=True)
    have = {_pin(w.name) for w in dest.glob("*.whl")}
    todo = [r for r in reqs if r not in have]
    if todo:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--quiet", "--dest", str(dest), *todo]
        subprocess.run(cmd, check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (dest / MANIFEST).write_text(json.dumps({"requirements": reqs}, indent=1) + "\n")
    print(f"{len(reqs)} wheels in {dest} ({len(todo)} downloaded)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
