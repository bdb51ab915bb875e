"""Read Spark's checkpoint files (local paths, Azurite and ADLS through fsspec: one code path).

Layout (Spark 4): `metadata` {"id": query id}; `offsets/N` (version line, batch metadata, one line
per source); `commits/N` (version line, {"nextBatchWatermarkMs": ...}); `sources/<i>/0`;
`state/<operator>/<partition>/<version>.{delta,snapshot,zip}` (+ `SSTs/` for RocksDB) and
`state/<operator>/_metadata/metadata`. Hidden `.crc` files (Hadoop's) sit beside each; Spark 4.1
adds its own `<file>.crc` (JSON: CRC32C and size) beside state files.

A source line is whatever JSON its source writes: Kafka `{"topic": {"0": 42}}` (the bronze query),
a Delta source's offset object (the gold query reads the bronze table), a bare number for the rate
source. Shape-specific checks ask `kafka_offsets` / `delta_offset` which one a line is.

One recursive listing finds every file; only the files a check needs are then read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import fsspec

from streamops.errors import CheckpointError, UsageError
from streamops.pipeline.commit_meta import is_kafka_offsets

KNOWN_VERSIONS = ("v1",)
# Files that hold a state version: the default store's .delta/.snapshot, RocksDB's .zip, and
# RocksDB's .changelog when changelog checkpointing is on.
STATE_KINDS = ("delta", "snapshot", "zip", "changelog")


@dataclass(frozen=True)
class DeltaSourceOffset:
    """A Delta source's offset (the gold query reading the bronze table as a stream)."""

    reservoir_id: str  # the source table's id (metaData.id): a new id is a replaced table
    reservoir_version: int  # the table version the next batch starts in
    index: int  # the file index inside that version (-1: before its first file)
    is_starting_version: bool

    @property
    def position(self) -> tuple[int, int]:
        """Where in the table this offset points; it never goes down from batch to batch."""
        return self.reservoir_version, self.index


