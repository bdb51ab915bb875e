"""Versioned checkpoint backups: a consistent snapshot (everything up to the last committed
batch), checked after copying, kept `backup_retention` deep; restore checks before it copies.

Layout: `<backup_root>/<query name>/<UTC time>-b<batch>/` with the checkpoint's files and
`_streamops_backup.json` (query id, last committed batch, source location, file count).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fsspec

from streamops.checkpoint.checks import check
from streamops.checkpoint.reader import list_checkpoint
from streamops.errors import CheckpointError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

MANIFEST = "_streamops_backup.json"


@dataclass(frozen=True)
class Backup:
    path: str
    query_name: str
    batch: int | None
    query_id: str | None
    files: int


def backup_root(bundle: Bundle) -> str:
    root = bundle.target.checkpoints.backup_root
    return root.rstrip("/") if root else f"{bundle.checkpoint_root.rstrip('/')}/_backups"


def _wanted(rel: str, last: int | None) -> bool:
    parts = rel.split("/")
    if parts[0] in ("offsets", "commits") and len(parts) == 2 and parts[1].isdigit():
        return last is not None and int(parts[1]) <= last
    if parts[0] == "state" and len(parts) == 4:
        num = parts[3].split(".", 1)[0].split("_", 1)[0]
        return not num.isdigit() or last is None or int(num) <= last + 1
    return True


def backup(
    location: str,
    query_name: str,
    root: str,
    *,
    retention: int,
    storage_options: dict[str, Any] | None = None,
) -> Backup:
    """Copy a consistent snapshot of the checkpoint at `location` under `root`; prune old ones."""
    listing = list_checkpoint(location, storage_options)
    last = listing.commits[-1] if listing.commits else None
    report = check(location, storage_options)
    if report.unreadable is not None:
        raise CheckpointError(f"{location}: not backed up: {report.unreadable}")
    if report.errors:
        raise CheckpointError(
            f"{location}: not backed up, the checkpoint has problems: "
            + "; ".join(f.render() for f in report.errors)
            + " Fix: repair or restore it first (the older backups are kept)"
        )
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    dest = f"{root.rstrip('/')}/{query_name}/{stamp}-b{last if last is not None else 'none'}"
    fs, src_root = fsspec.core.url_to_fs(location, **(storage_options or {}))
    _, dest_root = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    if fs.exists(dest_root):
        raise CheckpointError(f"{dest} exists already. Fix: back up again")
    files = [rel for rel in listing.sizes if _wanted(rel, last)]
    for rel in files:
        fs.makedirs(f"{dest_root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        fs.copy(f"{src_root.rstrip('/')}/{rel}", f"{dest_root}/{rel}")
    manifest = {
        "source": location,
        "query_name": query_name,
        "batch": last,
        "query_id": report.query_id,
        "files": len(files),
        "at": time.time(),
    }
    with fs.open(f"{dest_root}/{MANIFEST}", "wt", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    after = check(dest, storage_options)
    if after.errors:
        fs.rm(dest_root, recursive=True)
        raise CheckpointError(
            f"{location}: the backup copy did not check out ({after.errors[0].render()}); it was "
            "removed. Fix: back up again while the job is between batches"
        )
    prune(root, query_name, retention, storage_options)
    return Backup(dest, query_name, last, report.query_id, len(files))


def list_backups(
    root: str, query_name: str, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Backup folders of `query_name`, oldest first."""
    fs, base = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{query_name}", **(storage_options or {}))
    if not fs.exists(base):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))
    return [f"{root.rstrip('/')}/{query_name}/{n}" for n in names]


def prune(root: str, query_name: str, keep: int, so: dict[str, Any] | None = None) -> list[str]:
    old = list_backups(root, query_name, so)[:-keep]
    for path in old:
        fs, p = fsspec.core.url_to_fs(path, **(so or {}))
        fs.rm(p, recursive=True)
    return old


def is_empty(location: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether no file is left at `location` (a lost checkpoint, or one never written)."""
    fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
    return not (fs.exists(path) and fs.find(path))


def restore(
    backup_path: str,
    location: str,
    *,
    storage_options: dict[str, Any] | None = None,
    force: bool = False,
) -> int:
    """Check the backup, then copy it to `location`; return the number of files copied.

    A non-empty `location` is refused unless `force`: it is then moved aside to
    `<location>.replaced-<time>` (never deleted).
    """
    report = check(backup_path, storage_options)
    if report.exit_code != 0:
        why = report.unreadable or "; ".join(f.render() for f in report.errors)
        raise CheckpointError(
            f"{backup_path}: the backup does not check out ({why}). Fix: pick another backup "
            "(`streamops checkpoint backups`)"
        )
    fs, dest = fsspec.core.url_to_fs(location, **(storage_options or {}))
    if not is_empty(location, storage_options):
        if not force:
            raise CheckpointError(
                f"{location} is not empty. Fix: stop the job, then restore with --force (the "
                "current checkpoint is moved aside, not deleted)"
            )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        fs.mv(dest, f"{dest}.replaced-{stamp}", recursive=True)
    listing = list_checkpoint(backup_path, storage_options)
    _, src = fsspec.core.url_to_fs(backup_path, **(storage_options or {}))
    files = [rel for rel in listing.sizes if rel != MANIFEST]
    for rel in files:
        fs.makedirs(f"{dest}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        fs.copy(f"{src.rstrip('/')}/{rel}", f"{dest}/{rel}")
    return len(files)
