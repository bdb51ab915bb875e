"""spark-submit / Databricks job entrypoint of the checkpoint-integrity check of one job.

    jobs/check.py --bundle bundle.yml --target prod --job claims_hourly

Runs on a Databricks job cluster when the Airflow workers have no storage login for the
checkpoints (streamops.checkpoint.on_cluster submits it): the cluster's Spark session reaches
them (streamops.checkpoint.cluster_check).
Thin on purpose: parse arguments, call streamops, print its one result line, exit with its code.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundle.yml", help="path to bundle.yml")
    parser.add_argument("--target", default="local", help="target in bundle.yml")
    parser.add_argument("--job", required=True, help="job key in bundle.yml")
    args = parser.parse_args(argv)

    from streamops.entry import cluster_check_main

    return cluster_check_main(args.bundle, args.target, args.job)


if __name__ == "__main__":
    sys.exit(main())
