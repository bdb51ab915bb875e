"""`streamops deploy`: create or update a job's Databricks job from the bundle (with a plan)."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamops.commands.console import err, out
from streamops.deploy.faults import Remote, explained
from streamops.errors import UsageError

if TYPE_CHECKING:
    from streamops.databricks_access import DatabricksAccess

BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="path to bundle.yml")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="target in bundle.yml")]


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
            out.print(
                f"ready: {up.as_dict(artifacts.project_root(bundle))['source']} -> "
                f"{up.destination}",
                markup=False,
            )
        return
    body = with_fingerprint(specs.build_job_settings(bundle, job, arts)).as_dict()
    specs.check_settings(body)
    doc = {
        "uploads": [u.as_dict(artifacts.project_root(bundle)) for u in arts.uploads],
        # What jobs/create receives (jobs/reset the same, permissions set apart).
        "job_settings": governance.with_access_control(bundle, body),
    }
    out.print(json.dumps(doc, indent=2), markup=False)


def _remote(access: "DatabricksAccess") -> Remote:
    """Where the calls go, for the fault messages. No login (no connection, no host / token, a
    secret that does not resolve) is a StreamopsError naming the fix, raised here."""
    return Remote(access.url, access.where, access.policy.attempts, access.timeout_s)


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
                "of `dependencies: wheelhouse`) into the target's state folder "
                "(targets.<t>.state_dir, or $STREAMOPS_STATE_DIR); no workspace call",
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
        from streamops.databricks_access import DatabricksAccess
        from streamops.deploy import actions

        b = load(bundle, target)
        b.job(job)
        if b.target.mode != "databricks":
            raise UsageError(
                f"target '{target}' has mode local; deploy targets a Databricks "
                "workspace (mode: databricks)"
            )
        if render or prepare:
            _offline(b, job, render=render)
            return
        access = DatabricksAccess.of(b, timeout_s=timeout)
        with explained(_remote(access)):
            result = actions.deploy(access, b, job, dry_run=dry_run, force=force, start=start)
        out.print(result.render(), markup=False)
        err.print(f"deploy {job} -> {target}: {result.message}", markup=False)
