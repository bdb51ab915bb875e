"""`streamops` command line. Thin: parse arguments, call one function, print, exit with a code.

Exit codes: 0 success, 1 problems found / failure, 2 usage error (bad arguments, unknown job).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamops.commands.console import err, out
from streamops.commands.options import BundleOpt, JobOpt, TargetOpt
from streamops.errors import BundleError, StreamopsError, UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from streamops.demo.run import JobSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Kafka -> Spark Structured Streaming -> Delta Lake pipelines, operated from Airflow.",
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the local stack.")
app.add_typer(local_app, name="local")


@app.command()
def validate(
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
) -> None:
    """Check bundle.yml for TARGET: exit 0 valid (warnings allowed), 1 invalid, 2 usage error."""
    from streamops.bundle import load

    try:
        b = load(bundle, target)
    except BundleError as exc:
        for p in exc.problems:
            out.print(p.render(), markup=False)
        n = sum(p.severity == "error" for p in exc.problems)
        err.print(f"{bundle}: {n} error(s) for target '{target}'", markup=False)
        raise typer.Exit(1) from None
    for w in b.warnings:
        out.print(w.render(), markup=False)
    err.print(
        f"{bundle}: valid for target '{target}' "
        f"({len(b.spec.jobs)} jobs, {len(b.warnings)} warning(s))",
        markup=False,
    )


@local_app.command("up")
def local_up(bundle: BundleOpt = Path("bundle.yml")) -> None:
    """Start the local broker and Azurite on free loopback ports (idempotent)."""
    from streamops.localstack import LocalStack

    stack = LocalStack(_cache_dir(bundle))
    for svc in stack.up():
        out.print(f"{svc.name:8} up    {svc.address:24} pid {svc.pid}  log {svc.log}", markup=False)
        for listener, address in svc.addresses.items():
            if address != svc.address:
                out.print(f"{'':8}       {address:24} {listener}", markup=False)
    # The SASL password is generated per start and kept out of terminals and logs.
    out.print(f"SASL login (user, password): in {stack.state_file}", markup=False)


@local_app.command("down")
def local_down(bundle: BundleOpt = Path("bundle.yml")) -> None:
    """Stop what `local up` started."""
    from streamops.localstack import LocalStack

    for name in LocalStack(_cache_dir(bundle)).down():
        out.print(f"{name:8} stopped", markup=False)


@local_app.command("status")
def local_status(
    bundle: BundleOpt = Path("bundle.yml"),
    as_json: Annotated[
        bool, typer.Option("--json", help="print a JSON list: name, state, addresses, pid, log")
    ] = False,
) -> None:
    """Show whether the local broker and Azurite run; exit 1 if one is down."""
    import json

    from streamops.localstack import LocalStack

    statuses = LocalStack(_cache_dir(bundle)).status()
    if as_json:
        # Plain stdout: no console markup, emoji or wrapping applied to the JSON.
        typer.echo(json.dumps([s.as_json() for s in statuses], indent=2))
    else:
        for svc in statuses:
            state = "up" if svc.running else "down"
            extra = "  ".join(
                f"{listener} {address}"
                for listener, address in svc.addresses.items()
                if address != svc.address
            )
            out.print(
                f"{svc.name:8} {state:5} {svc.address or '-':24} pid {svc.pid or '-'}"
                + (f"  {extra}" if extra else ""),
                markup=False,
            )
    if not all(s.running for s in statuses):
        raise typer.Exit(1)


def _print_batch(job: str, bp: object) -> None:
    from streamops.pipeline.progress import BatchProgress

    assert isinstance(bp, BatchProgress)
    out.print(
        f"  [{bp.query_name}] batch {bp.batch_id}: {bp.input_rows} rows in {bp.duration_ms} ms, "
        f"{bp.malformed_rows} malformed, {bp.dropped_by_watermark} late-dropped, "
        f"lag {bp.total_lag}, state {bp.state_rows} rows",
        markup=False,
    )


_DEMO_COLUMNS = (
    "job",
    "produced",
    "input rows",
    "bronze",
    "quarantined",
    "late-dropped",
    "events in gold",
    "window rows",
    "version",
    "batches",
    "lag at end",
    "check",
)


def _demo_table(summaries: list[JobSummary]) -> Table:
    """One row per job: what it reports beside what the produced sample implies."""
    from rich.table import Table

    table = Table(title="streamops demo: local target")
    for col in _DEMO_COLUMNS:
        table.add_column(col, justify="left" if col in ("job", "lag at end", "check") else "right")
    for s in summaries:
        lag = "; ".join(
            f"{sum(parts.values())} over {len(parts)} partitions"
            if not any(parts.values())
            else " ".join(f"p{p}={n}" for p, n in parts.items())
            for parts in s.lag_end.values()
        )
        table.add_row(
            s.job,
            str(s.produced),
            str(s.input_rows),
            f"{s.bronze_rows} / {s.expected_bronze}",
            f"{s.quarantined_rows} / {s.expected_malformed}",
            f"{s.dropped_by_watermark} / {s.expected_dropped}",
            f"{s.table_events} / {s.expected_in_table}",
            str(s.table_rows),
            str(s.table_version),
            str(s.batches),
            lag or "-",
            "OK" if s.ok else "MISMATCH",
        )
    return table


@app.command()
def demo(
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    scale: Annotated[int, typer.Option(help="multiply the sample size")] = 1,
) -> None:
    """Run every job end to end on the local target with a sample; print a checked summary."""
    from streamops.bundle import load
    from streamops.demo.run import run_demo
    from streamops.monitoring.metrics_report import render_report

    b = load(bundle, target)
    for w in b.warnings:
        err.print(w.render(), markup=False)
    summaries = run_demo(
        b, say=lambda m: out.print(f"==> {m}", markup=False), on_batch=_print_batch, scale=scale
    )
    out.print(_demo_table(summaries))
    out.print("(a / b = what the job reports / what the produced sample implies)", markup=False)
    for s in summaries:
        out.print(f"  {s.job}: gold {s.table_uri} (bronze and quarantine beside it)", markup=False)
    for s in summaries:
        r = render_report(b, s.job)
        out.print(f"  {s.job}: report {r.html} (and {r.png.name})", markup=False)
    if not all(s.ok for s in summaries):
        err.print("some jobs do not agree with what was produced (see MISMATCH)", markup=False)
        raise typer.Exit(1)


@app.command("late-report")
def late_report_cmd(
    job: JobOpt,
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List, per window, the events in bronze that the gold aggregate missed (too late)."""
    import json

    from streamops.bundle import load
    from streamops.monitoring.late_report import late_report

    windows = late_report(load(bundle, target), job)
    if as_json:
        rows = [dict(w.__dict__, missed=w.missed) for w in windows]
        out.print(json.dumps(rows, default=str, indent=2), markup=False)
        return
    if not windows:
        out.print(f"{job}: every good event in bronze is counted in gold", markup=False)
        return
    for w in windows:
        group = " ".join(f"{k}={v}" for k, v in w.group.items())
        out.print(
            f"{w.window_start} .. {w.window_end}  {group}: {w.missed} missed "
            f"(bronze {w.bronze_events}, gold {w.gold_events})",
            markup=False,
        )
    total = sum(w.missed for w in windows)
    out.print(
        f"{job}: {total} late events in {len(windows)} windows are in bronze only", markup=False
    )


