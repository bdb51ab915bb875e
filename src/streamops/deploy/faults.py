"""Workspace faults as one line each: what happened, at which host, and the fix.

The provider hook and databricks-sdk report a failed call in their own ways (an AirflowException
chained to tenacity's RetryError chained to a requests error; a typed sdk error; a TimeoutError
after the sdk's retries). `explained` finds the root cause in that chain and raises a DeployError
that names the workspace and what to do, so the CLI and the Airflow task print one line and never
a traceback. Errors that are not about reaching the workspace pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from streamops.errors import DeployError

NOTHING_TWICE = "nothing was created, uploaded or started twice"


@dataclass(frozen=True)
class Remote:
    """Where the calls went: for the messages only."""

    host: str  # scheme://host[:port]
    credentials: str  # where the host and token come from (connection id, bundle.yml path)
    attempts: int
    timeout_s: float


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        last = getattr(e, "last_attempt", None)  # tenacity.RetryError
        if last is not None and last.failed:
            todo.append(last.exception())
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)


def _status(e: BaseException) -> int | None:
    for attr in ("http_status_code", "status_code"):
        v = getattr(e, attr, None)
        if isinstance(v, int):
            return v
    response = getattr(e, "response", None)
    code = getattr(response, "status_code", None)
    if isinstance(code, int):
        return code
    try:
        from databricks.sdk import errors as sdk
    except ImportError:  # pragma: no cover - depends on install
        return None
    table: tuple[tuple[type[BaseException], int], ...] = (
        (sdk.Unauthenticated, 401),
        (sdk.PermissionDenied, 403),
        (sdk.TooManyRequests, 429),
        (sdk.TemporarilyUnavailable, 503),
        (sdk.InternalError, 500),
    )
    return next((code for cls, code in table if isinstance(e, cls)), None)


def classify(exc: BaseException) -> str | None:
    """unreachable / timeout / 401 / 403 / 429 / 5xx for a failed call, or None."""
    import requests

    kinds: list[str] = []
    for e in _chain(exc):
        if isinstance(e, requests.Timeout):
            kinds.append("timeout")
        elif isinstance(e, requests.ConnectionError):
            kinds.append("unreachable")
        status = _status(e)
        if status in (401, 403, 429):
            kinds.append(str(status))
        elif status is not None and status >= 500:
            kinds.append("5xx")
    # The deepest cause is the most specific (a ReadTimeout is also a ConnectionError's kin).
    for kind in ("timeout", "401", "403", "429", "unreachable", "5xx"):
        if kind in kinds:
            return kind
    return None


def explain(exc: BaseException, remote: Remote) -> DeployError | None:
    kind = classify(exc)
    host, cred, n = remote.host, remote.credentials, remote.attempts
    messages = {
        "unreachable": f"cannot reach the Databricks workspace at {host} (no connection after "
        f"{n} attempts). Fix: check the host in {cred} and that this machine reaches it (VPN, "
        "proxy, firewall), then deploy again",
        "timeout": f"the Databricks workspace at {host} did not answer within "
        f"{remote.timeout_s:g} s ({n} attempts; {NOTHING_TWICE}). Fix: check the workspace's "
        "status, or allow longer answers with --timeout, then deploy again",
        "401": f"the Databricks workspace at {host} refused the token (HTTP 401). Fix: renew the "
        f"token in {cred} (a personal access token or a service principal's OAuth secret), "
        "then deploy again",
        "403": f"the Databricks workspace at {host} denied the call (HTTP 403): the token's "
        "identity lacks a permission. Fix: grant it job creation (or CAN_MANAGE on the job) "
        f"and write access to the artifact folder, or use another token in {cred}",
        "429": f"the Databricks workspace at {host} kept throttling requests (HTTP 429) after "
        f"{n} attempts ({NOTHING_TWICE}). Fix: wait a few minutes, run fewer deploys at once, "
        "then deploy again",
        "5xx": f"the Databricks workspace at {host} kept failing with a server error (HTTP 5xx) "
        f"after {n} attempts ({NOTHING_TWICE}). Fix: check the workspace's status, then deploy "
        "again",
    }
    return DeployError(messages[kind]) if kind else None


@contextmanager
def explained(remote: Remote) -> Iterator[None]:
    """Turn a failed workspace call into one DeployError line naming the host and the fix."""
    try:
        yield
    except Exception as exc:
        mapped = explain(exc, remote)
        if mapped is None:
            raise
        raise mapped from None
