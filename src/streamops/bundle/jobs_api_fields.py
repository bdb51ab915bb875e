"""Key names of Jobs API 2.2 payloads, checked against the databricks-sdk dataclasses.

The sdk's `from_dict` drops keys it does not know without a word, so a misspelled
`email_notificatons:` in bundle.yml would vanish from the deployed job. Everything written by
hand goes through `unknown_fields` first, and every built payload through `check_settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from streamops.errors import MissingDependencyError

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldProblem:
    """One unknown key or value at `path` (relative to the mapping that was checked)."""

    path: Path
    message: str
    fix: str


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def unknown_fields(value: Any, cls: type, path: Path = ()) -> list[FieldProblem]:
    """Problems for every key of `value` that the Jobs API model `cls` does not have."""
    out: list[FieldProblem] = []
    tp = _strip_optional(cls)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, list):
            for i, v in enumerate(value):
                out += unknown_fields(v, item, (*path, i))
        return out
    if origin is dict:
        item = typing.get_args(tp)[1]
        if isinstance(value, dict):
            for k, v in value.items():
                out += unknown_fields(v, item, (*path, str(k)))
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if isinstance(value, str) and value not in allowed:
            out.append(
                FieldProblem(
                    path,
                    f"'{value}' is not an allowed value",
                    f"use one of {', '.join(map(str, allowed))}",
                )
            )
        return out
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return out
    if not isinstance(value, dict):
        return [
            FieldProblem(
                path,
                f"expected a mapping ({tp.__name__}), got {type(value).__name__}",
                "write a mapping of Jobs API 2.2 fields",
            )
        ]
    hints = _hints(tp)
    for key, v in value.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            out.append(
                FieldProblem(
                    (*path, str(key)),
                    f"'{key}' is not a field of the Databricks Jobs API 2.2 "
                    f"({tp.__name__}); it would be dropped silently",
                    f"remove it or correct the spelling{hint}",
                )
            )
            continue
        out += unknown_fields(v, hints[key], (*path, str(key)))
    return out


def _jobs_api_models() -> tuple[Any, Any, Any]:
    """The SDK's JobSettings, ClusterSpec and list[Library]; databricks-sdk is an optional extra,
    imported only when a payload is checked."""
    try:
        from databricks.sdk.service import compute, jobs
    except ImportError as exc:
        raise MissingDependencyError("databricks-sdk", "databricks") from exc
    return jobs.JobSettings, compute.ClusterSpec, list[compute.Library]


def job_settings_problems(value: Any, path: Path = ()) -> list[FieldProblem]:
    settings, _, _ = _jobs_api_models()
    return unknown_fields(value, settings, path)


def cluster_problems(value: Any, path: Path = ()) -> list[FieldProblem]:
    _, cluster, _ = _jobs_api_models()
    return unknown_fields(value, cluster, path)


def library_problems(value: Any, path: Path = ()) -> list[FieldProblem]:
    _, _, libraries = _jobs_api_models()
    return unknown_fields(value, libraries, path)


def dotted(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
