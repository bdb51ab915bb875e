"""`streamops alerts evaluate`: evaluate the bundle's alert rules from the exported metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from streamops.commands.console import err, out


def register(app: typer.Typer) -> None:
    """Add the `alerts` command group to the main app."""
    alerts_app = typer.Typer(no_args_is_help=True, help="Alert rules: evaluate, explain, page.")
    app.add_typer(alerts_app, name="alerts")

    @alerts_app.command("evaluate")
    def evaluate(
        bundle: Annotated[Path, typer.Option("--bundle", "-b", help="path to bundle.yml")] = Path(
            "bundle.yml"
        ),
        target: Annotated[str, typer.Option("--target", "-t", help="target in bundle.yml")] = (
            "local"
        ),
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

        try:
            at = datetime.fromisoformat(now) if now else datetime.now(UTC)
        except ValueError:
            err.print(f"--now '{now}' is not an ISO time, e.g. 2026-01-01T12:00:00+00:00",
                      markup=False)  # fmt: skip
            raise typer.Exit(2) from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        b = load(bundle, target)
        if explain:
            for e in explain_rules(b):
                out.print(f"# {e.rule}: {e.description}\n{e.kql}\n", markup=False)
        ev = evaluate_bundle(b, at, page=page)
        if json_out:
            out.print(json.dumps({
                "target": target, "now": at.isoformat(), "blind": ev.blind,
                "findings": [{**f.__dict__, "dedup_key": f.dedup_key(target)} for f in ev.findings],
                "triggered": ev.sync.triggered if ev.sync else [],
                "resolved": ev.sync.resolved if ev.sync else [],
            }, default=str, indent=1), markup=False)  # fmt: skip
        else:
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
        n = len(ev.breaches)
        err.print(f"{len(ev.findings)} checks, {n} breached (target '{target}')", markup=False)
        if n or ev.blind:
            raise typer.Exit(1)
