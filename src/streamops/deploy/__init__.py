"""Deploy streaming jobs to Databricks and operate them (deploy, restart, backfill, stop).

    specs.py     bundle -> `databricks.sdk.service.jobs.JobSettings`, one per streaming job
    validate.py  key names of user-written settings checked against the Jobs API 2.2 fields
    plan.py      live job vs bundle: create, update, unchanged, or drift (edited outside)
    (what a deploy uploads, and the job cluster, are in streamops.shipping)
    faults.py    a failed workspace call as one line naming the host and the fix
    client.py    every remote call, through the Airflow Databricks provider's `DatabricksHook`
    guard.py     checks that must pass before any deploy (the checkpoint reset guard plugs in)
    actions.py   deploy / restart / backfill / stop, each taking a hook and a bundle

Nothing here does I/O at import; databricks-sdk and the provider are imported when used.
"""
