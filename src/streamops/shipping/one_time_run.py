"""One-time job runs (`runs/submit`) of this project's code: upload, submit, wait, read the output.

What the nightly compaction (`compaction/databricks_job.py`) and the checkpoint check
(`checkpoint/on_cluster.py`) share: the cluster runs an uploaded entrypoint that prints one result
line; each caller builds its own `runs/submit` body and reads its own line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamops.clock import Clock, WaitTimeout, poll
from streamops.shipping import artifacts, uploads

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.databricks_access import DatabricksAccess
    from streamops.shipping.artifacts import Artifacts

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinishedRun:
    """A one-time run that reached a terminal state, and its first task's output."""

    run_id: int
    url: str
    state: Any  # the provider's RunState
    output: dict[str, Any]  # runs/get-output of the first task (`logs`, `error`, ...)


def run_once(
    access: DatabricksAccess,
    bundle: Bundle,
    payload: Callable[[Artifacts], dict[str, Any]],
    *,
    what: str,
    timeout_s: float,
    poll_s: float,
    clock: Clock | None,
    on_timeout: Callable[[str], Exception],
) -> FinishedRun:
    """Upload what is not there yet, submit `payload(artifacts)`, wait on `clock` for a terminal
    state, and read the output. `what` names the run in messages (`{run_id}` is filled in); a run
    still going after `timeout_s` is cancelled and `on_timeout(message)` is raised."""
    hook = access.hook()
    # The wheel build is cached, so a run with no change uploads nothing.
    arts = artifacts.collect(bundle)
    sent = uploads.ensure(access, list(arts.uploads))
    if sent:
        _log.info("uploaded %s", ", ".join(up.destination for up in sent))
    run_id = hook.submit_run(payload(arts))
    name = what.replace("{run_id}", str(run_id))

    def ended() -> Any:
        state = hook.get_run_state(run_id)
        return state if state.is_terminal else None

    try:
        state = poll(
            ended, timeout_s=timeout_s, interval_s=poll_s, what=name, clock=clock or access.clock
        )
    except WaitTimeout:
        hook.cancel_run(run_id)
        raise on_timeout(
            f"{name} still running after {timeout_s:g} s and was cancelled "
            f"({hook.get_run_page_url(run_id)})"
        ) from None
    run = hook.get_run(run_id)
    tasks = run.get("tasks") or [{"run_id": run_id}]
    output = hook.get_run_output(int(tasks[0]["run_id"]))
    return FinishedRun(run_id, str(run.get("run_page_url", "")), state, output)
