"""The reset and drift guard: what each job's queries looked like at the last deploy or start.

The registry is one small JSON file on the checkpoints' own storage,
`<checkpoint_root>/_streamops_registry.json`, parsed once into a frozen `Registry`:

    {"version": 1,
     "jobs": {"<job>": {"gold": {"query_name", "checkpoint", "query_id", "offsets", "batch",
                                 "event", "at"}, "bronze": {...}}},
     "resets": [{"job", "at", "event", "offsets_file", "starting_offsets", "source", "overrode"}]}

`guard` refuses (CheckpointGuardError) a start or deploy that would silently restart a query from
scratch; `--reset-from OFFSETS_FILE` is the only way past it, and it is recorded. It runs in three
steps: `observe` reads what each checkpoint (and sink) holds, `guard_check` turns that and the
registry's records into a `Verdict` without any I/O or clock, and `guard_record` writes.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from pydantic import TypeAdapter, ValidationError

from streamops.bundle.storage import STORAGE_OPTIONS_ENV, environment_storage, login_from_fsspec
from streamops.checkpoint.reader import list_checkpoint, read_offsets, read_query_id
from streamops.errors import BundleError, CheckpointError, CheckpointGuardError
from streamops.pipeline.driver_delta import open_delta

if TYPE_CHECKING:
    from streamops.bundle import Bundle

REGISTRY_NAME = "_streamops_registry.json"


def storage_options_for(location: str, bundle: Bundle | None = None) -> dict[str, Any] | None:
    """fsspec/adlfs options for `location` ({} for a local path) from the bundle's login for it
    (without a bundle: $STREAMOPS_STORAGE_OPTIONS), or None when no login for it is known here
    (the storage cannot be reached from here)."""
    try:
        login = bundle.runtime.storage(location) if bundle else environment_storage(location)
    except BundleError as exc:
        raise CheckpointError(f"{exc} (while reading {location})") from None
    return login.adlfs() if login.reachable else None


@dataclass(frozen=True)
class QueryNow:
    """One query of a job as the bundle and the storage show it now."""

    kind: str  # "gold" | "bronze"
    query_name: str
    checkpoint: str
    tables: tuple[str, ...]  # the tables this query writes
    source_tables: tuple[str, ...] = ()  # the Delta tables it streams from (gold: bronze)

    @property
    def reads_kafka(self) -> bool:
        """Only such a query's lost checkpoint can start again from offsets rebuilt from its
        sink; one that reads a Delta table (and keeps window state) has to be restored."""
        return not self.source_tables


def queries_of(bundle: Bundle, job_name: str) -> list[QueryNow]:
    """The job's queries: bronze (Kafka -> bronze + quarantine), gold (bronze -> the sink)."""
    job = bundle.job(job_name)
    bronze = bundle.bronze_location(job)
    return [
        QueryNow(
            "bronze",
            job.bronze_query_name,
            bundle.bronze_checkpoint_location(job),
            (bronze, bundle.quarantine_location(job)),
        ),
        QueryNow(
            "gold",
            job.query_name,
            bundle.checkpoint_location(job),
            (bundle.table_location(job.sink),),
            (bronze,),
        ),
    ]


def lost_checkpoint_problem(bundle: Bundle, job_name: str, q: QueryNow) -> str:
    """Why starting `q` with its checkpoint gone (and its sink holding data) is refused, and the
    way back that fits the query."""
    head = (
        f"job '{job_name}' {q.kind} query '{q.query_name}': the checkpoint {q.checkpoint} is "
        "empty or gone while its sink already holds data"
    )
    restore = f"`streamops checkpoint restore --job {job_name} --target {bundle.target_name}`"
    if q.reads_kafka:
        return (
            f"{head}; starting would re-read the topic from startingOffsets and duplicate or skip "
            f"records. Fix: {restore} a backup, or `streamops checkpoint reconstruct --job "
            f"{job_name} --target {bundle.target_name} --out FILE` and start with --reset-from FILE"
        )
    return (
        f"{head}. It reads the bronze table {', '.join(q.source_tables)}, not Kafka, and keeps "
        "its window state in the checkpoint: neither can be rebuilt from Kafka offsets. Fix: "
        f"{restore} restores its newest backup; or rebuild it from bronze: move its sink table "
        f"{', '.join(q.tables)} and the checkpoint aside, then start the job (gold re-reads "
        "bronze from its first version)"
    )


def _query_id(location: str, so: dict[str, Any] | None) -> str | None:
    try:
        return read_query_id(location, so)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{location}: {exc}. Fix: `streamops checkpoint check {location}` says what else is "
            "broken; stop the job and `streamops checkpoint restore` a backup"
        ) from None


