"""Checks that run before every deploy; a deploy with an error-level problem does not happen.

This is the hook where the checkpoint reset guard plugs in (DESIGN.md: "detecting a checkpoint
reset before a deploy"): it will compare the job's checkpoint location and query name with what
the live checkpoint holds and refuse a deploy that would start the query from scratch. Until it
lands, `check_before_deploy` finds nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.errors import Problem


def check_before_deploy(bundle: Bundle, job_name: str) -> list[Problem]:
    """Problems that must stop a deploy of `job_name` (placeholder: none yet)."""
    del bundle, job_name
    return []
