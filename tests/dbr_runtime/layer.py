"""The runtime layer: a folder of symlinks into the project's venv holding only the packages
Databricks Runtime 18 preinstalls (packages.RUNTIME_PACKAGES and what our versions of them need),
with their *.dist-info, so that pip sees them as installed and nothing else of the venv is
visible. A cluster environment reaches it through one .pth line.

Namespace packages shared with packages outside the runtime (`azure/`: azure-core is in DBR 18,
azure-monitor-query is not) become real folders whose allowed children are linked one by one.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata as md
import shutil
import sys
from pathlib import Path, PurePosixPath

from tests.dbr_runtime.packages import layer_distributions


def _site_packages() -> Path:
    """The project venv's site-packages: where every runtime package of this process lives."""
    dist = md.distribution("pyspark")
    return Path(str(dist.locate_file(""))).resolve()


def _owned(dist: md.Distribution) -> set[PurePosixPath]:
    """The files a distribution installed inside site-packages (its RECORD), bytecode aside."""
    out: set[PurePosixPath] = set()
    for f in dist.files or []:
        p = PurePosixPath(str(f))
        if p.parts and p.parts[0] != ".." and "__pycache__" not in p.parts:
            out.add(p)
    return out


def _links(site: Path) -> list[PurePosixPath]:
    """The shallowest paths that hold only runtime files: each becomes one symlink."""
    layer = layer_distributions()
    allowed: set[PurePosixPath] = set()
    for dist in layer.values():
        allowed |= _owned(dist)
    tainted: set[PurePosixPath] = set()  # folders that also hold files of other packages
    for dist in md.distributions(path=[str(site)]):
        for p in _owned(dist) - allowed:
            tainted.update(p.parents)
    links: set[PurePosixPath] = set()
    for p in allowed:
        chain = [*reversed(p.parents[:-1]), p]  # top-level folder first
        links.add(next(c for c in chain if c not in tainted))
    return sorted(links)


def key() -> str:
    """Which venv and which package versions a layer holds (a new pin makes a new layer)."""
    layer = layer_distributions()
    text = sys.prefix + "".join(f"{n}=={d.version};" for n, d in sorted(layer.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def runtime_layer(cache_dir: Path) -> Path:
    """The layer folder for this venv's pins, built once under cache_dir (safe across processes)."""
    where = cache_dir / f"runtime-layer-{key()}"
    if (where / ".complete").is_file():
        return where
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (where / ".complete").is_file():
            shutil.rmtree(where, ignore_errors=True)
            site = _site_packages()
            for rel in _links(site):
                target = where / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(site / rel)
            (where / ".complete").touch()
    return where
