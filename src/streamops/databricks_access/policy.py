"""One retry policy for every Databricks call, whichever client makes it.

A call is worth another attempt when the workspace was throttling (HTTP 429), briefly down (5xx),
did not answer in time, or could not be reached; a Retry-After header (429, 503) sets the wait,
capped, else the backoff does. The rule is read from the error chain, so it is the same for the
Airflow provider's errors (a requests HTTPError under a `DatabricksApiError`) and databricks-sdk's
typed errors. Waits run on the policy's `Clock` (`streamops.clock.retried`): a FakeClock in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from streamops.clock import REAL, Backoff, Clock, retried

T = TypeVar("T")

# Statuses a request is sent again for; 400 COULD_NOT_ACQUIRE_LOCK is the Jobs API's own "busy"
# (the provider retries it too).
RETRY_STATUSES = (429, 500, 502, 503, 504)
BUSY_CODE = "COULD_NOT_ACQUIRE_LOCK"
# The provider's own default waits: 1 s, doubled per attempt, at most 8 s.
PROVIDER_BACKOFF = Backoff(first_s=1.0, max_s=8.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts in all, the backoff between them, the longest Retry-After honoured, the clock."""

    attempts: int = 3
    backoff: Backoff = PROVIDER_BACKOFF
    retry_after_cap_s: float = 120.0
    clock: Clock = REAL

    def run(
        self,
        step: Callable[[], T],
        *,
        give_up: Callable[[int, BaseException], BaseException] | None = None,
    ) -> T:
        """Run `step`, retrying transient failures; `give_up(tries, exc)` builds the final error."""
        return retried(
            step,
            attempts=self.attempts,
            retryable=transient,
            backoff=self.backoff,
            clock=self.clock,
            retry_after=self.retry_after,
            give_up=give_up,
        )

    def retry_after(self, exc: BaseException) -> float | None:
        """The far side's Retry-After for `exc`, capped; None when it named no wait."""
        seconds = retry_after_s(exc)
        return None if seconds is None else min(seconds, self.retry_after_cap_s)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the errors it was raised from (`raise ... from`), outermost first."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__


def _status(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of a requests error that carries a response."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return None
    try:
        code = str(response.json().get("error_code", ""))  # type: ignore[union-attr]
    except Exception:  # not JSON: the status alone decides
        code = ""
    return status, code


def _sdk_transient(exc: BaseException) -> bool:
    try:
        from databricks.sdk import errors
    except ImportError:  # pragma: no cover - the hook works without databricks-sdk
        return False
    kinds = (
        errors.TooManyRequests,
        errors.TemporarilyUnavailable,
        errors.InternalError,
        errors.DeadlineExceeded,
    )
    return isinstance(exc, kinds)


def transient(exc: BaseException) -> bool:
    """True for throttling, a server error, a timeout or a lost connection anywhere in the chain."""
    import requests

    for e in causes(exc):
        if isinstance(e, requests.ConnectionError | requests.Timeout):
            return True
        got = _status(e)
        if got is not None and (got[0] in RETRY_STATUSES or got == (400, BUSY_CODE)):
            return True
        if _sdk_transient(e):
            return True
    return False


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (Retry-After), from a response or a databricks-sdk error."""
    for e in causes(exc):
        secs = getattr(e, "retry_after_secs", None)  # databricks-sdk reads the header itself
        if isinstance(secs, int | float):
            return float(secs)
        response = getattr(e, "response", None)
        header = response.headers.get("Retry-After") if response is not None else None
        if header:
            try:
                return float(header)
            except ValueError:  # an HTTP date: rare for these APIs, keep the backoff
                return None
    return None
