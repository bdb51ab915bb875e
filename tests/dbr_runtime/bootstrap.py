"""The driver's start on the local Databricks runtime (copied into each run's working folder and
run there; it imports nothing of the checkout). Like a job cluster: the cluster's SparkSession
exists before the task's file runs, which then finds it with `SparkSession.builder.getOrCreate()`;
the file runs as `__main__` with `sys.argv = [file, *parameters]`, its exit code the process's.

cluster.json beside this file: {"master", "spark_conf" (null: no session), "python_file",
"parameters"}.
"""

import json
import os
import runpy
import sys


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "cluster.json")) as f:
        spec = json.load(f)
    if spec["spark_conf"] is not None:  # None: a runtime started without a session (tests)
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.master(spec["master"]).appName("Databricks Shell")
        for key, value in spec["spark_conf"].items():
            builder = builder.config(key, value)
        builder.getOrCreate()
    python_file = spec["python_file"]
    # As `python <file>` would: the file's folder first on sys.path (a fresh folder, no checkout).
    sys.path.insert(0, os.path.dirname(python_file))
    sys.argv = [python_file, *spec["parameters"]]
    runpy.run_path(python_file, run_name="__main__")


if __name__ == "__main__":
    main()
