"""`streamops alerts evaluate`: evaluate the bundle's alert rules from the exported metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamops.commands.console import err, out
from streamops.commands.options import BundleOpt, TargetOpt

if TYPE_CHECKING:
    from streamops.monitoring.alerts.evaluate import Evaluation


def _as_of(now: str | None) -> datetime:
    """The evaluation time: `--now` (naive means UTC) or the current time; exit 2 if unreadable."""
    try:
        at = datetime.fromisoformat(now) if now else datetime.now(UTC)
    except ValueError:
        err.print(f"--now '{now}' is not an ISO time, e.g. 2026-01-01T12:00:00+00:00", markup=False)
        raise typer.Exit(2) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _print_json(ev: Evaluation, target: str, at: datetime) -> None:
    findings = [{**f.__dict__, "dedup_key": f.dedup_key(target)} for f in ev.findings]
    doc = {
        "target": target,
        "now": at.isoformat(),
        "blind": ev.blind,
        "findings": findings,
        "triggered": ev.sync.triggered if ev.sync else [],
        "resolved": ev.sync.resolved if ev.sync else [],
    }
    out.print(json.dumps(doc, default=str, indent=1), markup=False)


def _print_text(ev: Evaluation) -> None:
    if ev.blind:
        out.print(f"BLIND  the metrics could not be read: {ev.blind}", markup=False)
    for f in ev.findings:
        mark = "BREACH" if f.breached else "ok    "
        out.print(f"{mark} {f.rule:16} {f.summary}", markup=False)
    if ev.sync:
        for k in ev.sync.triggered:
            out.print(f"paged    {k}", markup=False)
        for k in ev.sync.resolved:
            out.print(f"resolved {k}", markup=False)
        for k in ev.sync.failed:
            out.print(f"FAILED   {k} (will retry on the next evaluation)", markup=False)


def evaluate(
    bundle: BundleOpt = Path("bundle.yml"),
    target: TargetOpt = "local",
    explain: Annotated[
        bool, typer.Option("--explain", help="also print each rule's KQL (Azure Monitor)")
    ] = False,
    page: Annotated[
        bool, typer.Option("--page", help="page new breaches and resolve recovered ones")
    ] = False,
    now: Annotated[
        str | None, typer.Option("--now", help="evaluate as of this ISO time (default: now)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print findings as JSON")] = False,
) -> None:
    """Evaluate every rule: exit 0 nothing breached, 1 breaches (or the metrics could not be
    read), 2 usage error. Local targets read <cache>/metrics/*.jsonl; azure-monitor targets
    query Log Analytics with azure-monitor-query."""
    from streamops.bundle import load
    from streamops.monitoring.alerts.evaluate import evaluate_bundle
    from streamops.monitoring.alerts.evaluate import explain as explain_rules

    at = _as_of(now)
    b = load(bundle, target)
    if explain:
        for e in explain_rules(b):
            out.print(f"# {e.rule}: {e.description}\n{e.kql}\n", markup=False)
    ev = evaluate_bundle(b, at, page=page)
    if json_out:
        _print_json(ev, target, at)
    else:
        _print_text(ev)
    n = len(ev.breaches)
    err.print(f"{len(ev.findings)} checks, {n} breached (target '{target}')", markup=False)
    if n or ev.blind:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `alerts` command group to the main app."""
    alerts_app = typer.Typer(no_args_is_help=True, help="Alert rules: evaluate, explain, page.")
    app.add_typer(alerts_app, name="alerts")
    alerts_app.command("evaluate")(evaluate)
