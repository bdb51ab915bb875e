"""Retries of compaction statements that lose a commit race with a streaming writer.

Streaming writers keep committing while compaction runs. Delta commits an OPTIMIZE only if no
concurrent commit removed a file it rewrote (appends never conflict); when one did, the
statement fails with a Concurrent*Exception and is retried on a fresh snapshot, with
exponential backoff, a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from streamops.clock import REAL, Backoff, Clock, retried
from streamops.errors import CompactionError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff on `clock` (a FakeClock in tests: no waiting)."""

    max_retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    clock: Clock = REAL

    @property
    def backoff(self) -> Backoff:
        return Backoff(first_s=self.backoff_s, max_s=self.max_backoff_s)


def with_retries(
    step: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    retryable: Callable[[BaseException], bool],
) -> tuple[T, int]:
    """Run `step`; on a commit conflict retry up to policy.max_retries times; (result, retries)."""
    retries = 0

    def count(attempt: int, _exc: BaseException, _delay: float) -> None:
        nonlocal retries
        retries = attempt

    def give_up(tries: int, exc: BaseException) -> CompactionError:
        return CompactionError(
            f"{what}: a concurrent commit conflicted {tries} times in a row "
            f"({exc}). Fix: run again later, or raise compaction.max_retries in bundle.yml"
        )

    result = retried(
        step,
        attempts=policy.max_retries + 1,
        retryable=retryable,
        backoff=policy.backoff,
        clock=policy.clock,
        on_retry=count,
        give_up=give_up,
    )
    return result, retries
