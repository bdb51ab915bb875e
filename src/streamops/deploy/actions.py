"""What an operator can ask for: deploy, restart, backfill, stop, recover.

Each action takes the target's Databricks access (`streamops.databricks_access`: the provider
hook for the Jobs API, databricks-sdk for uploads) and a bundle loaded for the target, and returns an
`ActionResult` that names the Databricks job and run (with its link). `check_request` validates
what a user typed (UI params, CLI options) before any remote call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from streamops.deploy import client, governance, specs
from streamops.deploy.guard import check_before_deploy, restart_blockers
from streamops.deploy.plan import Plan, UploadStep, make_plan, with_fingerprint
from streamops.errors import DeployError, DriftError
from streamops.shipping import artifacts, uploads

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.databricks_access import DatabricksAccess

Action = Literal["deploy", "restart", "backfill", "stop", "recover"]
ACTIONS: tuple[Action, ...] = ("deploy", "restart", "backfill", "stop", "recover")


@dataclass(frozen=True)
class ActionResult:
    action: str
    job_name: str
    job_id: int | None = None
    run_id: int | None = None
    run_url: str | None = None
    plan: Plan | None = None
    message: str = ""

    def render(self) -> str:
        lines = [self.message] if self.message else []
        if self.plan is not None:
            lines.append(self.plan.render())
        if self.run_url:
            lines.append(f"Databricks run {self.run_id}: {self.run_url}")
        return "\n".join(lines)


def check_request(bundle_targets: dict[str, str], jobs: list[str], params: dict[str, Any]) -> None:
    """Refuse bad params with one message naming each problem and the fix (no remote call).

    `bundle_targets` maps target name -> mode; `jobs` are the bundle's job names.
    """
    problems: list[str] = []
    job = params.get("job")
    target = params.get("target")
    action = params.get("action")
    if job not in jobs:
        problems.append(f"job: {job!r} is not a job of bundle.yml; use one of {', '.join(jobs)}")
    if target not in bundle_targets:
        problems.append(
            f"target: {target!r} is not a target of bundle.yml; use one of "
            f"{', '.join(bundle_targets)}"
        )
    elif bundle_targets[target] != "databricks":
        dbx = [t for t, m in bundle_targets.items() if m == "databricks"]
        problems.append(
            f"target: {target!r} runs on this machine (mode local), not on "
            f"Databricks; use one of {', '.join(dbx)}"
        )
    if action not in ACTIONS:
        problems.append(f"action: {action!r} is unknown; use one of {', '.join(ACTIONS)}")
    for flag in ("dry_run", "force"):
        if not isinstance(params.get(flag, False), bool):
            problems.append(f"{flag}: {params.get(flag)!r} must be true or false")
    if params.get("dry_run") and action not in ("deploy", None):
        problems.append(f"dry_run: only 'deploy' has a dry run (a plan); got action {action!r}")
    if problems:
        raise DeployError("bad parameters:\n  " + "\n  ".join(problems))


def plan(access: DatabricksAccess, bundle: Bundle, job_key: str) -> tuple[Plan, Any]:
    """What a deploy would do: the job (create / update / unchanged, drift) and each upload."""
    arts = artifacts.collect(bundle, job_key, prepare=True)  # builds; no workspace call
    uploads.check_size(list(arts.uploads))
    desired = specs.build_job_settings(bundle, job_key, arts)
    live = client.find_job(access.hook(), desired.name or "")
    p = make_plan(desired, live.settings if live else None, live.job_id if live else None)
    steps = tuple(UploadStep(u, uploads.present(access, u)) for u in arts.uploads)
    return replace(p, uploads=steps), desired


def _upload_missing(access: DatabricksAccess, p: Plan) -> str:
    """Upload what the plan found missing (before the job points at it); say what was sent."""
    if not p.missing:
        return ""
    for up in p.missing:
        uploads.upload(access, up)
    return f"uploaded {len(p.missing)} file(s); "


def deploy(
    access: DatabricksAccess,
    bundle: Bundle,
    job_key: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    start: bool = True,
    token: str | None = None,
    **wait: Any,
) -> ActionResult:
    """Create or reset the job by name; restart a running job whose settings changed.

    A deploy with nothing to change changes nothing and restarts nothing. A live job edited
    outside bundle.yml is refused (DriftError) unless `force`.
    """
    problems = [p for p in check_before_deploy(bundle, job_key) if p.severity == "error"]
    if problems:
        raise DeployError(
            "deploy refused by the pre-deploy checks:\n" + "\n".join(p.render() for p in problems)
        )
    p, desired = plan(access, bundle, job_key)
    name = p.job_name
    if dry_run:
        return ActionResult("deploy", name, p.job_id, plan=p, message="dry run: nothing changed")
    if p.action == "unchanged":
        # Files the job points at that went missing are put back; the job is left alone.
        sent = _upload_missing(access, p)
        return ActionResult("deploy", name, p.job_id, plan=p, message=f"{sent}nothing to do")
    if p.drift and p.action == "update" and not force:
        raise DriftError(
            f"job '{name}' (id {p.job_id}): {p.drift_reason}; deploying would undo that edit.\n"
            + "\n".join(p.diff)
            + "\nFix: put the change into bundle.yml, or deploy with --force (action param "
            "force=true) to overwrite it"
        )
    body = with_fingerprint(desired).as_dict()
    specs.check_settings(body)
    _upload_missing(access, p)
    if p.action == "create":
        return _create(access, bundle, job_key, p, body, start=start, token=token)
    return _update(access, bundle, job_key, p, body, start=start, token=token, **wait)


def _create(
    access: DatabricksAccess,
    bundle: Bundle,
    job_key: str,
    p: Plan,
    body: dict[str, Any],
    *,
    start: bool,
    token: str | None,
) -> ActionResult:
    """Create the job with its permissions; start it unless it starts itself (or is a catch-up)."""
    hook, job = access.hook(), bundle.job(job_key)
    job_id = client.create_job(hook, governance.with_access_control(bundle, body))
    if not start or job.trigger.available_now or job.continuous:
        return ActionResult("deploy", p.job_name, job_id, plan=p, message=f"created job {job_id}")
    run_id = client.run_now(hook, job_id, idempotency_token=token)
    url = client.run_url(hook, run_id)
    message = f"created job {job_id} and started it"
    return ActionResult("deploy", p.job_name, job_id, run_id, url, p, message)


def _update(
    access: DatabricksAccess,
    bundle: Bundle,
    job_key: str,
    p: Plan,
    body: dict[str, Any],
    *,
    start: bool,
    token: str | None,
    **wait: Any,
) -> ActionResult:
    """Reset the job's settings, then its permissions; restart it when what runs changed and
    its checkpoints check out."""
    assert p.job_id is not None
    hook, name, job_id = access.hook(), p.job_name, p.job_id
    client.reset_job(hook, job_id, body)
    notes = "".join(f"\nnote: {n}" for n in governance.apply_permissions(hook, bundle, job_id))
    if p.permissions_only:  # who may see or run it changed, not what runs: no restart
        message = f"updated the permissions of job {job_id}; its run was not restarted{notes}"
        return ActionResult("deploy", name, job_id, plan=p, message=message)
    if not start or bundle.job(job_key).trigger.available_now:
        return ActionResult("deploy", name, job_id, plan=p, message=f"updated job {job_id}{notes}")
    blockers = restart_blockers(bundle, job_key)
    if blockers:
        message = (
            f"updated job {job_id}; NOT restarted (the running run keeps the old settings): "
            "its checkpoint check did not pass:\n  "
            + "\n  ".join(blockers)
            + "\nthen restart it (action=restart)"
            + notes
        )
        return ActionResult("deploy", name, job_id, plan=p, message=message)
    res = _restart(access, bundle, job_key, job_id, token=token, **wait)
    message = f"updated job {job_id}; {res.message}{notes}"
    return ActionResult("deploy", name, job_id, res.run_id, res.run_url, p, message)


def _require_job(access: DatabricksAccess, bundle: Bundle, job_key: str) -> client.LiveJob:
    name = specs.job_name(bundle, job_key)
    live = client.find_job(access.hook(), name)
    if live is None:
        raise DeployError(
            f"job '{name}' does not exist in the workspace. Fix: deploy it first "
            f"(action=deploy, or `streamops deploy --job {job_key} --target "
            f"{bundle.target_name}`)"
        )
    return live


def _restart(
    access: DatabricksAccess,
    bundle: Bundle,
    job_key: str,
    job_id: int,
    *,
    token: str | None,
    **wait: Any,
) -> ActionResult:
    hook, name = access.hook(), specs.job_name(bundle, job_key)
    running = client.active_runs(hook, job_id)
    client.cancel_and_wait(hook, running, **wait)
    stopped = f"stopped run(s) {running}, " if running else ""
    run_id = client.run_now(hook, job_id, idempotency_token=token)
    url = client.run_url(hook, run_id)
    return ActionResult(
        "restart", name, job_id, run_id, url, message=f"{stopped}started run {run_id}"
    )


def restart(
    access: DatabricksAccess, bundle: Bundle, job_key: str, *, token: str | None = None, **wait: Any
) -> ActionResult:
    """Cancel the active run, wait until it has ended, then start a new run."""
    live, hook = _require_job(access, bundle, job_key), access.hook()
    if bundle.job(job_key).continuous:
        client.set_paused(hook, live.job_id, False)
    return _restart(access, bundle, job_key, live.job_id, token=token, **wait)


def _deployed_parameters(live: client.LiveJob, bundle: Bundle, job_key: str) -> list[str]:
    """The live task's own arguments: a one-off run uses the bundle.yml the job was deployed with
    (its uploaded, content-addressed copy), not whatever this checkout holds now."""
    for task in live.settings.get("tasks") or []:
        params = (task.get("spark_python_task") or {}).get("parameters")
        if task.get("task_key") == job_key and params:
            return [p for p in params if p not in ("--available-now", "--recover")]
    return specs.task_parameters(bundle, job_key)


def backfill(
    access: DatabricksAccess, bundle: Bundle, job_key: str, *, token: str | None = None
) -> ActionResult:
    """Run the job once in availableNow mode: catch up with what Kafka holds, then stop."""
    live, hook = _require_job(access, bundle, job_key), access.hook()
    running = client.active_runs(hook, live.job_id)
    if running:
        raise DeployError(
            f"job '{specs.job_name(bundle, job_key)}' has an active run ({running[0]}): a "
            "backfill would share its checkpoint. Fix: action=stop first, then backfill "
            "(or action=restart to pick up where it left)"
        )
    params = [*_deployed_parameters(live, bundle, job_key), "--available-now"]
    run_id = client.run_now(hook, live.job_id, python_params=params, idempotency_token=token)
    return ActionResult(
        "backfill",
        specs.job_name(bundle, job_key),
        live.job_id,
        run_id,
        client.run_url(hook, run_id),
        message=f"started availableNow run {run_id}",
    )


def stop(access: DatabricksAccess, bundle: Bundle, job_key: str, **wait: Any) -> ActionResult:
    """Cancel the active runs and wait until they have ended (continuous jobs: pause first)."""
    live, hook = _require_job(access, bundle, job_key), access.hook()
    if bundle.job(job_key).continuous:
        client.set_paused(hook, live.job_id, True)
    running = client.active_runs(hook, live.job_id)
    client.cancel_and_wait(hook, running, **wait)
    url = client.run_url(hook, running[0]) if running else None
    return ActionResult(
        "stop",
        specs.job_name(bundle, job_key),
        live.job_id,
        running[0] if running else None,
        url,
        message=f"stopped run(s) {running}" if running else "no active run",
    )


def recover(
    access: DatabricksAccess, bundle: Bundle, job_key: str, *, token: str | None = None, **wait: Any
) -> ActionResult:
    """Stop the job, then start one run that rebuilds its starting offsets from the Delta sink
    (the checkpoint was lost) and goes on from there through the reset guard."""
    live, hook = _require_job(access, bundle, job_key), access.hook()
    running = client.active_runs(hook, live.job_id)
    client.cancel_and_wait(hook, running, **wait)
    params = [*_deployed_parameters(live, bundle, job_key), "--recover"]
    run_id = client.run_now(hook, live.job_id, python_params=params, idempotency_token=token)
    stopped = f"stopped run(s) {running}, " if running else ""
    return ActionResult(
        "recover",
        specs.job_name(bundle, job_key),
        live.job_id,
        run_id,
        client.run_url(hook, run_id),
        message=f"{stopped}started recovery run {run_id} (--recover)",
    )
