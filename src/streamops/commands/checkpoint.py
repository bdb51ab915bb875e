"""`streamops checkpoint ...`: check, back up, restore a Spark checkpoint; reconstruct offsets.

Remote locations (abfss://, abfs://) take their adlfs options from $STREAMOPS_STORAGE_OPTIONS.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamops.commands.options import BundleOpt, JobOpt, JsonOpt, TargetOpt

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.checkpoint.registry import QueryNow


def _storage_options(location: str, bundle: Bundle | None = None) -> dict[str, Any]:
    from streamops.checkpoint.registry import STORAGE_OPTIONS_ENV, storage_options_for
    from streamops.errors import UsageError

    options = storage_options_for(location, bundle)
    if options is None:
        raise UsageError(
            f"{location}: no storage options for a remote location. Fix: set "
            f"${STORAGE_OPTIONS_ENV} to a JSON object of adlfs options"
        )
    return options


def _job_of(bundle: Bundle, location: str) -> tuple[str, QueryNow] | None:
    """(job, query) whose checkpoint is `location`."""
    from streamops.checkpoint.registry import queries_of

    for name in bundle.jobs:
        for q in queries_of(bundle, name):
            if q.checkpoint.rstrip("/") == location.rstrip("/"):
                return name, q
    return None


def _bundle_checks(bundle: Bundle, location: str, bootstrap: str | None) -> dict[str, Any]:
    """`check` arguments that the bundle supplies for one of its checkpoints: the source broker,
    the source table of a gold query and the query id the registry recorded."""
    from streamops.checkpoint.registry import load_registry, registry_path
    from streamops.errors import LocalStackError

    found = _job_of(bundle, location)
    if found is None:
        note = (
            f"{location} is no job's checkpoint in {bundle.path.name} (target {bundle.target_name})"
        )
        return {"bootstrap_servers": bootstrap, "registry_note": note}
    job, q = found
    reg = load_registry(registry_path(bundle), _storage_options(bundle.checkpoint_root, bundle))
    rec = reg.job(job).get(q.kind)
    out: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "source_tables": q.source_tables,
        "expected_query_id": rec.query_id if rec else None,
        "registry_note": f"job '{job}' has no query id recorded yet",
    }
    if bootstrap is None:
        try:
            kafka = bundle.runtime.kafka_for(bundle.job(job).source)
        except LocalStackError:
            return out  # the local broker is not up: the broker check says it was skipped
        out.update(bootstrap_servers=kafka.bootstrap_servers, kafka_config=kafka.librdkafka())
    return out


def check_cmd(
    location: Annotated[str, typer.Argument(help="checkpoint folder (path or abfss:// URL)")],
    json_out: JsonOpt = False,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="bundle.yml: broker + registry checks")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    bootstrap_servers: Annotated[
        str | None, typer.Option("--bootstrap-servers", help="broker for the offset checks")
    ] = None,
) -> None:
    """Check a checkpoint: exit 0 healthy, 1 problems found, 2 unreadable or not a folder."""
    from streamops.bundle import load
    from streamops.checkpoint.checks import check
    from streamops.checkpoint.reader import require_folder
    from streamops.errors import UsageError
    from streamops.localstack import local_broker

    if (bundle is None) != (target is None):
        raise UsageError("give --bundle and --target together")
    # An empty path or a file is a wrong argument (exit 2), not a checkpoint with problems.
    require_folder(location, _storage_options(location) if location.strip() else {})
    if bundle is not None and target is not None:
        b = load(bundle, target, local_broker=local_broker)
        report = check(
            location,
            _storage_options(location, b),
            **_bundle_checks(b, location, bootstrap_servers),
        )
    else:
        report = check(location, _storage_options(location), bootstrap_servers=bootstrap_servers)
    print(report.to_json() if json_out else report.render())
    raise typer.Exit(report.exit_code)


def reconstruct_cmd(
    job: JobOpt,
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON here")] = None,
) -> None:
    """Write startingOffsets for a new bronze checkpoint of JOB from what its sink holds."""
    from streamops.bundle import load
    from streamops.checkpoint.reconstruct import reconstruct
    from streamops.localstack import local_broker

    b = load(bundle, target, local_broker=local_broker)
    rec = reconstruct(b, job)
    text = rec.to_json()
    for q in rec.queries:
        print(f"{q.query_name}: from {q.source}: {q.why}", file=sys.stderr)
    for what, why in rec.skipped.items():
        print(f"skipped {what}: {why}", file=sys.stderr)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        print(
            f"wrote {out}; start with: streamops run --job {job} --target {target} "
            f"--reset-from {out}",
            file=sys.stderr,
        )


def backup_cmd(
    job: JobOpt, bundle: BundleOpt = Path("bundle.yml"), target: TargetOpt = "local"
) -> None:
    """Copy a consistent snapshot of JOB's checkpoints to the versioned backup location."""
    from streamops.bundle import load
    from streamops.checkpoint.backup import backup, backup_root
    from streamops.checkpoint.registry import queries_of

    b = load(bundle, target)
    root = backup_root(b)
    for q in queries_of(b, job):
        made = backup(
            q.checkpoint,
            q.query_name,
            root,
            retention=b.target.checkpoints.backup_retention,
            storage_options=_storage_options(q.checkpoint, b),
        )
        print(f"{q.query_name}: batch {made.batch}, {made.files} files -> {made.path}")


def restore_cmd(
    job: JobOpt,
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    backup_name: Annotated[
        str | None, typer.Option("--backup", help="backup folder name (default: newest)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="move a non-empty checkpoint aside first")
    ] = False,
) -> None:
    """Put JOB's newest (or the named) backup back where a checkpoint is gone, after checking
    it; --force replaces intact checkpoints too (moving them aside)."""
    from streamops.bundle import load
    from streamops.checkpoint.backup import backup_root, is_empty, list_backups, restore
    from streamops.checkpoint.registry import queries_of
    from streamops.errors import CheckpointError

    b = load(bundle, target)
    root = backup_root(b)
    for q in queries_of(b, job):
        options = _storage_options(q.checkpoint, b)
        if not force and not is_empty(q.checkpoint, options):
            print(f"{q.query_name}: keeps its checkpoint {q.checkpoint} (--force replaces it)")
            continue
        have = list_backups(root, q.query_name, options)
        pick = [p for p in have if backup_name is None or p.endswith("/" + backup_name)]
        if not pick:
            raise CheckpointError(
                f"no backup{' ' + backup_name if backup_name else ''} of '{q.query_name}' "
                f"under {root}. Fix: `streamops checkpoint backup --job {job}` first"
            )
        n = restore(pick[-1], q.checkpoint, storage_options=options, force=force)
        print(f"{q.query_name}: restored {n} files from {pick[-1]} to {q.checkpoint}")


def register(app: typer.Typer) -> None:
    """Add the `checkpoint` command group to the main app."""
    ck = typer.Typer(no_args_is_help=True, help="Check, back up and restore Spark checkpoints.")
    app.add_typer(ck, name="checkpoint")
    ck.command("check")(check_cmd)
    ck.command("reconstruct")(reconstruct_cmd)
    ck.command("backup")(backup_cmd)
    ck.command("restore")(restore_cmd)
