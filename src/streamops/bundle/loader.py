"""bundle.yml -> one frozen Bundle. The only code that reads YAML or environment variables."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from streamops.bundle.models import STEP_KINDS, BundleSpec, Job, Source, Table, Target
from streamops.bundle.secrets import MASK, looks_like_secret
from streamops.bundle.yamlsource import YamlDocument, YamlPath, dotted, read_yaml
from streamops.errors import BundleError, Problem, UsageError

# The local target may use any reachable Kafka (e.g. the docker-compose stack) in place of the
# embedded broker: this variable wins over `targets.<t>.kafka.bootstrap_servers`.
ENV_BOOTSTRAP = "STREAMOPS_KAFKA_BOOTSTRAP_SERVERS"
EMBEDDED = "embedded"
# A URL scheme (abfss://, dbfs:/, file:/): two letters at least, so a Windows drive is not one.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle, resolved for one target. Everything downstream takes this."""

    spec: BundleSpec
    target_name: str
    path: Path
    warnings: tuple[Problem, ...] = ()
    bootstrap_override: str | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def target(self) -> Target:
        return self.spec.targets[self.target_name]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def cache_dir(self) -> Path:
        """Where local state lives: venv, broker and Azurite data, logs, local tables."""
        return self.root / ".cache"

    @property
    def jobs(self) -> dict[str, Job]:
        return self.spec.jobs

    def job(self, name: str) -> Job:
        """The job called `name`, or a usage error listing the jobs there are."""
        try:
            return self.spec.jobs[name]
        except KeyError:
            raise UsageError(
                f"no job '{name}' in {self.path.name}; jobs: {', '.join(self.spec.jobs)}"
                + _did_you_mean(name, self.spec.jobs)
            ) from None

    def source(self, job: Job) -> Source:
        return self.spec.sources[job.source]

    def table(self, key: str) -> Table:
        return self.spec.tables[key]

    def _resolve(self, location: str) -> str:
        if _SCHEME.match(location) or location.startswith("/"):
            return location.rstrip("/")
        # Relative paths are relative to bundle.yml (local target only; rules refuse them elsewhere).
        return str((self.root / location).resolve())

    @cached_property
    def storage_root(self) -> str:
        return self._resolve(self.target.storage_root)

    @cached_property
    def checkpoint_root(self) -> str:
        root = self.target.checkpoint_root
        return self._resolve(root) if root else f"{self.storage_root}/_checkpoints"

    def checkpoint_location(self, job: Job) -> str:
        """Derived from the stable query name, so a job never shares or silently moves it."""
        if job.checkpoint:
            return self._resolve(job.checkpoint)
        return f"{self.checkpoint_root}/{job.query_name}"

    def bronze_checkpoint_location(self, job: Job) -> str:
        """Checkpoint of the job's bronze query, beside the gold one and named the same way."""
        return f"{self.checkpoint_location(job).rstrip('/')}_bronze"

    def bronze_location(self, job: Job) -> str:
        """Raw parsed events of the job, with their Kafka coordinates."""
        return f"{self.storage_root}/tables/{job.query_name}_bronze"

    def quarantine_location(self, job: Job) -> str:
        """Events the job could not use, with their raw bytes and the reason."""
        return f"{self.storage_root}/tables/{job.query_name}_quarantine"

    def table_location(self, key: str) -> str:
        t = self.spec.tables[key]
        return self._resolve(t.location) if t.location else f"{self.storage_root}/tables/{key}"

    def bootstrap_servers(self, source: Source) -> str:
        """Bootstrap servers for a source; 'embedded' until the local stack resolves it."""
        if self.bootstrap_override:
            return self.bootstrap_override
        return source.bootstrap_servers or self.target.kafka.bootstrap_servers


def load(path: str | os.PathLike[str], target: str, *, strict: bool = True) -> Bundle:
    """Read, validate and freeze bundle.yml for `target`.

    Raises BundleError listing every problem (file:line, YAML path, what, fix) when the bundle
    has errors; warnings are kept on the Bundle. `strict=False` returns warnings only when valid.
    """
    p = Path(path)
    display = str(path)
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
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        raise BundleError(
            [
                Problem(
                    display,
                    line,
                    "(yaml)",
                    f"not valid YAML: {what}",
                    "fix the syntax at that line",
                )
            ]
        ) from None
    problems = [
        Problem(display, line, dotted(ypath), msg, "keep one of them")
        for ypath, line, msg in dup_problems
    ]
    if not isinstance(doc.data, dict):
        raise BundleError(
            [
                Problem(
                    display,
                    1,
                    "(top level)",
                    "the bundle must be a mapping",
                    "see README: bundle.yml",
                )
            ]
        )
    try:
        spec = BundleSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, doc)
        raise BundleError(problems) from None
    if target not in spec.targets:
        raise UsageError(
            f"no target '{target}' in {display}; targets: {', '.join(spec.targets)}"
            + _did_you_mean(target, spec.targets)
        )
    # Only the local target may be pointed elsewhere from the environment: a stray variable must
    # never redirect a production job to another cluster.
    override = (
        (os.environ.get(ENV_BOOTSTRAP) or None) if spec.targets[target].mode == "local" else None
    )
    bundle = Bundle(spec=spec, target_name=target, path=p.resolve(), bootstrap_override=override)
    from streamops.bundle.rules import check  # rules need the Bundle type

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
    )


# --- turning pydantic's errors into problems that name the place and the fix ---------------


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


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
            fix = "remove it or correct the spelling" + _did_you_mean(key, allowed)
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
                _did_you_mean(unknown[0], STEP_KINDS) if unknown else ""
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


STORAGE_OPTIONS_ENV = "STREAMOPS_STORAGE_OPTIONS"


def storage_options_env() -> str | None:
    """The JSON of adlfs options for remote storage, from $STREAMOPS_STORAGE_OPTIONS (or None).

    Read here, like every environment variable streamops uses; resolved at run time because it
    carries credentials, which never belong in bundle.yml.
    """
    return os.environ.get(STORAGE_OPTIONS_ENV) or None


def default_target() -> str:
    """The target a DAG or job uses when none is given: $STREAMOPS_TARGET, else 'local'."""
    return os.environ.get(ENV_TARGET) or "local"