def lost_checkpoints(
    bundle: Bundle, job_name: str, so: dict[str, Any] | None = None
) -> list[QueryNow]:
    """The job's queries whose checkpoint holds no query id (gone, or never written)."""
    so = storage_options_for(bundle.checkpoint_root, bundle) if so is None else so
    return [q for q in queries_of(bundle, job_name) if _query_id(q.checkpoint, so) is None]


def sink_has_data(q: QueryNow, so: dict[str, Any] | None) -> bool:
    """Whether any table `q` writes holds a batch of `q` (a Delta transaction of its app id)."""
    return any(_holds_batches(t, q.query_name, so) for t in q.tables)


def _holds_batches(table: str, app_id: str, so: dict[str, Any] | None) -> bool:
    # The sink writes each batch under its query's app id (txnAppId). A table that exists but
    # holds none (the job creates bronze before its queries start) is no reason to refuse.
    # `so` are fsspec options; the Delta reader needs their login (on the job cluster: Spark's).
    dt = open_delta(table, login_from_fsspec(so))
    return dt is not None and dt.transaction_version(app_id) is not None


# --- the registry file, parsed once into frozen records ----------------------------------------


@dataclass(frozen=True)
class QueryRecord:
    """One query of a job as recorded at a deploy or a start."""

    query_name: str
    checkpoint: str
    query_id: str | None
    offsets: list[Any] | None  # the source lines of its last batch (Kafka or Delta offsets)
    batch: int | None  # its last committed batch
    event: str  # "start" | "deploy"
    at: float  # epoch seconds


@dataclass(frozen=True)
class ResetRecord:
    """One start past the guard with --reset-from: the offsets used and what they overrode."""

    job: str
    at: float
    event: str
    offsets_file: str
    starting_offsets: dict[str, str]  # query name -> startingOffsets JSON
    source: Any = None  # where the offsets file says its offsets came from
    overrode: dict[str, list[str]] = field(default_factory=dict)  # query -> refusals passed


@dataclass(frozen=True)
class Registry:
    """The whole registry file: the last record of each job's queries, and every reset."""

    version: int = 1
    jobs: dict[str, dict[str, QueryRecord]] = field(default_factory=dict)  # job -> kind -> record
    resets: tuple[ResetRecord, ...] = ()

    def job(self, name: str) -> dict[str, QueryRecord]:
        """The records of `name` by query kind ({} when none)."""
        return dict(self.jobs.get(name, {}))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _registry_adapter() -> TypeAdapter[Registry]:
    return TypeAdapter(Registry)


def parse_registry(data: Any, path: str) -> Registry:
    """The registry in `data` (the file's JSON); CheckpointError naming `path` if malformed."""
    try:
        return _registry_adapter().validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise CheckpointError(
            f"{path}: the checkpoint registry is malformed at {where}: {first['msg']} "
            f"({exc.error_count()} problem(s)). Fix: restore it from a checkpoint backup, or "
            "delete it to start recording afresh (the guard then has no history until the next "
            "start)"
        ) from None


def registry_path(bundle: Bundle) -> str:
    return f"{bundle.checkpoint_root.rstrip('/')}/{REGISTRY_NAME}"


def load_registry(path: str, so: dict[str, Any] | None) -> Registry:
    """The registry at `path` (empty when there is none yet); CheckpointError if malformed."""
    fs, p = fsspec.core.url_to_fs(path, **(so or {}))
    try:
        with fs.open(p, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return Registry()
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: the checkpoint registry is not valid JSON ({exc.msg}). Fix: restore it from "
            "a checkpoint backup, or delete it to start recording afresh (the guard then has no "
            "history until the next start)"
        ) from None
    return parse_registry(data, path)


def save_registry(path: str, so: dict[str, Any] | None, registry: Registry) -> None:
    fs, p = fsspec.core.url_to_fs(path, **(so or {}))
    parent = p.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    # Write beside, then move: a reader never sees half a file (one rename on ADLS/local).
    tmp = f"{p}.tmp-{os.getpid()}"
    with fs.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump(registry.as_json(), fh, indent=1, sort_keys=True)
    fs.mv(tmp, p)


def recorded(
    bundle: Bundle, job_name: str, so: dict[str, Any] | None = None
) -> dict[str, QueryRecord]:
    """The registry's records of `job_name` by query kind ({} when none)."""
    so = storage_options_for(bundle.checkpoint_root, bundle) if so is None else so
    return load_registry(registry_path(bundle), so).job(job_name)


# --- the offsets file of --reset-from ----------------------------------------------------------


