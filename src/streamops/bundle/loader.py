"""bundle.yml -> one frozen Bundle. The only code that reads YAML or environment variables."""

from __future__ import annotations

import hashlib
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from streamops.bundle.kafka_settings import LocalBrokerLookup
from streamops.bundle.models import STEP_KINDS, BundleSpec, Target
from streamops.bundle.resolved import (
    ENV_BOOTSTRAP,
    ENV_DATABRICKS_RUNTIME,
    ENV_JVM_DIR,
    ENV_LOCAL_STACK,
    Bundle,
    did_you_mean,
)
from streamops.bundle.secrets import MASK, looks_like_secret
from streamops.bundle.validation import check
from streamops.bundle.yamlsource import YamlDocument, YamlPath, YamlTooLarge, dotted, read_yaml
from streamops.errors import BundleError, Problem, UsageError


def load(
    path: str | os.PathLike[str],
    target: str,
    *,
    strict: bool = True,
    local_broker: LocalBrokerLookup | None = None,
) -> Bundle:
    """Read, validate and freeze bundle.yml for `target`.

    Raises BundleError listing every problem (file:line, YAML path, what, fix) when the bundle
    has errors; warnings are kept on the Bundle. `strict=False` returns warnings only when valid.
    `local_broker` finds the broker 'embedded' means (`streamops.localstack.local_broker`),
    called only when a client asks: whoever runs jobs passes it; validating needs none.
    """
    p = Path(path)
    display = str(path)
    doc, problems = _read(p, display)
    try:
        spec = BundleSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, doc)
        raise BundleError(problems) from None
    if target not in spec.targets:
        raise UsageError(
            f"no target '{target}' in {display}; targets: {', '.join(spec.targets)}"
            + did_you_mean(target, spec.targets)
        )
    # Only the local target may be pointed elsewhere from the environment: a stray variable must
    # never redirect a production job to another cluster.
    is_local = spec.targets[target].mode == "local"
    override = (os.environ.get(ENV_BOOTSTRAP) or None) if is_local else None
    stack_dir = os.environ.get(ENV_LOCAL_STACK) if is_local else None
    jvm_dir = os.environ.get(ENV_JVM_DIR) if is_local else None
    bundle = Bundle(spec=spec, target_name=target, path=p.resolve(), bootstrap_override=override)
    problems += check(bundle, doc)
    errors = [x for x in problems if x.severity == "error"]
    if errors and strict:
        raise BundleError(problems)
    return Bundle(
        spec=spec,
        target_name=target,
        path=p.resolve(),
        warnings=tuple(x for x in problems if x.severity == "warning"),
        bootstrap_override=override,
        local_stack_dir=Path(stack_dir) if stack_dir else None,
        jvm_dir_override=Path(jvm_dir) if jvm_dir else None,
        # Databricks sets this on every cluster: the job runs there, with the cluster's logins.
        on_cluster=not is_local and ENV_DATABRICKS_RUNTIME in os.environ,
        local_broker=local_broker,
        state_location=_state_location(spec.targets[target], target, spec.project, p.resolve()),
    )


def _state_location(target: Target, name: str, project: str, bundle_file: Path) -> Path | None:
    """`targets.<t>.state_dir`; a local target's default is the bundle's .cache/ (None here); a
    Databricks target's is `$STREAMOPS_STATE_DIR/<project>/<target>`, else a folder under the
    OS temp dir named by user, project, the bundle's folder and target, so that two checkouts
    on one Airflow worker never share state, and a read-only DAG folder is never written."""
    if target.state_dir:
        return Path(target.state_dir)
    if target.mode == "local":
        return None
    base = os.environ.get(ENV_STATE_DIR)
    if base:
        return Path(base) / project / name
    folder = hashlib.sha256(str(bundle_file.parent).encode()).hexdigest()[:8]
    user = f"streamops-{os.getuid()}" if hasattr(os, "getuid") else "streamops"
    return Path(tempfile.gettempdir()) / user / f"{project}-{folder}" / name


