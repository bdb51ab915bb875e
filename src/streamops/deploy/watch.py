"""What the watchdog watches: every deployed query that has started, from the deploy record.

The deploy record is the checkpoint registry (streamops.checkpoint.registry): a deploy records
each query of the job (event "deploy"), and every start of the job on its cluster records them
again (event "start"), so the registry's last record of a query says which came last. A query
whose last record is a start must have reported since; one whose last record is a deploy has not
started since (a paused, never-run or not-yet-started job): nothing is expected of it, and it is
not paged. Why the registry and not the Jobs API's runs: it is there on every target (the local
one has no Jobs API), it is written by the run itself once it really starts (a run that never
gets a cluster writes nothing), and it needs no Databricks login on the Airflow side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.checkpoint.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployed:
    """One query of a job in the bundle, as the deploy record last saw it."""

    job: str
    query: str
    event: str  # "deploy" | "start"
    at: datetime


def deployed_in(bundle: Bundle, registry: Registry) -> list[Deployed]:
    """The bundle's queries that `registry` holds a record of (jobs no longer in the bundle are
    left out: they are not deployed from it any more)."""
    return [
        Deployed(job, rec.query_name, rec.event, datetime.fromtimestamp(rec.at, UTC))
        for job in bundle.spec.jobs
        for rec in registry.job(job).values()
    ]


def started(deployed: list[Deployed]) -> dict[tuple[str, str], datetime]:
    """(job, query) -> when it started, for each query whose last record is a start."""
    return {(d.job, d.query): d.at for d in deployed if d.event == "start"}


def read_deployed(bundle: Bundle, storage_options: dict[str, Any] | None = None) -> list[Deployed]:
    """The deploy record of the bundle's target; CheckpointError when it cannot be read."""
    from streamops.checkpoint.registry import load_registry, registry_path, storage_options_for
    from streamops.errors import CheckpointError

    so = storage_options
    if so is None:
        so = storage_options_for(bundle.checkpoint_root, bundle)
    if so is None:
        raise CheckpointError(
            f"{bundle.checkpoint_root} is not reachable from here (no storage login). Fix: give "
            f"this worker the login of targets.{bundle.target_name}.databricks.storage"
        )
    return deployed_in(bundle, load_registry(registry_path(bundle), so))


def watchdog(
    bundle: Bundle,
    now: datetime | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    **azure_kwargs: Any,
) -> dict[str, Any]:
    """One watchdog round (the streamops_alerts DAG) that also watches every deployed query that
    started, whether or not it ever exported a point (streamops.monitoring.alerts.evaluate)."""
    from streamops.monitoring.alerts.evaluate import watchdog as evaluate_and_page

    try:
        deployed: list[Deployed] | None = read_deployed(bundle, storage_options)
        unknown = None
    except Exception as exc:  # adlfs/azure errors too: said in the log and the summary
        deployed = None
        unknown = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        log.error(
            "watchdog: cannot read the deploy record (%s); only queries seen in the metrics "
            "are watched, so a job that never exported goes unnoticed",
            unknown,
        )
    expected = started(deployed) if deployed is not None else None
    summary = evaluate_and_page(bundle, now, started=expected, **azure_kwargs)
    summary["deploy_record"] = unknown or f"{len(expected or {})} started queries"
    return summary