@dataclass(frozen=True)
class ResetFile:
    """A file `streamops checkpoint reconstruct` wrote: startingOffsets per query name."""

    path: Path
    job: str | None
    source: Any
    queries: dict[str, Any]  # query name -> {"startingOffsets": ..., "batch": ...}

    def for_job(self, job_name: str) -> ResetFile:
        """This file, refused (CheckpointGuardError) when it was written for another job."""
        if self.job not in (None, job_name):
            raise CheckpointGuardError(
                f"{self.path} was reconstructed for job '{self.job}', not '{job_name}'. "
                f"Fix: run `streamops checkpoint reconstruct --job {job_name}`"
            )
        return self


def load_reset_file(path: Path) -> ResetFile:
    """A file `streamops checkpoint reconstruct` wrote; CheckpointError naming it if unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the offsets file ({exc}). Fix: write it with "
            "`streamops checkpoint reconstruct --job J --target T --out FILE`"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("queries"), dict):
        raise CheckpointError(
            f'{path}: expected {{"job": ..., "queries": {{"<query name>": {{"startingOffsets": '
            "...}}}}. Fix: write it with `streamops checkpoint reconstruct`"
        )
    return ResetFile(path, data.get("job"), data.get("source"), data["queries"])


# --- the guard: observe (reads), check (pure), record (writes) ---------------------------------


@dataclass(frozen=True)
class Observed:
    """One query at a start or deploy as its checkpoint and its sink show it, read beforehand."""

    query: QueryNow
    query_id: str | None  # the query id in its checkpoint now (None: empty or gone)
    sink_has_data: bool = False  # looked at only when the checkpoint holds no query id
    batch: int | None = None  # the checkpoint's last committed batch
    offsets: list[Any] | None = None  # the source lines of that batch


def _last_offsets(location: str, so: dict[str, Any] | None) -> tuple[int | None, Any]:
    try:
        listing = list_checkpoint(location, so)
    except OSError:
        return None, None
    if not listing.commits:
        return None, None
    last = listing.commits[-1]
    try:
        f = read_offsets(location, last, so)
    except (OSError, ValueError):
        return last, None
    return last, [s for s in f.sources if s is not None]


def observe(bundle: Bundle, job_name: str, so: dict[str, Any] | None) -> list[Observed]:
    """What each query's checkpoint (and, for an empty one, its sink) holds now."""
    out = []
    for q in queries_of(bundle, job_name):
        qid = _query_id(q.checkpoint, so)
        if qid is None:
            out.append(Observed(q, None, sink_has_data(q, so)))
        else:
            out.append(Observed(q, qid, False, *_last_offsets(q.checkpoint, so)))
    return out


@dataclass(frozen=True)
class QueryVerdict:
    """The guard's answer for one query: what refuses its start, and the reset that goes past."""

    seen: Observed
    problems: tuple[str, ...]  # each with its fix; empty: the query may start
    reset: dict[str, Any] | None = None  # its --reset-from entry, which overrides `problems`


@dataclass(frozen=True)
class Verdict:
    """The guard's answer for one job at one start or deploy."""

    job_name: str
    target: str
    event: str
    queries: tuple[QueryVerdict, ...]

    @property
    def refusals(self) -> list[str]:
        return [p for v in self.queries if v.reset is None for p in v.problems]

    @property
    def starting(self) -> dict[str, str]:
        """{query name: startingOffsets JSON} of the queries started from --reset-from."""
        return {
            v.seen.query.query_name: json.dumps(v.reset["startingOffsets"], separators=(",", ":"))
            for v in self.queries
            if v.reset is not None
        }

    @property
    def overrode(self) -> dict[str, list[str]]:
        """What each reset query went past (recorded with the reset)."""
        return {
            v.seen.query.query_name: list(v.problems)
            for v in self.queries
            if v.reset is not None and v.problems
        }

    def raise_if_refused(self) -> None:
        if self.refusals:
            raise CheckpointGuardError(
                f"refusing to {self.event} job '{self.job_name}' (target {self.target}):\n  "
                + "\n  ".join(self.refusals)
            )


@dataclass(frozen=True)
class _Seen:
    """One query for the guard's rules: what the registry recorded and what is there now."""

    bundle: Bundle
    job_name: str
    rec: QueryRecord | None  # what the registry recorded for this query kind, if anything
    now: Observed

    @property
    def q(self) -> QueryNow:
        return self.now.query


def _moved(s: _Seen) -> str | None:
    if s.rec is None or s.rec.checkpoint == s.q.checkpoint:
        return None
    return (
        f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': its checkpoint location changed "
        f"from {s.rec.checkpoint} to {s.q.checkpoint}; starting there would start the "
        "query from scratch. Fix: put the old location back (job.checkpoint in bundle.yml), or "
        "move the old checkpoint there"
    )


