"""Deploy streaming jobs to Databricks and operate them (deploy, restart, backfill, stop).

    specs.py     bundle -> `databricks.sdk.service.jobs.JobSettings`, one per streaming job
    (key names of user-written settings are checked against the Jobs API 2.2 fields when the
    bundle is validated: streamops.bundle.jobs_api_fields)
    plan.py      live job vs bundle: create, update, unchanged, or drift (edited outside)
    (what a deploy uploads, and the job cluster, are in streamops.shipping)
    faults.py    a failed workspace call as one line naming the host and the fix
    governance.py  run_as, permissions, notifications and health rules of a job
    client.py    every Jobs API call, through the target's hook (streamops.databricks_access)
    guard.py     checks that must pass before any deploy (the checkpoint reset guard plugs in)
    actions.py   deploy / restart / backfill / stop, each taking the access and a bundle
    watch.py     what the alert watchdog watches: every deployed query that started

Nothing here does I/O at import; databricks-sdk and the provider are imported when used.
"""
