"""Time, in one place: every wait and retry in streamops goes through `poll` or `retried`.

Modelled on databricks-sdk's `retries.py`: a small `Clock` (monotonic time and sleep) injected
where a test needs to run a wait or a backoff without sleeping (`FakeClock`). No module outside
this one calls `time.sleep`; a wait that cannot finish says what it waited for and how long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """Monotonic seconds and a way to wait; injected so tests never sleep."""

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The process's monotonic clock."""

    def time(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class FakeClock:
    """A clock that only moves when slept on: tests run waits and backoffs instantly."""

    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


REAL = RealClock()


class WaitTimeout(TimeoutError):
    """`poll` ran out of time; the message names what it waited for."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: `first_s`, doubled per attempt, capped at `max_s`."""

    first_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based)."""
        return float(min(self.max_s, self.first_s * self.factor**attempt))


def poll(
    check: Callable[[], T | None],
    *,
    timeout_s: float | None,
    interval_s: float,
    what: str,
    clock: Clock = REAL,
) -> T:
    """Call `check` every `interval_s` until it returns something other than None; return that.

    `timeout_s=None` waits for ever (a caller that has its own way out, e.g. a query that ends).
    Raises `WaitTimeout` naming `what` once `timeout_s` has passed without an answer.
    """
    deadline = None if timeout_s is None else clock.time() + timeout_s
    while True:
        got = check()
        if got is not None:
            return got
        if deadline is not None and clock.time() >= deadline:
            raise WaitTimeout(f"{what}: no answer within {timeout_s:g} s")
        clock.sleep(interval_s)


class RetryAfter(Exception):
    """Raised by a step (or mapped by `retry_after`) when the far side says when to come back."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds:g} s")
        self.seconds = seconds


def retried(
    step: Callable[[], T],
    *,
    attempts: int,
    retryable: Callable[[BaseException], bool],
    backoff: Backoff = Backoff(),
    clock: Clock = REAL,
    retry_after: Callable[[BaseException], float | None] | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    give_up: Callable[[int, BaseException], BaseException] | None = None,
) -> T:
    """Run `step`, retrying what `retryable` accepts up to `attempts` tries in all.

    Between tries it waits the far side's `retry_after(exc)` when that names a delay (HTTP
    Retry-After), else the backoff's. `on_retry(attempt, exc, delay)` reports each retry (progress
    on long work); after the last try `give_up(tries, exc)` builds the error raised (default: the
    last exception itself), so the caller's message names the fix.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    attempt = 0
    while True:
        try:
            return step()
        except Exception as exc:
            if not retryable(exc):
                raise
            if attempt + 1 >= attempts:
                if give_up is None:
                    raise
                raise give_up(attempt + 1, exc) from exc
            hinted = retry_after(exc) if retry_after is not None else None
            if hinted is None and isinstance(exc, RetryAfter):
                hinted = exc.seconds
            delay = backoff.delay(attempt) if hinted is None else max(0.0, hinted)
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            clock.sleep(delay)
            attempt += 1


def any_of(*kinds: type[BaseException]) -> Callable[[BaseException], bool]:
    """A `retryable` predicate accepting the given exception types."""
    return lambda exc: isinstance(exc, kinds)
