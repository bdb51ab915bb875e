"""Retries of compaction statements that lose a commit race with a streaming writer.

Streaming writers keep committing while compaction runs. Delta commits an OPTIMIZE only if no
concurrent commit removed a file it rewrote (appends never conflict); when one did, the
statement fails with a Concurrent*Exception and is retried on a fresh snapshot, with
exponential backoff, a bounded number of times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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


def with_retries(
    step: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    retryable: Callable[[BaseException], bool],
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