def _renamed(s: _Seen) -> str | None:
    if s.rec is None or s.rec.query_name == s.q.query_name:
        return None
    return (
        f"job '{s.job_name}' {s.q.kind} query: its query name changed from "
        f"'{s.rec.query_name}' to '{s.q.query_name}' (the checkpoint and the sink's "
        "idempotency key follow the name). Fix: put the old query_name back in bundle.yml"
    )


def _emptied(s: _Seen) -> str | None:
    if s.now.query_id is not None or not s.now.sink_has_data:
        return None
    return lost_checkpoint_problem(s.bundle, s.job_name, s.q)


def _replaced(s: _Seen) -> str | None:
    qid = s.now.query_id
    if s.rec is None or not s.rec.query_id or qid is None or s.rec.query_id == qid:
        return None
    return (
        f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': query id {qid} in "
        f"{s.q.checkpoint} differs from {s.rec.query_id} recorded at the last "
        f"{s.rec.event}: the checkpoint was reset or replaced. Fix: "
        "restore the right backup, or start with --reset-from FILE to accept it"
    )


# Each rule returns the problem (with its fix) or None.
GUARD_RULES = (_moved, _renamed, _emptied, _replaced)


def _reset_spec(s: _Seen, reset: ResetFile | None) -> dict[str, Any] | None:
    """The --reset-from entry of this query (None without one); refuses one Spark would ignore
    and one for a query that does not read Kafka."""
    spec = reset.queries.get(s.q.query_name) if reset is not None else None
    if spec is None or reset is None:
        return None
    if not s.q.reads_kafka:
        raise CheckpointGuardError(
            f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': {reset.path} holds Kafka "
            "starting offsets for it, but it reads the bronze table, not Kafka. Fix: remove it "
            f"from {reset.path} (`streamops checkpoint reconstruct` writes bronze queries only) "
            f"and `streamops checkpoint restore --job {s.job_name} --target "
            f"{s.bundle.target_name}` its checkpoint from a backup"
        )
    if s.now.query_id is not None:
        raise CheckpointGuardError(
            f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': --reset-from needs an "
            f"empty checkpoint, but {s.q.checkpoint} holds query {s.now.query_id} (Spark would "
            "ignore the starting offsets). Fix: move that checkpoint away first"
        )
    return spec


def guard_check(
    bundle: Bundle,
    job_name: str,
    *,
    event: str,
    recorded: Mapping[str, QueryRecord],
    observed: Sequence[Observed],
    reset: ResetFile | None = None,
) -> Verdict:
    """The guard's verdict from what the registry recorded (by query kind), what each query's
    checkpoint and sink hold now, and the --reset-from file; reads and writes nothing.

    Raises CheckpointGuardError for a reset entry that cannot work (see `_reset_spec`).
    """
    verdicts = []
    for now in observed:
        seen = _Seen(bundle, job_name, recorded.get(now.query.kind), now)
        problems = tuple(m for rule in GUARD_RULES if (m := rule(seen)) is not None)
        verdicts.append(QueryVerdict(now, problems, _reset_spec(seen, reset)))
    return Verdict(job_name, bundle.target_name, event, tuple(verdicts))


def recorded_after(
    registry: Registry, verdict: Verdict, *, reset: ResetFile | None, at: float
) -> Registry:
    """The registry with `verdict`'s job recorded as seen at `at` (and its reset, if any)."""
    records = {
        v.seen.query.kind: QueryRecord(
            v.seen.query.query_name,
            v.seen.query.checkpoint,
            v.seen.query_id,
            v.seen.offsets,
            v.seen.batch,
            verdict.event,
            at,
        )
        for v in verdict.queries
    }
    resets = registry.resets
    if reset is not None:
        done = ResetRecord(
            verdict.job_name,
            at,
            verdict.event,
            str(reset.path),
            verdict.starting,
            reset.source,
            verdict.overrode,
        )
        resets = (*resets, done)
    return replace(registry, jobs={**registry.jobs, verdict.job_name: records}, resets=resets)


def guard_record(
    registry: Registry,
    verdict: Verdict,
    *,
    path: str,
    so: dict[str, Any] | None,
    reset: ResetFile | None,
    at: float,
) -> None:
    """Seed the checkpoints a reset starts from, then write the job's records at `path`."""
    for v in verdict.queries:
        if v.reset is not None and isinstance(v.reset.get("batch"), int):
            q = v.seen.query
            seed_checkpoint(q.checkpoint, v.reset["batch"], v.reset["startingOffsets"], so, at=at)
    save_registry(path, so, recorded_after(registry, verdict, reset=reset, at=at))


