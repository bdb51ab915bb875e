"""Read Spark's checkpoint files (local paths, Azurite and ADLS through fsspec: one code path)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec


@dataclass(frozen=True)
class OffsetsFile:
    """`offsets/N`: a version line, batch metadata, then one line per source ('-' for none)."""

    batch_id: int
    version: str
    metadata: dict[str, Any]
    sources: tuple[dict[str, Any] | None, ...]


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
    return OffsetsFile(batch_id, lines[0].strip(), meta, sources)


def read_offsets(
    location: str, batch_id: int, storage_options: dict[str, Any] | None = None
) -> OffsetsFile:
    """Read `offsets/<batch_id>` of the checkpoint at `location`."""
    fs, root = _fs(location, storage_options)
    with fs.open(f"{root}/offsets/{batch_id}", "rt", encoding="utf-8") as fh:
        return parse_offsets(fh.read(), batch_id)
