"""What runs on a Databricks cluster, and how it gets there: shared by the streaming jobs'
deploys (streamops.deploy) and the nightly compaction's job runs (streamops.compaction).

    wheel.py      the project's wheel, built offline and reproducibly; wheelhouse.py its deps
    artifacts.py  the wheel, the entrypoints (jobs/stream.py, jobs/compact.py) and bundle.yml at
                  content-addressed paths in the workspace or a Unity Catalog volume
    uploads.py    uploads through databricks-sdk (Workspace API / Files API), each at most once
    cluster.py    the job cluster: runtime, size, access mode, storage login, secret references

Nothing here does I/O at import; databricks-sdk and the provider are imported when used.
"""
