"""The wheel a deploy ships declares everything the job cluster imports.

A Databricks job cluster installs the wheel (`libraries: [{whl: ...}]`) on top of what the runtime
preinstalls, and nothing else: an import that is neither declared nor preinstalled fails there,
often inside a thread that only counts the failure (the metrics exporter). So the modules that the
cluster's two entrypoints (`jobs/stream.py` -> `streamops.runner.entry`, `jobs/compact.py` ->
`streamops.compaction.cluster`, both through `streamops.entry`) import are walked with `ast`,
including imports inside functions (lazy imports run on the cluster too), and each third-party
top-level import must come from a distribution in the built wheel's `Requires-Dist` or in the
runtime's list (tests/dbr_runtime/packages.py).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import zipfile
from email.parser import Parser
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streamops.shipping import wheel
from tests.dbr_runtime.packages import RUNTIME_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
# What jobs/stream.py and jobs/compact.py import (through streamops.entry).
ENTRYPOINTS = (
    "streamops.entry",
    "streamops.runner.entry",
    "streamops.compaction.cluster",
    "streamops.compaction.databricks_job",
    "streamops.checkpoint.cluster_check",  # jobs/check.py
)
# Modules reached by the walk that never run on a cluster, and why.
AIRFLOW_SIDE = {
    # The provider's hook: built only by DatabricksAccess.hook(), in Airflow tasks (deploy,
    # the compaction's runs/submit); it imports Airflow, which a job cluster lacks.
    "streamops.databricks_access.hook",
}
# Top-level imports reached by the walk that a cluster never executes, and why.
NOT_ON_THE_CLUSTER = {
    # `{{conn/...}}` secrets (resolved inside Airflow tasks; validation refuses them for what the
    # cluster reads) and the access's hook (Airflow side).
    "airflow",
}
# Imports the walk cannot see: fsspec loads the implementation of a URL's protocol by name
# (abfss:// -> adlfs) when the driver-side readers open a path.
DYNAMIC = {"fsspec": ("adlfs",)}


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(path: Path, module: str) -> list[str]:
    """Every module `path` imports, at any depth, except under `if TYPE_CHECKING:`."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                for other in child.orelse:  # type: ignore[attr-defined]
                    visit(other)
            elif isinstance(child, ast.Import):
                found.extend(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[: len(package) - child.level + 1]
                    base = ".".join([*package, *([child.module] if child.module else [])])
                found.append(base)
                if base.split(".")[0] == "streamops":  # `from pkg import module`
                    found.extend(f"{base}.{a.name}" for a in child.names)
            else:
                visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def cluster_imports() -> dict[str, set[str]]:
    """Third-party module -> the streamops modules importing it, from the entrypoints outward."""
    seen: set[str] = set()
    third: dict[str, set[str]] = {}
    todo = list(ENTRYPOINTS)
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or module in AIRFLOW_SIDE or path is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top == "streamops":
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(name, set()).add(module)
    for name in list(third):
        for extra in DYNAMIC.get(name.split(".")[0], ()):
            third.setdefault(extra, set()).update(third[name])
    return third


@cache
def _providers() -> dict[str, list[str]]:
    return md.packages_distributions()


def distribution_of(module: str) -> str:
    """The installed distribution providing `module` (a namespace package such as `azure` is
    shared: the one whose files hold the module's own folder or file)."""
    top = module.split(".")[0]
    names = _providers().get(top, [])
    if len(set(names)) == 1:
        return canonicalize_name(names[0])
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        prefix = "/".join(parts[:depth])
        for name in names:
            files = md.distribution(name).files or []
            if any(str(f).startswith((f"{prefix}/", f"{prefix}.py")) for f in files):
                return canonicalize_name(name)
    raise AssertionError(f"no installed distribution provides {module}")


def requires_dist(whl: Path) -> set[str]:
    """The wheel's unconditional Requires-Dist (extras are not installed on the cluster)."""
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(z.read(meta).decode())
    reqs = [Requirement(r) for r in headers.get_all("Requires-Dist") or []]
    return {canonicalize_name(r.name) for r in reqs if r.marker is None}


def test_the_wheel_declares_every_import_the_cluster_runs(tmp_path: Path) -> None:
    declared = requires_dist(wheel.build_wheel(ROOT, tmp_path))
    runtime = {canonicalize_name(n) for n in RUNTIME_PACKAGES}
    imports = cluster_imports()
    # The walk reaches the job's and the compaction's whole path (guards against an empty walk).
    tops = {m.split(".")[0] for m in imports}
    assert {
        "pyspark",
        "deltalake",
        "confluent_kafka",
    } <= tops and "azure.monitor.ingestion" in imports
    missing = {
        f"{module} (imported by {', '.join(sorted(users))}) from {dist}"
        for module, users in imports.items()
        if module.split(".")[0] not in NOT_ON_THE_CLUSTER
        and (dist := distribution_of(module)) not in declared | runtime
    }
    assert not missing, (
        "the job cluster would fail to import these: declare them in pyproject.toml "
        "[project].dependencies:\n  " + "\n  ".join(sorted(missing))
    )


def test_the_exporter_and_pager_clients_are_declared_even_where_the_runtime_has_them(
    tmp_path: Path,
) -> None:
    """The runtime's versions move with each release; what the job calls directly is pinned by
    the wheel (pip keeps a preinstalled version that satisfies it)."""
    declared = requires_dist(wheel.build_wheel(ROOT, tmp_path))
    assert {"azure-monitor-ingestion", "azure-identity", "requests"} <= declared
    # The runtime's own Spark must never be reinstalled from the index over it.
    assert not {"pyspark", "delta-spark", "py4j"} & declared