def delta_offset(value: Any) -> DeltaSourceOffset | None:
    """The Delta source offset in one source line, or None when the line is another shape."""
    if not isinstance(value, dict) or "reservoirId" not in value:
        return None
    try:
        return DeltaSourceOffset(
            str(value["reservoirId"]),
            int(value["reservoirVersion"]),
            int(value.get("index", -1)),
            bool(value.get("isStartingVersion", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def kafka_offsets(value: Any) -> dict[str, dict[str, int]] | None:
    """The Kafka offsets {topic: {partition: offset}} in one source line, or None."""
    return value if is_kafka_offsets(value) else None


@dataclass(frozen=True)
class OffsetsFile:
    """`offsets/N`: a version line, batch metadata, then one line per source ('-' for none)."""

    batch_id: int
    version: str
    metadata: dict[str, Any]
    sources: tuple[Any, ...]  # each line's JSON as its source wrote it; None for '-'


@dataclass(frozen=True)
class CommitFile:
    """`commits/N`: a version line and {"nextBatchWatermarkMs": ...}."""

    batch_id: int
    version: str
    next_batch_watermark_ms: int | None


@dataclass(frozen=True)
class StateFile:
    """One file of `state/<operator>/<partition>/`; version N+1 belongs to batch N."""

    operator: str
    partition: str
    name: str
    version: int | None  # None for files that carry no version (SSTs, logs)
    kind: str  # one of STATE_KINDS, "sst" or "other"


@dataclass(frozen=True)
class StateOperator:
    """`state/<operator>/`: its partitions and whether `_metadata/metadata` is there."""

    operator: str
    partitions: tuple[str, ...]
    has_metadata: bool


@dataclass(frozen=True)
class Listing:
    """Every file under a checkpoint (paths relative to it, hidden files left out)."""

    location: str
    sizes: dict[str, int] = field(repr=False)
    offsets: tuple[int, ...]
    commits: tuple[int, ...]
    sources: tuple[str, ...]
    state_files: tuple[StateFile, ...]
    operators: tuple[StateOperator, ...]
    odd_names: tuple[str, ...]  # files under offsets/ or commits/ that are not a batch number

    @property
    def empty(self) -> bool:
        return not self.sizes

    @property
    def has_metadata(self) -> bool:
        return "metadata" in self.sizes


@dataclass(frozen=True)
class Checkpoint:
    """What `read_checkpoint` found: the listing, the query id and the newest batch files."""

    listing: Listing
    query_id: str | None
    offsets: tuple[OffsetsFile, ...]  # the newest few, oldest first
    commits: tuple[CommitFile, ...]

    @property
    def last_committed(self) -> int | None:
        return self.listing.commits[-1] if self.listing.commits else None

    def committed_offsets(self) -> OffsetsFile | None:
        """The offsets of the last committed batch (where a restart resumes), if read."""
        last = self.last_committed
        return next((o for o in self.offsets if o.batch_id == last), None)


class CheckpointUnreadable(CheckpointError, OSError):
    """The checkpoint location, or a file or folder in it, cannot be read: exit 2, no traceback.

    Still an OSError, so callers that treat a storage failure as "nothing there" keep working."""

    exit_code = 2


def cannot_read(path: str, exc: BaseException) -> CheckpointUnreadable:
    """The error for a file or folder of a checkpoint that exists but cannot be read.

    Never advice to restore: the checkpoint may be intact, only this user cannot read it."""
    if isinstance(exc, PermissionError):
        why = "permission denied"
        fix = (
            "give the user running streamops read access to it (chmod/chown locally; on ADLS a "
            "role such as Storage Blob Data Reader on the container), then check again"
        )
    else:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        fix = (
            "make it a readable file or folder again (a broken or looping link, a special file, "
            "or a storage error: see the reason), then check again"
        )
    return CheckpointUnreadable(f"cannot read {path} ({why}). Fix: {fix}")


def _fs(location: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
    return fs, path.rstrip("/")


def parse_offsets(text: str, batch_id: int) -> OffsetsFile:
    """Parse the text of an offsets file; ValueError naming the line on a malformed one."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(
            f"offsets/{batch_id}: expected a version line and metadata, got {len(lines)} line(s)"
        )
    try:
        meta = json.loads(lines[1])
        sources = tuple(None if ln.strip() == "-" else json.loads(ln) for ln in lines[2:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"offsets/{batch_id}: invalid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"offsets/{batch_id}: the batch metadata line must be a JSON object")
    return OffsetsFile(batch_id, lines[0].strip(), meta, sources)


def parse_commit(text: str, batch_id: int) -> CommitFile:
    """Parse the text of a commits file; ValueError on a malformed one."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(f"commits/{batch_id}: expected a version line and JSON, got {len(lines)}")
    try:
        meta = json.loads(lines[1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"commits/{batch_id}: invalid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"commits/{batch_id}: the second line must be a JSON object")
    wm = meta.get("nextBatchWatermarkMs")
    return CommitFile(batch_id, lines[0].strip(), int(wm) if isinstance(wm, int) else None)


def parse_metadata(text: str) -> str:
    """The query id in `metadata`; ValueError when it is not {"id": "..."}."""
    try:
        data = json.loads(text.splitlines()[0] if text.strip() else "")
    except (json.JSONDecodeError, IndexError) as exc:
        raise ValueError(f"metadata: invalid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError('metadata: expected {"id": "<query id>"}')
    return str(data["id"])


def read_text(location: str, rel: str, storage_options: dict[str, Any] | None = None) -> str:
    """The text of `rel` in the checkpoint; FileNotFoundError when it is not there,
    CheckpointUnreadable (naming the file and the fix) when it is there but cannot be read."""
    fs, root = _fs(location, storage_options)
    try:
        with fs.open(f"{root}/{rel}", "rt", encoding="utf-8") as fh:
            return str(fh.read())
    except (FileNotFoundError, CheckpointUnreadable, ValueError):
        raise  # not there, or there but garbled (UnicodeDecodeError): the rules report those
    except Exception as exc:  # OSError locally; the object store's own errors remotely
        raise cannot_read(f"{location.rstrip('/')}/{rel}", exc) from None


def read_offsets(
    location: str, batch_id: int, storage_options: dict[str, Any] | None = None
) -> OffsetsFile:
    """Read `offsets/<batch_id>` of the checkpoint at `location`."""
    return parse_offsets(read_text(location, f"offsets/{batch_id}", storage_options), batch_id)


def read_commit(
    location: str, batch_id: int, storage_options: dict[str, Any] | None = None
) -> CommitFile:
    """Read `commits/<batch_id>` of the checkpoint at `location`."""
    return parse_commit(read_text(location, f"commits/{batch_id}", storage_options), batch_id)


def read_query_id(location: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The query id in `metadata`, or None when the file is not there (a new checkpoint)."""
    try:
        return parse_metadata(read_text(location, "metadata", storage_options))
    except FileNotFoundError:
        return None


def _state_file(parts: list[str]) -> StateFile | None:
    # state/<op>/<partition>/<name> or state/<op>/<partition>/SSTs/<name>
    if len(parts) < 4 or parts[2] == "_metadata":
        return None
    op, part, name = parts[1], parts[2], parts[-1]
    if len(parts) > 4:
        return StateFile(op, part, name, None, "sst" if name.endswith(".sst") else "other")
    stem, _, ext = name.partition(".")
    num = stem.split("_", 1)[0]
    version = int(num) if num.isdigit() else None
    kind = ext if ext in STATE_KINDS else "other"
    return StateFile(op, part, name, version, kind)


def require_folder(location: str, storage_options: dict[str, Any] | None = None) -> None:
    """UsageError when `location` cannot be a checkpoint folder: an empty path, or a file."""
    if not location.strip():
        raise UsageError(
            "no checkpoint location given (an empty path). Fix: give the checkpoint folder, the "
            "one that holds metadata, offsets/ and commits/"
        )
    fs, root = _fs(location, storage_options)
    try:
        is_file = bool(fs.isfile(root))
    except Exception:  # listing (next) reports why the storage cannot be read
        is_file = False
    if is_file:
        parent = location.rstrip("/").rsplit("/", 1)[0] if "/" in location else "."
        raise UsageError(
            f"{location} is a file, not a checkpoint folder. Fix: give the folder that holds "
            f"metadata, offsets/ and commits/ (if this is one of its files: {parent}, or the "
            "folder above it)"
        )


def _local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol


def _unreadable_folders(root: str) -> None:
    """Raise for the first local folder under `root` that cannot be listed.

    fsspec's walk drops such a folder silently (its on_error is not passed on to subfolders), so
    an unreadable offsets/ would look like missing offsets."""
    errors: list[OSError] = []
    for _ in os.walk(root, onerror=errors.append):
        if errors:
            break
    if errors:
        raise cannot_read(str(errors[0].filename or root), errors[0])


def _special_files(fs: Any, found: dict[str, Any]) -> None:
    """Raise for a listed entry that is no regular file: a looping or dangling link, a FIFO (whose
    read would block), a socket or a device. Only local listings have such entries."""
    for path, info in found.items():
        if info.get("type") in ("file", "directory"):
            continue
        try:
            real = fs.info(path)  # follows a link
        except OSError as exc:
            raise cannot_read(str(path), exc) from None
        if real.get("type") != "file":
            raise CheckpointUnreadable(
                f"cannot read {path} (not a regular file: a FIFO, socket or device). Fix: move it "
                "out of the checkpoint; Spark writes only regular files there"
            )


def list_checkpoint(location: str, storage_options: dict[str, Any] | None = None) -> Listing:
    """One recursive listing of the checkpoint.

    UsageError for an empty path or a file; CheckpointUnreadable when the folder is not there
    or a folder in it cannot be listed (never "missing files" for what could not be read)."""
    require_folder(location, storage_options)
    fs, root = _fs(location, storage_options)
    try:
        if not fs.exists(root):
            raise CheckpointUnreadable(
                f"{location}: no such checkpoint folder. Fix: check the path (a job's checkpoints "
                "are <checkpoint_root>/<query name>); a query that never ran has none yet"
            )
        errors: list[OSError] = []
        found = fs.find(root, withdirs=False, detail=True, on_error=errors.append)
    except CheckpointUnreadable:
        raise
    except Exception as exc:
        raise CheckpointUnreadable(
            f"cannot read {location} (listing it failed: {exc}). Fix: check that the storage is "
            "reachable and that these credentials may list it, then check again"
        ) from exc
    if errors:
        raise cannot_read(str(errors[0].filename or location), errors[0])
    if _local(fs):
        _unreadable_folders(root)
        _special_files(fs, found)
    return listing_from(location, root, found)


def listing_from(location: str, root: str, found: dict[str, Any]) -> Listing:
    """Build a Listing from fsspec `find(detail=True)` output (full paths -> info)."""
    sizes: dict[str, int] = {}
    offsets: list[int] = []
    commits: list[int] = []
    sources: list[str] = []
    state: list[StateFile] = []
    ops: dict[str, set[str]] = {}
    op_meta: set[str] = set()
    odd: list[str] = []
    prefix = root.rstrip("/") + "/"
    for full, info in found.items():
        path = str(full)
        rel = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        name = rel.rsplit("/", 1)[-1]
        # Hidden `.<name>.crc` files are Hadoop's local-filesystem checksums, not Spark's. Spark's
        # own checksum files (`<name>.crc`, e.g. `state/0/3/5.zip.crc`) belong to the checkpoint.
        if name.startswith("."):
            continue
        sizes[rel] = int(info.get("size") or 0)
        parts = rel.split("/")
        if parts[0] in ("offsets", "commits") and len(parts) == 2:
            if name.isdigit():
                (offsets if parts[0] == "offsets" else commits).append(int(name))
            elif not name.removesuffix(".crc").isdigit():
                odd.append(rel)
        elif parts[0] == "sources":
            sources.append(rel)
        elif parts[0] == "state" and len(parts) >= 3:
            ops.setdefault(parts[1], set())
            if parts[2] == "_metadata":
                op_meta.add(parts[1])
            else:
                ops[parts[1]].add(parts[2])
            sf = _state_file(parts)
            if sf is not None:
                state.append(sf)
    operators = tuple(
        StateOperator(op, tuple(sorted(p, key=lambda x: (len(x), x))), op in op_meta)
        for op, p in sorted(ops.items())
    )
    return Listing(
        location,
        sizes,
        tuple(sorted(offsets)),
        tuple(sorted(commits)),
        tuple(sorted(sources)),
        tuple(state),
        operators,
        tuple(sorted(odd)),
    )


def read_checkpoint(
    location: str, storage_options: dict[str, Any] | None = None, *, newest: int = 3
) -> Checkpoint:
    """List the checkpoint and parse its metadata and newest `newest` offsets and commits.

    Unparseable files are left out here; `rules.check` reports them.
    """
    listing = list_checkpoint(location, storage_options)
    qid = None
    if listing.has_metadata:
        try:
            qid = parse_metadata(read_text(location, "metadata", storage_options))
        except ValueError:
            qid = None
    offs: list[OffsetsFile] = []
    for n in listing.offsets[-newest:]:
        try:
            offs.append(read_offsets(location, n, storage_options))
        except (ValueError, OSError):
            continue
    coms: list[CommitFile] = []
    for n in listing.commits[-newest:]:
        try:
            coms.append(read_commit(location, n, storage_options))
        except (ValueError, OSError):
            continue
    return Checkpoint(listing, qid, tuple(offs), tuple(coms))
