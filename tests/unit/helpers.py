"""Build test bundles by editing the shipped bundle.yml, and find what `load()` says about them.

Edits are plain text replacements, so comments and layout (and so line numbers) stay as written;
expected line numbers are found in the edited text, never hard-coded.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from streamops.bundle import load
from streamops.errors import BundleError, Problem

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED = PROJECT / "bundle.yml"

# (old, new) replaces the one occurrence of `old`; (after, old, new) the first one after `after`.
Edit = tuple[str, str] | tuple[str, str, str]


@cache
def shipped_text() -> str:
    """The shipped bundle.yml, read once."""
    return SHIPPED.read_text(encoding="utf-8")


def edited(*edits: Edit, text: str | None = None) -> str:
    """The shipped bundle (or `text`) with each edit applied in turn; each must match."""
    out = shipped_text() if text is None else text
    for edit in edits:
        if len(edit) == 2:
            old, new = edit
            assert out.count(old) == 1, f"{old!r} occurs {out.count(old)} times, not once"
            out = out.replace(old, new)
        else:
            after, old, new = edit
            start = out.index(after)
            at = out.index(old, start)
            out = out[:at] + new + out[at + len(old) :]
    return out


def write(tmp_path: Path, text: str, name: str = "bundle.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first line holding `needle` (after the line holding `after`)."""
    lines = text.splitlines()
    start = 0
    if after is not None:
        start = next(i for i, line in enumerate(lines) if after in line) + 1
    for i in range(start, len(lines)):
        if needle in lines[i]:
            return i + 1
    raise AssertionError(f"{needle!r} not found in the bundle text")


def problems(path: Path, target: str) -> list[Problem]:
    """The problems of a bundle that must not load."""
    with pytest.raises(BundleError) as info:
        load(path, target)
    return info.value.problems


def errors(found: list[Problem]) -> list[Problem]:
    return [p for p in found if p.severity == "error"]


def warnings_of(path: Path, target: str) -> tuple[Problem, ...]:
    """The warnings of a bundle that must load."""
    return load(path, target).warnings


def only(found: list[Problem] | tuple[Problem, ...], path: str, contains: str = "") -> Problem:
    """The one problem at YAML path `path` (whose message holds `contains`)."""
    hits = [p for p in found if p.path == path and contains in p.message]
    assert len(hits) == 1, f"expected one problem at {path}, got: {[p.render() for p in found]}"
    return hits[0]