@app.command("run")
def run_cmd(
    job: JobOpt,
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    available_now: Annotated[
        bool, typer.Option("--available-now", help="catch up, then stop")
    ] = False,
    reset_from: Annotated[
        Path | None,
        typer.Option(
            "--reset-from",
            help="start from the offsets file of `streamops checkpoint reconstruct` (recorded)",
        ),
    ] = None,
) -> None:
    """Run one streaming job (what `spark-submit jobs/stream.py` does)."""
    from streamops.runner.entry import run_from_args

    run_from_args(
        bundle,
        target,
        job,
        available_now=available_now,
        say=lambda m: out.print(m, markup=False),
        reset_from=reset_from,
    )


# --- command groups that live in their own modules --------------------------------------------
# Each module in streamops.commands defines `register(app)`; add one line per module here.
def _register_command_modules() -> None:
    from streamops.commands import alerts, checkpoint, compact, deploy, report

    alerts.register(app)
    checkpoint.register(app)
    compact.register(app)
    deploy.register(app)
    report.register(app)


_register_command_modules()


def _cache_dir(bundle: Path) -> Path:
    # The local stack belongs to the project folder that holds bundle.yml; no YAML is read.
    return bundle.resolve().parent / ".cache"


def main() -> None:
    """Entry point: run the app; streamops errors become one clear message, never a traceback."""
    try:
        rv = app(standalone_mode=False)
        # Without standalone mode, click hands back typer.Exit's code instead of exiting.
        sys.exit(rv if isinstance(rv, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted", markup=False)
        sys.exit(130)
    except UsageError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except StreamopsError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors of the (vendored) click parser: show them as click would, exit 2.
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
