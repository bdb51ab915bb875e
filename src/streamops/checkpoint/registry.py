"""The reset and drift guard: what each job's queries looked like at the last deploy or start.

The registry is one small JSON file on the checkpoints' own storage,
`<checkpoint_root>/_streamops_registry.json`:

    {"version": 1,
     "jobs": {"<job>": {"gold": {"query_name", "checkpoint", "query_id", "offsets", "batch",
                                 "event", "at"}, "bronze": {...}}},
     "resets": [{"job", "query", "at", "offsets_file", "starting_offsets", "overrode"}]}

`guard` refuses (CheckpointGuardError) a start or deploy that would silently restart a query from
scratch; `--reset-from OFFSETS_FILE` is the only way past it, and it is recorded.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

from streamops.bundle.runtime import STORAGE_OPTIONS_ENV, storage_options_env
from streamops.checkpoint.reader import list_checkpoint, read_offsets, read_query_id
from streamops.errors import BundleError, CheckpointError, CheckpointGuardError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

REGISTRY_NAME = "_streamops_registry.json"


def storage_options_for(location: str, bundle: Bundle | None = None) -> dict[str, Any] | None:
    """fsspec options for `location`: {} for local paths; for remote ones the bundle's resolved
    storage options (without a bundle: $STREAMOPS_STORAGE_OPTIONS), or None when none are set
    (the storage cannot be reached from here)."""
    if "://" not in location or location.startswith("file:"):
        return {}
    try:
        opts = bundle.runtime.storage_options(location) if bundle else storage_options_env()
    except BundleError as exc:
        raise CheckpointError(f"{exc} (while reading {location})") from None
    return None if opts is None else dict(opts)


@dataclass(frozen=True)
class QueryRecord:
    """One query of a job as recorded at a deploy or a start."""

    query_name: str
    checkpoint: str
    query_id: str | None
    offsets: list[dict[str, Any]] | None
    batch: int | None
    event: str
    at: float


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
    return [
        QueryNow("bronze", job.bronze_query_name, bundle.bronze_checkpoint_location(job),
                 (bundle.bronze_location(job), bundle.quarantine_location(job))),
        QueryNow("gold", job.query_name, bundle.checkpoint_location(job),
                 (bundle.table_location(job.sink),), (bundle.bronze_location(job),)),
    ]  # fmt: skip


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


def registry_path(bundle: Bundle) -> str:
    return f"{bundle.checkpoint_root.rstrip('/')}/{REGISTRY_NAME}"


def load_registry(path: str, so: dict[str, Any] | None) -> dict[str, Any]:
    fs, p = fsspec.core.url_to_fs(path, **(so or {}))
    try:
        with fs.open(p, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {"version": 1, "jobs": {}, "resets": []}
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: the checkpoint registry is not valid JSON ({exc.msg}). Fix: restore it from "
            "a checkpoint backup, or delete it to start recording afresh (the guard then has no "
            "history until the next start)"
        ) from None
    data.setdefault("jobs", {})
    data.setdefault("resets", [])
    return dict(data)


def save_registry(path: str, so: dict[str, Any] | None, data: dict[str, Any]) -> None:
    fs, p = fsspec.core.url_to_fs(path, **(so or {}))
    parent = p.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    # Write beside, then move: a reader never sees half a file (one rename on ADLS/local).
    tmp = f"{p}.tmp-{os.getpid()}"
    with fs.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    fs.mv(tmp, p)


def recorded(bundle: Bundle, job_name: str, so: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registry's records of `job_name` by query kind ({} when none)."""
    so = storage_options_for(bundle.checkpoint_root, bundle) if so is None else so
    data = load_registry(registry_path(bundle), so)
    return dict(data["jobs"].get(job_name, {}))


def _holds_batches(table: str, app_id: str, so: dict[str, Any] | None) -> bool:
    # The sink writes each batch under its query's app id (txnAppId). A table that exists but
    # holds none (the job creates bronze before its queries start) is no reason to refuse.
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dt = DeltaTable(table, storage_options=so or None)
    except TableNotFoundError:
        return False
    return dt.transaction_version(app_id) is not None


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


