"""bundle.yml -> `load(path, target)` -> one frozen `Bundle`; the single way config enters."""

from streamops.bundle.loader import EMBEDDED, Bundle, default_target, load
from streamops.bundle.models import BundleSpec, Job, Source, Table, Target

__all__ = [
    "EMBEDDED",
    "Bundle",
    "BundleSpec",
    "Job",
    "Source",
    "Table",
    "Target",
    "default_target",
    "load",
]
