"""The cluster side of the checkpoint check's one-time run (`jobs/check.py`): check one job's
checkpoints through the cluster's Spark session and print the one result line Airflow reads
(`checkpoint.on_cluster`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from streamops.checkpoint.integrity import check_job
from streamops.checkpoint.on_cluster import ERROR_LINE, RESULT_LINE


def cluster_check_main(
    bundle_path: str, target: str, job_name: str, *, out: Callable[[str], None] = print
) -> int:
    """On the cluster: check (and back up) the job's checkpoints through the cluster's Spark
    session and print the one result line Airflow reads; the exit code (0 ran, 1 failed).

    A check that found problems still exits 0: the result carries them, and Airflow pages."""
    from streamops.bundle import load

    try:
        bundle = load(bundle_path, target)
        if bundle.runtime.storage(bundle.checkpoint_root).kind == "cluster_spark":
            # The readers reach storage through the cluster's session (pipeline/cluster_fs.py),
            # which a python_file task does not start by itself.
            from pyspark.sql import SparkSession

            SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
        result = check_job(bundle, job_name)
    except Exception as exc:
        out(ERROR_LINE + json.dumps({"kind": type(exc).__name__, "message": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out(result.render())
    out(RESULT_LINE + json.dumps(result.as_dict(), default=str, separators=(",", ":")))
    return 0