def load_reset_file(path: Path) -> dict[str, Any]:
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
    return data


@dataclass(frozen=True)
class _Seen:
    """One query at a start or deploy: the bundle's view, the registry's record, the storage."""

    bundle: Bundle
    job_name: str
    q: QueryNow
    rec: dict[str, Any] | None  # what the registry recorded for this query kind, if anything
    qid: str | None  # the query id in its checkpoint now
    so: dict[str, Any] | None


def _moved(s: _Seen) -> str | None:
    if s.rec is None or s.rec.get("checkpoint") == s.q.checkpoint:
        return None
    return (
        f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': its checkpoint location changed "
        f"from {s.rec.get('checkpoint')} to {s.q.checkpoint}; starting there would start the "
        "query from scratch. Fix: put the old location back (job.checkpoint in bundle.yml), or "
        "move the old checkpoint there"
    )


def _renamed(s: _Seen) -> str | None:
    if s.rec is None or s.rec.get("query_name") == s.q.query_name:
        return None
    return (
        f"job '{s.job_name}' {s.q.kind} query: its query name changed from "
        f"'{s.rec.get('query_name')}' to '{s.q.query_name}' (the checkpoint and the sink's "
        "idempotency key follow the name). Fix: put the old query_name back in bundle.yml"
    )


def _emptied(s: _Seen) -> str | None:
    if s.qid is not None or not sink_has_data(s.q, s.so):
        return None
    return lost_checkpoint_problem(s.bundle, s.job_name, s.q)


def _replaced(s: _Seen) -> str | None:
    recorded_id = (s.rec or {}).get("query_id")
    if not recorded_id or s.qid is None or recorded_id == s.qid:
        return None
    return (
        f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': query id {s.qid} in "
        f"{s.q.checkpoint} differs from {recorded_id} recorded at the last "
        f"{(s.rec or {}).get('event', 'start')}: the checkpoint was reset or replaced. Fix: "
        "restore the right backup, or start with --reset-from FILE to accept it"
    )


# Each rule returns the problem (with its fix) or None.
GUARD_RULES = (_moved, _renamed, _emptied, _replaced)


def _reset_spec(s: _Seen, reset: dict[str, Any] | None, path: Path | None) -> Any:
    """The --reset-from entry of this query (None without one); refuses one Spark would ignore
    and one for a query that does not read Kafka."""
    spec = (reset or {}).get("queries", {}).get(s.q.query_name)
    if spec is None:
        return None
    if not s.q.reads_kafka:
        raise CheckpointGuardError(
            f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': {path} holds Kafka starting "
            f"offsets for it, but it reads the bronze table, not Kafka. Fix: remove it from "
            f"{path} (`streamops checkpoint reconstruct` writes bronze queries only) and "
            f"`streamops checkpoint restore --job {s.job_name} --target {s.bundle.target_name}` "
            "its checkpoint from a backup"
        )
    if s.qid is not None:
        raise CheckpointGuardError(
            f"job '{s.job_name}' {s.q.kind} query '{s.q.query_name}': --reset-from needs an "
            f"empty checkpoint, but {s.q.checkpoint} holds query {s.qid} (Spark would ignore the "
            "starting offsets). Fix: move that checkpoint away first"
        )
    return spec


