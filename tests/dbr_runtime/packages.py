"""What the local Databricks runtime takes from the project's venv: the Python packages that
Databricks Runtime 18 preinstalls and that streamops relies on, and the closure walk that the
runtime layer and the wheelhouse share.

Source of the list: the Databricks Runtime 18 release notes, "System environment / Installed
Python libraries", as published in machine-readable form by Databricks in the
`databricks/environments` repository (`python/dbr/18.x-scala2.13/pyproject.toml`, the constraint
list of the runtime's preinstalled packages). pyspark, py4j and Delta Lake's `delta` module are
not in that list: they are the runtime's Spark itself (`/databricks/spark/python`).

The versions are the project's pins (requirements.lock), not the runtime's: DBR 18 ships e.g.
deltalake 1.1, fsspec 2023.5 and pydantic 2.10, which this machine cannot hold beside the pins.
What the local runtime proves is which packages a job may import without declaring them.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterable

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The runtime's Spark (not pip-listed by Databricks: part of the runtime image).
RUNTIME_SPARK = ("pyspark", "py4j", "delta-spark")

# DBR 18's preinstalled packages that streamops (its dependencies, Spark, databricks-sdk, the
# Azure clients) imports directly or through a dependency, by distribution name.
RUNTIME_PACKAGES = (
    *RUNTIME_SPARK,
    # pandas and Arrow (pyspark's pandas/Arrow paths, deltalake)
    "numpy",
    "pandas",
    "python-dateutil",
    "pytz",
    "tzdata",
    "six",
    "pyarrow",
    # databricks-sdk and HTTP
    "databricks-sdk",
    "google-auth",
    "pyasn1",
    "pyasn1-modules",
    "protobuf",
    "requests",
    "urllib3",
    "idna",
    "certifi",
    "charset-normalizer",
    "importlib-metadata",
    "zipp",
    # settings and console
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "annotated-doc",
    "typing-extensions",
    "pyyaml",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "shellingham",
    # fsspec, aiohttp (adlfs's transport) and the Azure SDK
    "fsspec",
    "aiohttp",
    "aiosignal",
    "aiohappyeyeballs",
    "attrs",
    "frozenlist",
    "multidict",
    "propcache",
    "yarl",
    "azure-core",
    "azure-identity",
    "azure-storage-blob",
    "azure-storage-file-datalake",
    "isodate",
    "msal",
    "msal-extensions",
    "pyjwt",
    "cryptography",
    "cffi",
    "pycparser",
    # delta-rs
    "deltalake",
    "arro3-core",
    "deprecated",
    "wrapt",
)


def closure(requirements: Iterable[str]) -> dict[str, md.Distribution]:
    """Every installed distribution the requirements need (markers evaluated for this Python,
    extras followed), by canonical name; a requirement not installed here is a LookupError."""
    found: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise LookupError(
                f"{req} is not installed in this venv; run `make setup` (it installs "
                "requirements.lock)"
            ) from None
        found[name] = dist
        todo += [r for r in map(Requirement, dist.requires or []) if _applies(r, req.extras)]
    return found


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    try:
        return any(req.marker.evaluate({"extra": e}) for e in ("", *extras))
    except UndefinedEnvironmentName:
        return False


def layer_distributions() -> dict[str, md.Distribution]:
    """The runtime list and what the project's versions of it need (e.g. typing-inspection for
    pydantic 2.14, where DBR's 2.10 needs nothing more): the runtime layer's contents."""
    return closure(RUNTIME_PACKAGES)
