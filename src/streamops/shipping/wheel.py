"""The project's wheel, built offline and byte-for-byte reproducibly, cached by its sources' hash.

Deploy names each upload by its sha256, so an unchanged project must give the same wheel bytes:
the build runs on a clean copy of the sources (no stale `build/` left by an earlier build can slip
into the wheel) with the installed build backend (`--no-build-isolation --no-index`: no network,
so `--render` stays offline), then the archive is rewritten with fixed timestamps and permissions
(what a wheel's bytes otherwise vary with). A build is reused while the sources are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from streamops.errors import DeployError

# What setuptools reads besides the packages; each is copied when it exists.
_PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in")
_SKIP = {"__pycache__", ".mypy_cache", ".pytest_cache", "build", "dist", ".cache"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


def _package_dirs(root: Path, pyproject: dict[str, Any]) -> list[Path]:
    find = pyproject.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    where = find.get("where", ["src"]) if isinstance(find, dict) else ["src"]
    dirs = [root / w for w in where if w not in (".", "")]
    if not dirs:
        raise DeployError(
            f"{root / 'pyproject.toml'}: [tool.setuptools.packages.find] where = ['.'] would put "
            "the whole project folder into the wheel. Fix: keep the packages under src/ "
            "(where = ['src'])"
        )
    return dirs


def source_files(root: Path) -> list[Path]:
    """The files the wheel is built from, relative to `root`, in a stable order."""
    pyproject_path = root / "pyproject.toml"
    if not pyproject_path.is_file():
        raise DeployError(
            f"{pyproject_path} is missing: deploy builds the project's wheel from the folder that "
            "holds bundle.yml. Fix: keep bundle.yml beside the project's pyproject.toml"
        )
    pyproject = tomllib.loads(pyproject_path.read_text())
    files = [root / f for f in _PROJECT_FILES if (root / f).is_file()]
    readme = pyproject.get("project", {}).get("readme")
    readme = readme.get("file") if isinstance(readme, dict) else readme
    if isinstance(readme, str) and (root / readme).is_file():
        files.append(root / readme)
    for top in _package_dirs(root, pyproject):
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(root).parts
            skipped = any(p in _SKIP or p.endswith(".egg-info") for p in rel)
            if path.is_file() and not skipped and path.suffix not in (".pyc", ".pyo"):
                files.append(path)
    return [f.relative_to(root) for f in files]


def sources_hash(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def normalize_zip(src: Path, dest: Path) -> None:
    """Rewrite a wheel with fixed dates and permissions (entries and bytes otherwise kept)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            out = zipfile.ZipInfo(info.filename, date_time=_ZIP_DATE)
            out.external_attr = (0o100644 << 16) if not info.is_dir() else (0o40755 << 16)
            out.create_system = 3  # unix, so the permissions above are read as such
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, zin.read(info.filename), compresslevel=9)


def build_wheel(root: Path, cache_dir: Path) -> Path:
    """The project's wheel under `cache_dir/dist/<sources hash>/`, built there when missing."""
    files = source_files(root)
    key = sources_hash(root, files)[:16]
    out_dir = cache_dir / "dist" / key
    built = sorted(out_dir.glob("*.whl")) if out_dir.is_dir() else []
    if built:
        return built[0]
    with tempfile.TemporaryDirectory(prefix="streamops-wheel-") as tmp:
        src = Path(tmp) / "src"
        for rel in files:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, src / rel)
        raw = Path(tmp) / "raw"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--wheel-dir",
            str(raw),
            str(src),
        ]
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wheels = sorted(raw.glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise DeployError(
                f"building the wheel of {root} failed:\n{tail}\nFix: make sure the build backend "
                "of pyproject.toml is installed here (pip install 'setuptools>=70.1'; the build "
                "runs offline), then deploy again"
            )
        staged = Path(tmp) / wheels[0].name
        normalize_zip(wheels[0], staged)
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / wheels[0].name
        # Another deploy may build the same sources at the same time: publish atomically.
        tmp_final = out_dir / f".{final.name}.{os.getpid()}"
        shutil.copyfile(staged, tmp_final)
        os.replace(tmp_final, final)
    return final
