"""spark-submit / Databricks job entrypoint of the nightly compaction of one table.

    jobs/compact.py --bundle bundle.yml --target prod --table claims_hourly [--zorder] [--vacuum]

Runs on a Databricks job cluster (the `databricks-job` engine submits it): the cluster's Spark
session can tag the OPTIMIZE commit with the compaction marker, which a SQL warehouse cannot.
Thin on purpose: parse arguments, call streamops, print its one result line, exit with its code.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/compact.py", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundle.yml", help="path to bundle.yml")
    parser.add_argument("--target", default="local", help="target in bundle.yml")
    parser.add_argument("--table", required=True, help="table key in bundle.yml")
    parser.add_argument("--zorder", action="store_true", help="Z-ORDER by zorder_by")
    parser.add_argument("--vacuum", action="store_true", help="VACUUM with the safe retention")
    parser.add_argument("--retain-hours", type=float, help="VACUUM retention (checked)")
    args = parser.parse_args(argv)

    from streamops.entry import JobRequest, cluster_main

    request = JobRequest(args.table, zorder=args.zorder, vacuum=args.vacuum,
                         retain_hours=args.retain_hours)  # fmt: skip
    return cluster_main(args.bundle, args.target, request)


if __name__ == "__main__":
    sys.exit(main())
