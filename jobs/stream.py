"""spark-submit entrypoint for every streaming job of the bundle.

    spark-submit jobs/stream.py --bundle bundle.yml --target local --job claims_hourly [--available-now]

Thin on purpose: parse arguments, call streamops, exit with its code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/stream.py", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundle.yml", help="path to bundle.yml")
    parser.add_argument("--target", default="local", help="target in bundle.yml")
    parser.add_argument("--job", required=True, help="job name in bundle.yml")
    parser.add_argument("--available-now", action="store_true", help="catch up, then stop")
    parser.add_argument("--reset-from", help="offsets file of `streamops checkpoint reconstruct`")
    parser.add_argument(
        "--recover", action="store_true",
        help="checkpoint lost: rebuild starting offsets from the sink, then start from them",
    )  # fmt: skip
    args = parser.parse_args(argv)

    from streamops.entry import StreamopsError, UsageError, run_from_args

    try:
        return run_from_args(
            args.bundle, args.target, args.job, available_now=args.available_now,
            reset_from=Path(args.reset_from) if args.reset_from else None, recover=args.recover,
        )  # fmt: skip
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StreamopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