def _registry_for_guard(bundle: Bundle, path: str, so: dict[str, Any]) -> Registry:
    try:
        return load_registry(path, so)
    except CheckpointError:
        raise
    except Exception as exc:  # adlfs/azure errors: denied, unknown account, network
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointGuardError(unreadable_registry(bundle, path, first)) from None


def guard(
    bundle: Bundle,
    job_name: str,
    *,
    event: str,
    reset_from: Path | None = None,
    storage_options: dict[str, Any] | None = None,
    record: bool = True,
    say: Any = None,
    now: float | None = None,
) -> dict[str, str]:
    """Refuse a start/deploy that would restart a query of `job_name` from scratch; record it.

    Returns {query name: startingOffsets JSON} from `reset_from` (empty without it). Raises
    CheckpointGuardError naming the job, the query and the fix. `now`: epoch seconds recorded
    (default: the wall clock, read once here).
    """
    if not bundle.target.checkpoints.guard and reset_from is None:
        # Said on every run: with the guard off, a reset or moved checkpoint goes unnoticed.
        if say is not None:
            say(guard_off_message(bundle, job_name))
        return {}
    so = storage_options
    if so is None:
        so = storage_options_for(bundle.checkpoint_root, bundle)
    path = registry_path(bundle)
    if so is None:
        if event == "start" and bundle.target.mode == "databricks":
            raise CheckpointGuardError(unreadable_registry(bundle, path, "no storage login"))
        if say is not None:
            say(
                f"warning: [{job_name}] checkpoint guard skipped: no storage options for "
                f"{bundle.checkpoint_root} (set ${STORAGE_OPTIONS_ENV})"
            )
        return {}
    registry = _registry_for_guard(bundle, path, so)
    reset = load_reset_file(reset_from).for_job(job_name) if reset_from is not None else None
    seen = observe(bundle, job_name, so)
    verdict = guard_check(
        bundle, job_name, event=event, recorded=registry.job(job_name), observed=seen, reset=reset
    )
    verdict.raise_if_refused()
    if record:
        at = time.time() if now is None else now
        guard_record(registry, verdict, path=path, so=so, reset=reset, at=at)
    return verdict.starting


def guard_off_message(bundle: Bundle, job_name: str) -> str:
    return (
        f"warning: [{job_name}] checkpoint guard is OFF (targets.{bundle.target_name}."
        "checkpoints.guard: false in bundle.yml): a reset or moved checkpoint will not be noticed"
    )


def unreadable_registry(bundle: Bundle, path: str, why: str) -> str:
    """One line: the registry that cannot be read, why, and the fix (the job does not start)."""
    return (
        f"cannot read the checkpoint registry {path} ({why}); not starting, since a reset "
        "checkpoint would go unnoticed. Fix: give the job cluster read/write access to "
        f"{bundle.checkpoint_root} (targets.{bundle.target_name}.databricks.storage), or set "
        f"targets.{bundle.target_name}.checkpoints.guard: false to run without the guard"
    )


def seed_checkpoint(
    location: str, batch: int, offsets: dict[str, Any], so: dict[str, Any] | None, *, at: float
) -> None:
    """Start a new checkpoint at batch `batch` (already in the sink) ending at `offsets`.

    The sink skips batch ids it already holds (its idempotency key is the batch id), so a new
    checkpoint must go on numbering after the sink's last batch rather than at 0: `metadata`
    with a new query id, `offsets/<batch>` and `commits/<batch>`; Spark resumes at batch+1 from
    `offsets`. Stateless queries only (a stateful one would look for state of that batch).
    `at`: the batch time written (epoch seconds).
    """
    import uuid

    fs, root = fsspec.core.url_to_fs(location, **(so or {}))
    root = root.rstrip("/")
    for sub in ("offsets", "commits"):
        fs.makedirs(f"{root}/{sub}", exist_ok=True)
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": int(at * 1000), "conf": {}}
    files = {"metadata": json.dumps({"id": str(uuid.uuid4())}) + "\n"}
    # Spark also reads offsets/<batch-1> on restart (the committed offsets before the last batch).
    for n in sorted({max(batch - 1, 0), batch}):
        files[f"offsets/{n}"] = "v1\n" + json.dumps(meta) + "\n" + json.dumps(offsets)
        files[f"commits/{n}"] = 'v1\n{"nextBatchWatermarkMs":0}'
    for rel, text in files.items():
        with fs.open(f"{root}/{rel}", "wt", encoding="utf-8") as fh:
            fh.write(text)
