"""`streamops deploy`: create or update a job's Databricks job from the bundle (with a plan)."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from streamops.commands.console import err, out
from streamops.errors import UsageError

BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="path to bundle.yml")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="target in bundle.yml")]


def _connection_id(bundle: object) -> str:
    """The Airflow connection to use; built from bundle.yml's host + token when not defined."""
    from streamops.bundle import Bundle

    assert isinstance(bundle, Bundle)
    db = bundle.target.databricks
    conn_id = db.airflow_conn_id if db else "databricks_default"
    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    if var not in os.environ and db is not None and db.host and db.token is not None:
        # Outside Airflow: an in-process connection from the bundle (the token is resolved now,
        # kept in this process only, never printed).
        os.environ[var] = json.dumps(
            {"conn_type": "databricks", "host": db.host, "password": db.token.resolve()}
        )
    return conn_id


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy(
        job: Annotated[str, typer.Option("--job", "-j", help="job name in bundle.yml")],
        target: TargetOpt,
        bundle: BundleOpt = Path("bundle.yml"),
        dry_run: Annotated[
            bool,
            typer.Option("--dry-run", help="print the plan (diff live vs bundle), change nothing"),
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="overwrite a job edited outside bundle.yml")
        ] = False,
        start: Annotated[
            bool, typer.Option("--start/--no-start", help="(re)start the job when it changed")
        ] = True,
    ) -> None:
        """Create or reset the Databricks job of JOB on TARGET; unchanged jobs are left alone.

        Exit codes: 0 done (or nothing to do), 1 refused (drift, pre-deploy checks) or failed.
        """
        from streamops.bundle import load
        from streamops.deploy import actions, client

        b = load(bundle, target)
        b.job(job)
        if b.target.mode != "databricks":
            raise UsageError(f"target '{target}' has mode local; deploy targets a Databricks "
                             "workspace (mode: databricks)")  # fmt: skip
        hook = client.make_hook(_connection_id(b))
        result = actions.deploy(hook, b, job, dry_run=dry_run, force=force, start=start)
        out.print(result.render(), markup=False)
        err.print(f"deploy {job} -> {target}: {result.message}", markup=False)
