"""databricks-sdk's configuration for an access's login, its own retries held to one attempt.

Imported only by `DatabricksAccess.workspace()`: it imports databricks-sdk (an extra).
"""

from __future__ import annotations

from databricks.sdk.clock import Clock as SdkClock
from databricks.sdk.config import Config

from streamops.clock import Clock
from streamops.databricks_access.login import Login

# databricks-sdk's retry budget per request, used up by its first wait on `OneAttempt`.
SDK_RETRY_BUDGET_S = 1


class OneAttempt(SdkClock):
    """databricks-sdk's clock: the policy clock's time plus every wait skipped, and a wait is
    skipped by jumping past the sdk's retry budget, so its loop stops after one attempt (its
    retries cannot be switched off) and hands the error to the access's policy."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._skipped = 0.0

    def time(self) -> float:
        return self._clock.time() + self._skipped

    def sleep(self, seconds: float) -> None:
        self._skipped += max(0.0, seconds) + SDK_RETRY_BUDGET_S


def sdk_config(login: Login, *, timeout_s: int, clock: Clock) -> Config:
    """The `WorkspaceClient` config for `login` (auth type pinned); each request one attempt,
    `timeout_s` long."""
    return Config(
        **login.sdk_config(),
        http_timeout_seconds=timeout_s,
        retry_timeout_seconds=SDK_RETRY_BUDGET_S,
        clock=OneAttempt(clock),
        # One PUT per file: the experimental files client's multipart and presigned-URL paths are
        # not needed for wheels, and a single request is what the Files API documents.
        disable_experimental_files_api_client=True,
    )
