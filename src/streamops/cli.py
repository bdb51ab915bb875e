"""`streamops` command line. Thin: parse arguments, call one function, print, exit with a code.

Exit codes: 0 success, 1 problems found / failure, 2 usage error (bad arguments, unknown job).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streamops.errors import BundleError, StreamopsError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Kafka -> Spark Structured Streaming -> Delta Lake pipelines, operated from Airflow.",
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the local stack.")
app.add_typer(local_app, name="local")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="path to bundle.yml")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="target in bundle.yml")]


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


@local_app.command("down")
def local_down(bundle: BundleOpt = Path("bundle.yml")) -> None:
    """Stop what `local up` started."""
    from streamops.localstack import LocalStack

    for name in LocalStack(_cache_dir(bundle)).down():
        out.print(f"{name:8} stopped", markup=False)


@local_app.command("status")
def local_status(bundle: BundleOpt = Path("bundle.yml")) -> None:
    """Show whether the local broker and Azurite run; exit 1 if one is down."""
    from streamops.localstack import LocalStack

    ok = True
    for svc in LocalStack(_cache_dir(bundle)).status():
        state = "up" if svc.running else "down"
        ok = ok and svc.running
        out.print(f"{svc.name:8} {state:5} {svc.address or '-':24} pid {svc.pid or '-'}", markup=False)
    if not ok:
        raise typer.Exit(1)


def _cache_dir(bundle: Path) -> Path:
    # The local stack belongs to the project folder that holds bundle.yml; no YAML is read.
    return bundle.resolve().parent / ".cache"


def main() -> None:
    """Entry point: run the app; streamops errors become one clear message, never a traceback."""
    try:
        app(standalone_mode=False)
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
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
