"""What a `jobs/` entrypoint does: load the bundle, start Spark, run one job, report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamops.bundle import load
from streamops.runner import run_job
from streamops.spark.session import session_for


def run_from_args(
    bundle_path: Path | str,
    target: str,
    job: str,
    *,
    available_now: bool = False,
    say: Callable[[str], None] = print,
    after_commit: Callable[[int], None] | None = None,
    reset_from: Path | None = None,
) -> int:
    """Run `job` of the bundle on `target`; print one line per batch; return an exit code."""
    bundle = load(bundle_path, target)
    bundle.job(job)  # unknown job: a usage error before Spark starts
    for w in bundle.warnings:
        say(w.render())
    spark = session_for(bundle, app_name=f"streamops-{job}")

    def line(bp: object) -> None:
        from streamops.spark.progress import BatchProgress

        assert isinstance(bp, BatchProgress)
        say(f"[{bp.query_name}] batch {bp.batch_id}: {bp.input_rows} rows, {bp.malformed_rows} malformed, "
            f"{bp.dropped_by_watermark} late-dropped, {bp.duration_ms} ms, lag {bp.total_lag}")  # fmt: skip

    run = run_job(
        bundle,
        job,
        spark,
        available_now=True if available_now else None,
        on_batch=line,
        say=say,
        after_commit=after_commit,
        reset_from=reset_from,
    )
    say(f"[{job}] done: {len(run.batches)} batches, {run.input_rows} rows in, "
        f"{run.quarantined_rows} quarantined, {run.dropped_by_watermark} dropped by the watermark")  # fmt: skip
    return 0


def pause_after_commit(marker: Path) -> Callable[[int], None]:
    """Crash-test hook: after a gold Delta commit, record the batch id in `marker` and hang.

    The test then kills the process with SIGKILL at exactly the worst moment: the Delta table
    holds the batch but Spark has not written its commit file.
    """
    import time

    def hook(batch_id: int) -> None:
        marker.write_text(str(batch_id))
        time.sleep(3600)

    return hook
