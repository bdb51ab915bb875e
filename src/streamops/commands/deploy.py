"""`streamops deploy`: create or update a job's Databricks job from the bundle (with a plan)."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from streamops.commands.console import err, out
from streamops.deploy.faults import Remote, explained
from streamops.errors import DeployError, UsageError

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


def _offline(bundle: object, job: str, *, render: bool) -> None:
    """--prepare builds what a deploy uploads; --render also prints it with the job settings."""
    from streamops.bundle import Bundle
    from streamops.deploy import governance, specs
    from streamops.deploy.plan import with_fingerprint
    from streamops.shipping import artifacts

    assert isinstance(bundle, Bundle)
    arts = artifacts.collect(bundle, job, prepare=not render)
    if not render:
        for up in arts.uploads:
            out.print(f"ready: {up.as_dict(artifacts.project_root(bundle))['source']} -> "
                      f"{up.destination}", markup=False)  # fmt: skip
        return
    body = with_fingerprint(specs.build_job_settings(bundle, job, arts)).as_dict()
    specs.check_settings(body)
    doc = {
        "uploads": [u.as_dict(artifacts.project_root(bundle)) for u in arts.uploads],
        # What jobs/create receives (jobs/reset the same, permissions set apart).
        "job_settings": governance.with_access_control(bundle, body),
    }
    out.print(json.dumps(doc, indent=2), markup=False)


def _remote(hook: object, bundle: object, conn_id: str) -> Remote:
    """Where the calls go, for the fault messages; a missing connection is said here."""
    from streamops.bundle import Bundle
    from streamops.shipping.uploads import workspace_url

    assert isinstance(bundle, Bundle)
    where = (f"the Airflow connection '{conn_id}' (or targets.{bundle.target_name}.databricks."
             f"host / token in {bundle.path.name})")  # fmt: skip
    try:
        host = workspace_url(hook)  # type: ignore[arg-type]
    except Exception as exc:  # the provider raises AirflowNotFoundException, not ours
        raise DeployError(
            f"no Databricks workspace to deploy to: {exc}. Fix: set "
            f"targets.{bundle.target_name}.databricks.host and token in {bundle.path.name}, or "
            f"define {where.split(' (')[0]} (AIRFLOW_CONN_{conn_id.upper()})"
        ) from None
    return Remote(host, where, getattr(hook, "retry_limit", 1), getattr(hook, "timeout_seconds", 0))


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
        render: Annotated[
            bool,
            typer.Option(
                "--render",
                help="print, as JSON, exactly what a deploy would upload "
                "and send (secrets as references); no network call",
            ),
        ] = False,
        prepare: Annotated[
            bool,
            typer.Option(
                "--prepare",
                help="only build the wheel (and download the wheelhouse "
                "of `dependencies: wheelhouse`) into .cache/; no workspace call",
            ),
        ] = False,
        timeout: Annotated[
            int, typer.Option("--timeout", min=1, help="seconds to wait for each workspace answer")
        ] = 180,
    ) -> None:
        """Upload the job's code and create or reset its Databricks job on TARGET; unchanged jobs
        (and files already uploaded) are left alone.

        Exit codes: 0 done (or nothing to do), 1 refused (drift, pre-deploy checks) or failed.
        """
        from streamops.bundle import load
        from streamops.deploy import actions, client

        b = load(bundle, target)
        b.job(job)
        if b.target.mode != "databricks":
            raise UsageError(f"target '{target}' has mode local; deploy targets a Databricks "
                             "workspace (mode: databricks)")  # fmt: skip
        if render or prepare:
            _offline(b, job, render=render)
            return
        conn_id = _connection_id(b)
        hook = client.make_hook(conn_id, timeout_seconds=timeout)
        with explained(_remote(hook, b, conn_id)):
            result = actions.deploy(hook, b, job, dry_run=dry_run, force=force, start=start)
        out.print(result.render(), markup=False)
        err.print(f"deploy {job} -> {target}: {result.message}", markup=False)
