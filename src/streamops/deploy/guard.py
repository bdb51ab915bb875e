"""Checks that run before every deploy; a deploy with an error-level problem does not happen.

The checkpoint reset guard (DESIGN.md: "detecting a checkpoint reset before a deploy") compares
each query's checkpoint location, query name and query id with what the registry recorded at the
last deploy or start (streamops.checkpoint.registry), refuses a deploy that would start a query
from scratch, and records the deploy when it passes. Where the checkpoint storage cannot be
reached from here (no $STREAMOPS_STORAGE_OPTIONS for a remote root) it is a warning, and the
same guard still runs at job start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.errors import CheckpointError, Problem

if TYPE_CHECKING:
    from streamops.bundle import Bundle


def check_before_deploy(bundle: Bundle, job_name: str) -> list[Problem]:
    """Problems that must stop a deploy of `job_name`."""
    from streamops.checkpoint.registry import STORAGE_OPTIONS_ENV, guard, storage_options_for

    where = f"jobs.{job_name}"
    try:
        so = storage_options_for(bundle.checkpoint_root, bundle)
        if so is None:
            return [Problem(
                bundle.path.name, None, where,
                f"checkpoint guard skipped: {bundle.checkpoint_root} is not reachable from here",
                f"set ${STORAGE_OPTIONS_ENV} to the adlfs options of the checkpoint storage",
                severity="warning",
            )]  # fmt: skip
        guard(bundle, job_name, event="deploy", storage_options=so)
    except CheckpointError as exc:
        msg, _, fix = str(exc).partition(" Fix: ")
        return [Problem(bundle.path.name, None, where, msg, fix)]
    return []
