"""What a deploy uploads, and where: content-addressed paths the job settings point to.

Each file lands at `<artifact_root>/<sha256[:16]>/<file name>`: a deploy with no change finds every
file already there and uploads nothing; a changed file gets a new folder, and the job (whose
settings name these paths) changes with it. Computing the artifacts builds the wheel (offline,
cached) and reads the prepared wheelhouse; it never calls the workspace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.shipping import wheel, wheelhouse

if TYPE_CHECKING:
    from streamops.bundle import Bundle

ENTRYPOINT = Path("jobs") / "stream.py"
# The nightly compaction's job runs (streamops.compaction.databricks_job) start this one.
COMPACT_ENTRYPOINT = Path("jobs") / "compact.py"
# The checkpoint check's runs (streamops.checkpoint.on_cluster) start this one.
CHECK_ENTRYPOINT = Path("jobs") / "check.py"


@dataclass(frozen=True)
class Upload:
    source: Path
    destination: str
    sha256: str
    size: int

    def as_dict(self, base: Path | None = None) -> dict[str, str]:
        """The render's form; `source` relative to `base` (the project folder) when under it."""
        source = self.source
        if base is not None and source.is_relative_to(base):
            source = source.relative_to(base)
        return {"source": str(source), "destination": self.destination, "sha256": self.sha256}


@dataclass(frozen=True)
class Artifacts:
    """Remote paths of the job's code and configuration, and the uploads that put them there."""

    entrypoint: str
    bundle_file: str
    wheel: str
    compact_entrypoint: str = ""
    check_entrypoint: str = ""
    # Wheelhouse plan: the dependencies' wheels, installed before the project's wheel.
    dependency_wheels: tuple[str, ...] = ()
    uploads: tuple[Upload, ...] = ()

    def libraries(self) -> list[dict[str, Any]]:
        """Jobs API library specs: every dependency wheel first (wheelhouse), then the wheel."""
        return [{"whl": p} for p in (*self.dependency_wheels, self.wheel)]


def workspace_root(bundle: Bundle) -> str:
    """The project's folder in the workspace (`databricks.workspace_root`)."""
    root = bundle.target.databricks_or_default.workspace_root
    return (root or f"/Workspace/Shared/{bundle.spec.project}").rstrip("/")


def artifact_root(bundle: Bundle) -> str:
    root = bundle.target.databricks_or_default.artifact_root
    return root or workspace_root(bundle) + "/.streamops/artifacts"


def project_root(bundle: Bundle) -> Path:
    """The project whose code is shipped: the folder of bundle.yml when it is a streamops
    project (pyproject.toml + jobs/), else the checkout this streamops runs from (a bundle kept
    on its own, next to the DAGs, ships the code that runs it)."""
    here = bundle.path.resolve().parent
    if (here / "pyproject.toml").is_file() and (here / ENTRYPOINT).is_file():
        return here
    import streamops

    checkout = Path(streamops.__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / ENTRYPOINT).is_file():
        return checkout
    return here


def cache_dir(bundle: Bundle) -> Path:
    """Where the wheel is built and the wheelhouse kept: the target's state folder
    (`Bundle.state_dir`), never the project on a Databricks target (a DAG folder may be
    read-only)."""
    return bundle.state_dir


def upload_for(path: Path, root: str, name: str | None = None) -> Upload:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return Upload(path, f"{root}/{digest[:16]}/{name or path.name}", digest, len(data))


def prepare_command(bundle: Bundle, job_key: str | None) -> str:
    job = job_key or next(iter(bundle.spec.jobs), "<job>")
    return f"streamops deploy --job {job} --target {bundle.target_name} --prepare"


def collect(bundle: Bundle, job_key: str | None = None, *, prepare: bool = False) -> Artifacts:
    """The artifacts of `bundle` for its target: wheel built (cached), nothing uploaded.

    With `dependencies: wheelhouse`, the wheelhouse must have been prepared before, unless
    `prepare` (which may download from the package index).
    """
    root = artifact_root(bundle)
    project = project_root(bundle)
    entry_file = project / ENTRYPOINT
    if not entry_file.is_file():
        from streamops.errors import DeployError

        raise DeployError(
            f"{entry_file} is missing: it is the entrypoint every Databricks job runs. Fix: keep "
            "jobs/stream.py beside bundle.yml (as in the streamops project)"
        )
    entry = upload_for(entry_file, root)
    compact_file = project / COMPACT_ENTRYPOINT
    compact = upload_for(compact_file, root) if compact_file.is_file() else None
    check_file = project / CHECK_ENTRYPOINT
    check = upload_for(check_file, root) if check_file.is_file() else None
    bundle_up = upload_for(bundle.path.resolve(), root, "bundle.yml")
    whl = upload_for(wheel.build_wheel(project, cache_dir(bundle)), root)
    deps: list[Upload] = []
    if bundle.target.databricks_or_default.dependencies == "wheelhouse":
        python = wheelhouse.python_for_runtime(bundle.target.cluster.spark_version or "")
        if prepare:
            found = wheelhouse.prepare(project, cache_dir(bundle), python)
        else:
            cmd = prepare_command(bundle, job_key)
            found = wheelhouse.load(project, cache_dir(bundle), python, command=cmd)
        deps = [upload_for(p, root) for p in found]
    return Artifacts(
        entrypoint=entry.destination,
        bundle_file=bundle_up.destination,
        wheel=whl.destination,
        dependency_wheels=tuple(d.destination for d in deps),
        uploads=(whl, *deps, entry, *(u for u in (compact, check) if u), bundle_up),
        compact_entrypoint=compact.destination if compact else "",
        check_entrypoint=check.destination if check else "",
    )
