"""`streamops compact`: OPTIMIZE / Z-ORDER the changed partitions of a table, VACUUM it safely."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamops.commands.console import err, out
from streamops.commands.options import BundleOpt, JsonOpt, TargetOpt

if TYPE_CHECKING:
    from streamops.compaction.run_report import CompactionReport


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to file descriptor 1 meanwhile to stderr.

    Spark's JVM (started inside, on the local target) inherits it and prints VACUUM progress
    ("Deleted N files and directories ...") there; `--json` keeps stdout for the JSON alone.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _print_plan(report: CompactionReport) -> None:
    """The dry run's plan: partitions, files and bytes that would be rewritten."""
    plan = report.plan
    for p in plan.get("partitions", []):
        out.print(
            f"  plan: {p['partition']}: {p['files']} files, {p['bytes']} bytes "
            f"({p['small_files']} small)",
            markup=False,
        )
    out.print(
        f"  plan: {len(plan.get('partitions', []))} partition(s), "
        f"{plan.get('files', 0)} files, {plan.get('bytes', 0)} bytes to rewrite",
        markup=False,
    )


def compact(
    table: Annotated[str, typer.Option("--table", "-T", help="table key in bundle.yml")],
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    zorder: Annotated[
        bool, typer.Option("--zorder", help="Z-ORDER by the table's zorder_by columns")
    ] = False,
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="VACUUM with the safe retention afterwards")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan (partitions, files, bytes) only")
    ] = False,
    retain_hours: Annotated[
        float | None,
        typer.Option("--retain-hours", help="VACUUM retention; refused below the safe minimum"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compact TABLE: exit 0 done (or planned), 1 failed, 2 usage error or unsafe VACUUM."""
    from streamops.bundle import load
    from streamops.compaction import compact_table
    from streamops.compaction.run_report import emit_metrics, save

    if retain_hours is not None and not vacuum:
        err.print("--retain-hours needs --vacuum", markup=False)
        raise typer.Exit(2)
    b = load(bundle, target)
    with _stdout_to_stderr() if json_out else nullcontext():
        report = compact_table(
            b, table, zorder=zorder, vacuum=vacuum, dry_run=dry_run, retain_hours=retain_hours
        )
    if json_out:
        out.print(report.to_json(), markup=False)
    else:
        for line in report.lines():
            out.print(line, markup=False)
        if dry_run:
            _print_plan(report)
    if not dry_run:
        path = save(b, report)
        emit_metrics(b, report, datetime.now(UTC))
        err.print(f"report: {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the `compact` command to the main app."""
    app.command("compact")(compact)
