"""Put the deploy's artifacts into the workspace with databricks-sdk, each at most once.

A workspace folder (`/Workspace/...`) is written with the Workspace API (`workspace.mkdirs`, then
`workspace.upload` with format AUTO: a `.py` without a notebook header stays a file) and checked
with `workspace.get_status`; a Unity Catalog volume (`/Volumes/...`) with the Files API
(`files.upload`: one PUT, parent folders created by the server) and checked with
`files.get_metadata` (HEAD). A destination that exists with the expected size is already uploaded:
its name carries the content hash.

Retries are the access's policy (`streamops.databricks_access`: one attempt per sdk request,
retried with backoff or after the far side's Retry-After, on the access's clock), and before each
new attempt the destination is checked again, so an upload whose answer was lost (a timeout after
the server stored the file) is not sent twice. The client is the access's `workspace()`: the same
login as the Jobs API hook.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from streamops.errors import DeployError

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from streamops.databricks_access import DatabricksAccess
    from streamops.shipping.artifacts import Upload

# The Workspace API's import takes at most 10 MB (MAX_NOTEBOOK_SIZE_EXCEEDED beyond).
WORKSPACE_IMPORT_LIMIT = 10 * 1024 * 1024


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


def present(access: DatabricksAccess, up: Upload) -> bool:
    ws = access.workspace()
    return access.retrying(lambda: remote_size(ws, up.destination)) == up.size


def _put(ws: WorkspaceClient, up: Upload) -> None:
    from databricks.sdk.service.workspace import ImportFormat

    data = up.source.read_bytes()
    if _is_volume(up.destination):
        ws.files.upload(up.destination, io.BytesIO(data), overwrite=True)
        return
    ws.workspace.mkdirs(up.destination.rsplit("/", 1)[0])
    # overwrite: a file of the wrong size (an upload cut short) is replaced by the right bytes.
    ws.workspace.upload(up.destination, data, format=ImportFormat.AUTO, overwrite=True)


def upload(access: DatabricksAccess, up: Upload) -> None:
    """Upload one file; on a retry, first look whether the last attempt got there after all."""
    ws = access.workspace()
    first = True

    def attempt() -> None:
        nonlocal first
        if not first and remote_size(ws, up.destination) == up.size:
            return
        first = False
        _put(ws, up)

    access.retrying(attempt)


def ensure(access: DatabricksAccess, ups: list[Upload]) -> list[Upload]:
    """Upload those of `ups` that are not at their destination yet; returns what was sent."""
    check_size(ups)
    missing = [up for up in ups if not present(access, up)]
    for up in missing:
        upload(access, up)
    return missing
