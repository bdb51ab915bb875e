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
    if not bundle.target.checkpoints.guard:
        from streamops.checkpoint.registry import guard_off_message

        return [
            Problem(
                bundle.path.name,
                None,
                f"targets.{bundle.target_name}.checkpoints.guard",
                guard_off_message(bundle, job_name).removeprefix("warning: "),
                "set it to true (the default) to have deploys and starts checked",
                severity="warning",
            )
        ]
    try:
        so = storage_options_for(bundle.checkpoint_root, bundle)
        if so is None:
            return [
                Problem(
                    bundle.path.name,
                    None,
                    where,
                    f"checkpoint guard skipped: {bundle.checkpoint_root} is not reachable from here",
                    f"set ${STORAGE_OPTIONS_ENV} to the adlfs options of the checkpoint storage",
                    severity="warning",
                )
            ]
        guard(bundle, job_name, event="deploy", storage_options=so)
    except CheckpointError as exc:
        msg, _, fix = str(exc).partition(" Fix: ")
        return [Problem(bundle.path.name, None, where, msg, fix)]
    return []


def restart_blockers(bundle: Bundle, job_name: str) -> list[str]:
    """Why a changed streaming job must not be restarted yet; [] once its checkpoints checked out.

    A restart is the moment a damaged or unreachable checkpoint turns into lost or duplicated
    data, so it waits for the same structural checks as `streamops checkpoint check` (the reset
    guard itself already passed in `check_before_deploy`).
    """
    if not bundle.target.checkpoints.guard:
        return []  # turned off in bundle.yml; check_before_deploy says so
    from streamops.checkpoint.checks import check
    from streamops.checkpoint.registry import STORAGE_OPTIONS_ENV, queries_of, storage_options_for

    so = storage_options_for(bundle.checkpoint_root, bundle)
    if so is None:
        return [
            f"its checkpoints under {bundle.checkpoint_root} cannot be read from here, so "
            f"they were not checked. Fix: set ${STORAGE_OPTIONS_ENV} to the adlfs options of "
            "that storage and deploy again, or restart it (action=restart) once "
            f"`streamops checkpoint check {bundle.checkpoint_root}/<query name> --target "
            f"{bundle.target_name}` passes for each of its queries"
        ]
    out: list[str] = []
    for q in queries_of(bundle, job_name):
        report = check(q.checkpoint, so)
        if report.unreadable and "no such checkpoint folder" not in report.unreadable:
            out.append(f"{q.query_name}: {report.unreadable}")  # a never-run query has none
        out += [
            f"{q.query_name}: {f.code} {f.file}: {f.message}. Fix: {f.fix}" for f in report.errors
        ]
    return out
