"""When a job's queries run a micro-batch: bundle.yml's trigger, or a catch-up run."""

from __future__ import annotations

from typing import Any

from streamops.bundle.models import Job
from streamops.errors import UsageError

# Keyword arguments of DataStreamWriter.trigger, e.g. {"processingTime": "30 seconds"} or
# {"availableNow": True}: what a caller (a benchmark, a rehearsal) may hand in instead.
Trigger = dict[str, Any]


def job_trigger(job: Job, *, available_now: bool | None = None) -> Trigger:
    """The job's trigger; `available_now` True forces a catch-up run (to the end, then stop),
    False a continuous one, None keeps bundle.yml's."""
    catch_up = job.trigger.available_now if available_now is None else available_now
    if catch_up:
        return {"availableNow": True}
    if job.trigger.processing_time is None:
        raise UsageError(
            f"job '{job.query_name}' has no `trigger.processing_time` to run continuously with; "
            "run it as a catch-up (--available-now) or give it a processing_time"
        )
    return {"processingTime": job.trigger.processing_time.text}


def is_catch_up(trigger: Trigger) -> bool:
    """Whether the query stops on its own once it has read everything there was at its start."""
    return bool(trigger.get("availableNow") or trigger.get("once"))
