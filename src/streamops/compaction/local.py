"""The delta-rs engine: run a CompactionPlan with optimize.compact / optimize.z_order / vacuum.

Streaming writers keep committing while this runs. delta-rs commits an OPTIMIZE only if no
concurrent commit removed a file it rewrote (appends never conflict); when one did, the commit
fails and the whole step is retried on a fresh snapshot, with exponential backoff, a bounded
number of times. App-transaction versions (the streams' exactly-once bookkeeping) live in the
log's `txn` actions, which OPTIMIZE and VACUUM carry over untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from streamops.compaction.log import MARKER, Marker
from streamops.compaction.plan import CompactionPlan, partition_filters
from streamops.errors import CompactionError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; `sleep` is injected so tests do not wait."""

    max_retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * (2**attempt)))


@dataclass(frozen=True)
class StepResult:
    metrics: dict[str, Any]
    retries: int


def is_conflict(exc: BaseException) -> bool:
    """A concurrent commit won: retrying on a fresh snapshot can succeed."""
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, CommitFailedError)


def with_retries(
    step: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    retryable: Callable[[BaseException], bool] = is_conflict,
) -> tuple[T, int]:
    """Run `step`; on a commit conflict retry up to policy.max_retries times; (result, retries)."""
    attempt = 0
    while True:
        try:
            return step(), attempt
        except Exception as exc:
            if not retryable(exc):
                raise
            if attempt >= policy.max_retries:
                raise CompactionError(
                    f"{what}: a concurrent commit conflicted {attempt + 1} times in a row "
                    f"({exc}). Fix: run again later, or raise compaction.max_retries in bundle.yml"
                ) from exc
            policy.sleep(policy.delay(attempt))
            attempt += 1


def optimize(
    plan: CompactionPlan,
    *,
    run_id: str,
    policy: RetryPolicy,
    storage_options: dict[str, str] | None = None,
) -> StepResult:
    """Bin-pack (or Z-order) the planned partitions in one commit stamped with the run's marker."""
    from deltalake import CommitProperties, DeltaTable

    marker = Marker(run_id=run_id, read_version=plan.read_version, deferred=plan.deferred)
    props = CommitProperties(custom_metadata={MARKER: marker.to_json()})
    filters = partition_filters(plan)

    def step() -> dict[str, Any]:
        # A fresh snapshot each attempt: a retry must see what the winning commit did.
        dt = DeltaTable(plan.location, storage_options=storage_options)
        if plan.zorder_by:
            return dict(
                dt.optimize.z_order(
                    list(plan.zorder_by),
                    partition_filters=filters,
                    target_size=plan.target_file_size,
                    commit_properties=props,
                )
            )
        return dict(
            dt.optimize.compact(
                partition_filters=filters,
                target_size=plan.target_file_size,
                commit_properties=props,
            )
        )

    metrics, retries = with_retries(step, policy, what=f"OPTIMIZE {plan.table}")
    return StepResult(metrics, retries)


def vacuum(
    plan: CompactionPlan,
    *,
    policy: RetryPolicy,
    storage_options: dict[str, str] | None = None,
) -> StepResult:
    """VACUUM with the plan's retention; Delta's own retention check stays enforced."""
    from deltalake import DeltaTable

    assert plan.vacuum is not None
    hours = plan.vacuum.retention_hours

    def step() -> list[str]:
        dt = DeltaTable(plan.location, storage_options=storage_options)
        return list(
            dt.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=True)
        )

    deleted, retries = with_retries(step, policy, what=f"VACUUM {plan.table}")
    return StepResult({"files_deleted": len(deleted)}, retries)
