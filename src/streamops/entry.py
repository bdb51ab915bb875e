"""What the thin adapters outside the package may use: dags/, plugins/ (Airflow) and jobs/.

The one module they import from streamops (tests/unit/test_layering.py checks it), so that what
they depend on is a short, named surface and the rest of the package can move freely.

Lazy (PEP 562): a name's module is imported when the name is first taken, so a DAG file that
imports `load` at parse time pays for the bundle only, and a task that imports
`nightly_table` when it runs pays for compaction then, as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamops.bundle import Bundle, default_target, load, task_bundle
    from streamops.checkpoint.cluster_check import cluster_check_main
    from streamops.checkpoint.integrity import check_and_page
    from streamops.compaction.cluster import cluster_main
    from streamops.compaction.databricks_job import JobRequest
    from streamops.compaction.nightly import nightly_table, summarize
    from streamops.databricks_access import DatabricksAccess
    from streamops.deploy import actions as deploy_actions
    from streamops.deploy.actions import check_request
    from streamops.deploy.faults import Remote, explained
    from streamops.deploy.watch import watchdog
    from streamops.errors import DeployError, StreamopsError, UsageError
    from streamops.localstack import local_broker
    from streamops.runner.entry import run_from_args

# name -> "module:attribute" (or "module" for a module itself); mirrors the imports above.
_WHERE: dict[str, str] = {
    # every adapter
    "Bundle": "streamops.bundle:Bundle",
    "default_target": "streamops.bundle:default_target",
    "load": "streamops.bundle:load",
    "task_bundle": "streamops.bundle:task_bundle",
    "local_broker": "streamops.localstack:local_broker",
    "DeployError": "streamops.errors:DeployError",
    "StreamopsError": "streamops.errors:StreamopsError",
    "UsageError": "streamops.errors:UsageError",
    # Airflow: DAG tasks and operators
    "check_and_page": "streamops.checkpoint.integrity:check_and_page",
    "nightly_table": "streamops.compaction.nightly:nightly_table",
    "summarize": "streamops.compaction.nightly:summarize",
    # every deployed query that started, from the deploy record, then the alert rules
    "watchdog": "streamops.deploy.watch:watchdog",
    "DatabricksAccess": "streamops.databricks_access:DatabricksAccess",
    "deploy_actions": "streamops.deploy.actions",
    "check_request": "streamops.deploy.actions:check_request",
    "Remote": "streamops.deploy.faults:Remote",
    "explained": "streamops.deploy.faults:explained",
    # spark-submit entrypoints (jobs/)
    "run_from_args": "streamops.runner.entry:run_from_args",
    "cluster_main": "streamops.compaction.cluster:cluster_main",
    "cluster_check_main": "streamops.checkpoint.cluster_check:cluster_check_main",
    "JobRequest": "streamops.compaction.databricks_job:JobRequest",
}

__all__ = [
    "Bundle",
    "DatabricksAccess",
    "DeployError",
    "JobRequest",
    "Remote",
    "StreamopsError",
    "UsageError",
    "check_and_page",
    "check_request",
    "cluster_check_main",
    "cluster_main",
    "default_target",
    "deploy_actions",
    "explained",
    "load",
    "local_broker",
    "nightly_table",
    "run_from_args",
    "summarize",
    "task_bundle",
    "watchdog",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    value = importlib.import_module(module)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value  # resolved once
    return value