def _read(p: Path, display: str) -> tuple[YamlDocument, list[Problem]]:
    """The parsed YAML and its duplicate keys as problems; BundleError when it is no mapping."""
    if not p.is_file():
        raise UsageError(
            f"bundle file '{display}' does not exist. Fix: pass --bundle PATH/bundle.yml"
        )
    try:
        doc, dup_problems = read_yaml(p, display)
    except UnicodeDecodeError as exc:
        raise BundleError(
            [Problem(display, None, "(file)", f"not UTF-8 text ({exc.reason})", "save it as UTF-8")]
        ) from None
    except YamlTooLarge as exc:
        raise BundleError([Problem(display, exc.line, "(yaml)", exc.message, exc.fix)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        problem = Problem(
            display, line, "(yaml)", f"not valid YAML: {what}", "fix the syntax at that line"
        )
        raise BundleError([problem]) from None
    problems = [
        Problem(display, line, dotted(ypath), msg, "keep one of them")
        for ypath, line, msg in dup_problems
    ]
    if not isinstance(doc.data, dict):
        problem = Problem(
            display, 1, "(top level)", "the bundle must be a mapping", "see docs/bundle.md"
        )
        raise BundleError([problem])
    return doc, problems


# --- turning pydantic's errors into problems that name the place and the fix ---------------


def _clean_loc(loc: tuple[Any, ...]) -> YamlPath:
    # Tagged unions repeat the tag (steps[1].watermark.watermark); fold it back to YAML's path.
    out: list[Any] = []
    for part in loc:
        if out and part == out[-1] and isinstance(part, str):
            continue
        if isinstance(part, str) and part.endswith("_") and part[:-1] in ("schema",):
            part = part[:-1]
        out.append(part)
    return tuple(out)


def _unwrap(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(tp):
            out += _unwrap(a)
        return out
    return [tp]


def _allowed_keys(loc: YamlPath) -> list[str]:
    """Keys a mapping at `loc` may have, found by walking the models' type hints."""
    current: list[Any] = [BundleSpec]
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
                for name, f in tp.model_fields.items():
                    if (f.alias or name) == part:
                        nxt += _unwrap(f.annotation)
            elif origin is dict:
                nxt += _unwrap(typing.get_args(tp)[1])
            elif origin is list and isinstance(part, int):
                nxt += _unwrap(typing.get_args(tp)[0])
        current = [t for t in nxt if t is not type(None)]
    keys: list[str] = []
    for tp in current:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            keys += [f.alias or n for n, f in tp.model_fields.items()]
    return keys


def _pydantic_problems(exc: ValidationError, doc: YamlDocument) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        kind = err["type"]
        line = doc.line_of(loc)
        msg = err["msg"].removeprefix("Value error, ")
        fix = ""
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(loc[:-1])
            msg = f"unknown key '{key}'"
            fix = "remove it or correct the spelling" + did_you_mean(key, allowed)
            if allowed:
                fix += f"; allowed here: {', '.join(allowed)}"
        elif kind == "missing":
            msg = f"required key '{loc[-1]}' is missing"
            fix = f"add `{loc[-1]}:` under {dotted(loc[:-1])}"
            line = doc.line_of(loc[:-1])
        elif kind == "literal_error":
            fix = "use one of the allowed values"
            msg = f"{_show(err.get('input'))} is not allowed; {msg.lower()}"
        elif kind == "string_pattern_mismatch":
            msg = f"{_show(err.get('input'))} is not a valid name"
            fix = "use lower-case letters, digits and underscores, starting with a letter"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            msg = f"{_show(err.get('input'))}: {msg[0].lower() + msg[1:]}"
            fix = "write a value of that type"
        elif kind == "step_kind":
            given = err.get("input")
            keys = list(given) if isinstance(given, dict) else []
            unknown = [str(k) for k in keys if k not in STEP_KINDS]
            if unknown:
                loc = (*loc, unknown[0])
                line = doc.line_of(loc)
                msg = f"unknown step '{unknown[0]}'"
            fix = f"write exactly one of: {', '.join(STEP_KINDS)}" + (
                did_you_mean(unknown[0], STEP_KINDS) if unknown else ""
            )
        elif kind == "value_error" and "; " in msg:
            # Our validators write "what is wrong; how to fix it".
            msg, _, fix = msg.rpartition("; ")
        problems.append(Problem(doc.file, line, dotted(loc), msg, fix))
    return problems


def _show(value: Any) -> str:
    # Errors are printed and logged: a secret typed into the wrong field must not be echoed.
    if isinstance(value, str) and looks_like_secret(value):
        return repr(MASK)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


ENV_TARGET = "STREAMOPS_TARGET"
# Where a Databricks target's Airflow/CLI side keeps its state when bundle.yml names no folder.
ENV_STATE_DIR = "STREAMOPS_STATE_DIR"
# Set by Airflow in a task's environment while the task runs (not while its DAG file is parsed).
AIRFLOW_TASK_VARS = ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID")


def default_target() -> str:
    """The target a DAG file, job or the CLI uses when none is given: $STREAMOPS_TARGET, else
    'local'. A running Airflow task may not fall back to 'local': see `task_bundle`."""
    return os.environ.get(ENV_TARGET) or "local"


def in_airflow_task() -> bool:
    """True while an Airflow task runs in this process (Airflow exports its context then)."""
    return all(os.environ.get(v) for v in AIRFLOW_TASK_VARS)


def task_bundle(parsed: Bundle) -> Bundle:
    """The bundle a running Airflow task works on: its DAG file's (`parsed`), once the worker is
    known to name its target. On a worker without $STREAMOPS_TARGET the DAG file parsed for
    'local'; running that would silently want a JVM and a local broker, so it is an error."""
    target = os.environ.get(ENV_TARGET)
    if not target:
        if not in_airflow_task():
            return parsed
        raise UsageError(
            f"{ENV_TARGET} is not set on this Airflow worker, so this task does not know which "
            f"target of {parsed.path.name} to run on (targets: {', '.join(parsed.spec.targets)})."
            f" Fix: set {ENV_TARGET}=<target> in the environment of the scheduler, DAG "
            "processor and workers (e.g. prod), or =local for a local Airflow"
        )
    if target == parsed.target_name:
        return parsed
    return load(parsed.path, target, local_broker=parsed.local_broker)
