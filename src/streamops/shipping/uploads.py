"""Put the deploy's artifacts into the workspace with databricks-sdk, each at most once.

A workspace folder (`/Workspace/...`) is written with the Workspace API (`workspace.mkdirs`, then
`workspace.upload` with format AUTO: a `.py` without a notebook header stays a file) and checked
with `workspace.get_status`; a Unity Catalog volume (`/Volumes/...`) with the Files API
(`files.upload`: one PUT, parent folders created by the server) and checked with
`files.get_metadata` (HEAD). A destination that exists with the expected size is already uploaded:
its name carries the content hash.

Retries are done here, not by the sdk: before each new attempt the destination is checked again,
so an upload whose answer was lost (a timeout after the server stored the file) is not sent twice.
The sdk keeps its own waits (it honours Retry-After on 429/503) but gives up after one wait.
The client is built from the same Airflow connection as the Jobs API hook (host, token).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from streamops.errors import DeployError

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook
    from databricks.sdk import WorkspaceClient

    from streamops.shipping.artifacts import Upload

# The Workspace API's import takes at most 10 MB (MAX_NOTEBOOK_SIZE_EXCEEDED beyond).
WORKSPACE_IMPORT_LIMIT = 10 * 1024 * 1024
T = TypeVar("T")


def workspace_url(hook: DatabricksHook) -> str:
    """scheme://host[:port] of the hook's connection (the same one the Jobs API calls use)."""
    return str(hook._endpoint_url("")).rstrip("/")


def workspace_client(hook: DatabricksHook) -> WorkspaceClient:
    """A databricks-sdk client for the hook's workspace and token (no network until first call)."""
    try:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config
    except ImportError as exc:  # pragma: no cover - depends on install
        from streamops.errors import MissingDependencyError

        raise MissingDependencyError("databricks-sdk", "databricks") from exc
    cfg = Config(
        host=workspace_url(hook),
        token=hook._get_token(raise_error=True),
        auth_type="pat",
        http_timeout_seconds=hook.timeout_seconds,
        # The sdk waits once (Retry-After or its backoff), then hands the error back to `_attempts`.
        retry_timeout_seconds=1,
        # One PUT per file: the experimental client's multipart and presigned-URL paths are not
        # needed for wheels, and a single request is what the Files API documents.
        disable_experimental_files_api_client=True,
    )
    return WorkspaceClient(config=cfg)


def _is_volume(path: str) -> bool:
    return path.startswith("/Volumes/")


def check_size(uploads: list[Upload]) -> None:
    """Refuse, before any call, a file the Workspace API cannot take (no partial deploy)."""
    big = [u for u in uploads if not _is_volume(u.destination) and u.size > WORKSPACE_IMPORT_LIMIT]
    if big:
        names = ", ".join(f"{u.source.name} ({u.size / 2**20:.1f} MB)" for u in big)
        raise DeployError(
            f"{names}: a workspace folder takes files of at most 10 MB through the Workspace "
            "API. Fix: set `artifact_root: /Volumes/<catalog>/<schema>/<volume>/streamops` for "
            "this target in bundle.yml (a Unity Catalog volume takes large files)"
        )


def _transient(exc: BaseException) -> bool:
    """A failure worth another attempt: throttled, 5xx, timeout, connection lost."""
    import requests
    from databricks.sdk.errors import InternalError, TemporarilyUnavailable, TooManyRequests

    # TimeoutError: the sdk's own retry budget ran out (its cause says on what).
    transient = (TimeoutError, requests.RequestException, TooManyRequests, InternalError,
                 TemporarilyUnavailable)  # fmt: skip
    return isinstance(exc, transient)


def _attempts(hook: DatabricksHook, call: Callable[[], T]) -> T:
    last: BaseException | None = None
    for _ in range(max(1, hook.retry_limit)):
        try:
            return call()
        except Exception as exc:
            if not _transient(exc):
                raise
            last = exc
    assert last is not None
    raise last


def remote_size(ws: WorkspaceClient, path: str) -> int | None:
    """Size of the file at `path`, or None when there is none."""
    from databricks.sdk.errors import NotFound

    try:
        if _is_volume(path):
            meta = ws.files.get_metadata(path)
            return int(meta.content_length) if meta.content_length is not None else -1
        info = ws.workspace.get_status(path)
        return int(info.size) if info.size is not None else -1
    except NotFound:
        return None


def present(hook: DatabricksHook, ws: WorkspaceClient, up: Upload) -> bool:
    size = _attempts(hook, lambda: remote_size(ws, up.destination))
    return size == up.size


def _put(ws: WorkspaceClient, up: Upload) -> None:
    from databricks.sdk.service.workspace import ImportFormat

    data = up.source.read_bytes()
    if _is_volume(up.destination):
        ws.files.upload(up.destination, io.BytesIO(data), overwrite=True)
        return
    ws.workspace.mkdirs(up.destination.rsplit("/", 1)[0])
    # overwrite: a file of the wrong size (an upload cut short) is replaced by the right bytes.
    ws.workspace.upload(up.destination, data, format=ImportFormat.AUTO, overwrite=True)


def upload(hook: DatabricksHook, ws: WorkspaceClient, up: Upload) -> None:
    """Upload one file; on a retry, first look whether the last attempt got there after all."""
    first = True

    def attempt() -> Any:
        nonlocal first
        if not first and present(hook, ws, up):
            return None
        first = False
        _put(ws, up)
        return None

    _attempts(hook, attempt)


def ensure(hook: DatabricksHook, ups: list[Upload]) -> list[Upload]:
    """Upload those of `ups` that are not at their destination yet; returns what was sent."""
    check_size(ups)
    ws = workspace_client(hook)
    missing = [up for up in ups if not present(hook, ws, up)]
    for up in missing:
        upload(hook, ws, up)
    return missing
