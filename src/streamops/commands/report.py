"""`streamops report`: a job's lag, batch duration and state size as a PNG and an HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from streamops.commands.console import out
from streamops.commands.options import BundleOpt, JobOpt, TargetOpt


def report(
    job: JobOpt,
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
) -> None:
    """Render JOB's exported metrics (lag per partition, batch duration against the trigger,
    state size) to <cache>/reports/JOB/report.png and report.html; print where."""
    from streamops.bundle import load
    from streamops.monitoring.metrics_report import render_report

    r = render_report(load(bundle, target), job)
    out.print(f"{job}: {r.points} metric points", markup=False)
    out.print(f"  png  {r.png}", markup=False)
    out.print(f"  html {r.html}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the `report` command to the main app."""
    app.command("report")(report)
