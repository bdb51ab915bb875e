"""`streamops run` with a crash point injected, for the kill -9 test (never shipped).

    python -m tests.integration.crash_driver BUNDLE JOB [MARKER]

With MARKER, after each gold Delta commit the batch id is written to MARKER and the process
hangs, so the test can SIGKILL it at exactly the worst moment: the Delta table holds the batch
but Spark has not written its commit file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from streamops.runner.entry import run_from_args


def main(argv: list[str]) -> int:
    bundle, job, *rest = argv
    marker = Path(rest[0]) if rest else None

    def hang_after_commit(batch_id: int) -> None:
        assert marker is not None
        marker.write_text(str(batch_id))
        time.sleep(3600)

    return run_from_args(bundle, "local", job, after_commit=hang_after_commit if marker else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