def guard(
    bundle: Bundle,
    job_name: str,
    *,
    event: str,
    reset_from: Path | None = None,
    storage_options: dict[str, Any] | None = None,
    record: bool = True,
    say: Any = None,
) -> dict[str, str]:
    """Refuse a start/deploy that would restart a query of `job_name` from scratch; record it.

    Returns {query name: startingOffsets JSON} from `reset_from` (empty without it). Raises
    CheckpointGuardError naming the job, the query and the fix.
    """
    if not bundle.target.checkpoints.guard and reset_from is None:
        # Said on every run: with the guard off, a reset or moved checkpoint goes unnoticed.
        if say is not None:
            say(guard_off_message(bundle, job_name))
        return {}
    so = (
        storage_options
        if storage_options is not None
        else storage_options_for(bundle.checkpoint_root, bundle)
    )
    reg_path = registry_path(bundle)
    if so is None:
        if event == "start" and bundle.target.mode == "databricks":
            raise CheckpointGuardError(unreadable_registry(bundle, reg_path, "no storage login"))
        if say is not None:
            say(f"warning: [{job_name}] checkpoint guard skipped: no storage options for "
                f"{bundle.checkpoint_root} (set ${STORAGE_OPTIONS_ENV})")  # fmt: skip
        return {}
    try:
        data = load_registry(reg_path, so)
    except CheckpointError:
        raise
    except Exception as exc:  # adlfs/azure errors: denied, unknown account, network
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointGuardError(unreadable_registry(bundle, reg_path, first)) from None
    job_rec: dict[str, Any] = data["jobs"].get(job_name, {})
    reset = load_reset_file(reset_from) if reset_from is not None else None
    if reset is not None and reset.get("job") not in (None, job_name):
        raise CheckpointGuardError(
            f"{reset_from} was reconstructed for job '{reset.get('job')}', not '{job_name}'. "
            f"Fix: run `streamops checkpoint reconstruct --job {job_name}`"
        )
    starting: dict[str, str] = {}
    problems: list[str] = []
    overrode: dict[str, list[str]] = {}
    now: dict[str, dict[str, Any]] = {}
    for q in queries_of(bundle, job_name):
        seen = _Seen(bundle, job_name, q, job_rec.get(q.kind), _query_id(q.checkpoint, so), so)
        mine = [m for rule in GUARD_RULES if (m := rule(seen)) is not None]
        spec = _reset_spec(seen, reset, reset_from)
        if spec is None:
            problems += mine
        else:
            starting[q.query_name] = json.dumps(spec["startingOffsets"], separators=(",", ":"))
            if record and isinstance(spec.get("batch"), int):
                seed_checkpoint(q.checkpoint, spec["batch"], spec["startingOffsets"], so)
            if mine:
                overrode[q.query_name] = mine
        batch, offsets = _last_offsets(q.checkpoint, so) if seen.qid else (None, None)
        now[q.kind] = {
            "query_name": q.query_name, "checkpoint": q.checkpoint, "query_id": seen.qid,
            "offsets": offsets, "batch": batch, "event": event, "at": time.time(),
        }  # fmt: skip
    if problems:
        raise CheckpointGuardError(
            f"refusing to {event} job '{job_name}' (target {bundle.target_name}):\n  "
            + "\n  ".join(problems)
        )
    if record:
        data["jobs"][job_name] = now
        if reset is not None:
            data["resets"].append({
                "job": job_name, "at": time.time(), "event": event,
                "offsets_file": str(reset_from), "starting_offsets": starting,
                "source": reset.get("source"), "overrode": overrode,
            })  # fmt: skip
        save_registry(reg_path, so, data)
    return starting


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
    location: str, batch: int, offsets: dict[str, Any], so: dict[str, Any] | None
) -> None:
    """Start a new checkpoint at batch `batch` (already in the sink) ending at `offsets`.

    The sink skips batch ids it already holds (its idempotency key is the batch id), so a new
    checkpoint must go on numbering after the sink's last batch rather than at 0: `metadata`
    with a new query id, `offsets/<batch>` and `commits/<batch>`; Spark resumes at batch+1 from
    `offsets`. Stateless queries only (a stateful one would look for state of that batch).
    """
    import uuid

    fs, root = fsspec.core.url_to_fs(location, **(so or {}))
    root = root.rstrip("/")
    for sub in ("offsets", "commits"):
        fs.makedirs(f"{root}/{sub}", exist_ok=True)
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": int(time.time() * 1000), "conf": {}}
    files = {"metadata": json.dumps({"id": str(uuid.uuid4())}) + "\n"}
    # Spark also reads offsets/<batch-1> on restart (the committed offsets before the last batch).
    for n in sorted({max(batch - 1, 0), batch}):
        files[f"offsets/{n}"] = "v1\n" + json.dumps(meta) + "\n" + json.dumps(offsets)
        files[f"commits/{n}"] = 'v1\n{"nextBatchWatermarkMs":0}'
    for rel, text in files.items():
        with fs.open(f"{root}/{rel}", "wt", encoding="utf-8") as fh:
            fh.write(text)
