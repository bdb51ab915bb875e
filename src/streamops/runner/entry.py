"""What a `jobs/` entrypoint does: load the bundle, start Spark, run one job, report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamops.bundle import Bundle, load
from streamops.localstack import local_broker
from streamops.pipeline.progress import BatchProgress
from streamops.pipeline.session import session_for
from streamops.runner.job import run_job
from streamops.runner.stopping import StopRequest


def run_from_args(
    bundle_path: Path | str,
    target: str,
    job: str,
    *,
    available_now: bool = False,
    say: Callable[[str], None] = print,
    after_commit: Callable[[int], None] | None = None,
    reset_from: Path | None = None,
    recover: bool = False,
) -> int:
    """Run `job` of the bundle on `target`; print one line per batch; return an exit code.

    0 when a catch-up (`available_now`) finished or a stop was requested (SIGTERM: a cancelled
    run); a query that stopped on its own raises QueryStoppedError (non-zero: Databricks
    restarts the run). `recover`: the checkpoint is lost; rebuild starting offsets from the sink
    first (see `streamops checkpoint reconstruct`) and start from them through the reset guard.
    """
    bundle = load(bundle_path, target, local_broker=local_broker)
    bundle.job(job)  # unknown job: a usage error before Spark starts
    for w in bundle.warnings:
        say(w.render())
    if recover:
        reset_from = recovery_offsets(bundle, job, say=say)
    spark = session_for(bundle, app_name=f"streamops-{job}")

    def line(bp: BatchProgress) -> None:
        say(
            f"[{bp.query_name}] batch {bp.batch_id}: {bp.input_rows} rows, "
            f"{bp.malformed_rows} malformed, {bp.dropped_by_watermark} late-dropped, "
            f"{bp.duration_ms} ms, lag {bp.total_lag}"
        )

    stop = StopRequest()
    with stop.on_signals():
        run = run_job(
            bundle,
            job,
            spark,
            available_now=True if available_now else None,
            on_batch=line,
            say=say,
            after_commit=after_commit,
            reset_from=reset_from,
            stop=stop,
        )
    stopped = f" (stopped on request: {stop.reason})" if stop.requested else ""
    say(
        f"[{job}] done{stopped}: {len(run.batches)} batches, {run.input_rows} rows in, "
        f"{run.quarantined_rows} quarantined, {run.dropped_by_watermark} dropped by the watermark"
    )
    return 0


def recovery_offsets(bundle: Bundle, job: str, *, say: Callable[[str], None]) -> Path:
    """Reconstruct starting offsets for the job's lost bronze checkpoint and write them where the
    reset guard reads them; CheckpointError naming the fix when a lost gold checkpoint needs a
    backup instead."""
    from streamops.checkpoint.reconstruct import Reconstruction, reconstruct
    from streamops.checkpoint.registry import (
        lost_checkpoint_problem,
        lost_checkpoints,
        queries_of,
        sink_has_data,
        storage_options_for,
    )
    from streamops.errors import CheckpointError

    so = storage_options_for(bundle.checkpoint_root, bundle)
    lost = {q.query_name: q for q in lost_checkpoints(bundle, job, so)}
    # Only queries whose checkpoint is really gone start from rebuilt offsets; an intact one goes
    # on from its own checkpoint (the guard refuses starting offsets for a live checkpoint).
    for q in queries_of(bundle, job):
        if q.query_name not in lost:
            say(f"[{job}] recovery: {q.query_name} keeps its checkpoint")
        elif not q.reads_kafka and sink_has_data(q, so):
            raise CheckpointError(lost_checkpoint_problem(bundle, job, q))
    rebuild = [n for n, q in lost.items() if q.reads_kafka and sink_has_data(q, so)]
    rec = (
        reconstruct(bundle, job, only=rebuild)
        if rebuild
        else Reconstruction(job, bundle.target_name)
    )
    for r in rec.queries:
        say(f"[{job}] recovery: {r.query_name} from {r.source}: {r.why}")
    path = bundle.state_dir / "recovery" / f"{job}.offsets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rec.to_json() + "\n", encoding="utf-8")
    say(f"[{job}] recovery: starting offsets reconstructed into {path}")
    return path
