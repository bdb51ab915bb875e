"""DAG parse time: each file in dags/ against an empty DAG file, parsed in the same run.

Each file is parsed REPEAT times with Airflow's DagBag (a fresh module import each time) after
Airflow itself is imported; the first parse (cold: imports streamops, the provider) is reported
apart. Network connections attempted during parsing are counted (must be 0).
Writes bench/results/dag_parse.{json,md}.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPEAT = 15
EMPTY_DAG = """from airflow.sdk import DAG

with DAG(dag_id="empty_baseline", schedule=None):
    pass
"""


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="dag-parse-", dir=ROOT / ".cache"))
    os.environ.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                       "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                       "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                       "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"})  # fmt: skip
    sys.path.append(str(ROOT / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    connections: list[Any] = []
    real_connect = socket.socket.connect

    def counting_connect(self: socket.socket, address: Any) -> Any:
        connections.append(address)
        return real_connect(self, address)

    socket.socket.connect = counting_connect  # type: ignore[method-assign]
    empty = home / "empty_dag.py"
    empty.write_text(EMPTY_DAG)
    files = [empty, *sorted(p for p in (ROOT / "dags").glob("*.py") if "DAG" in p.read_text())]
    rows = []
    for f in files:
        before = len(connections)
        times = []
        for _ in range(REPEAT + 1):
            t0 = time.perf_counter()
            bag = DagBag(dag_folder=str(f))
            times.append(time.perf_counter() - t0)
            if bag.import_errors:
                raise SystemExit(f"{f}: import errors: {bag.import_errors}")
        rows.append({"file": f.name if f != empty else "(empty DAG file)",
                     "cold_ms": round(times[0] * 1000, 1),
                     "median_ms": round(statistics.median(times[1:]) * 1000, 2),
                     "network_connections": len(connections) - before})  # fmt: skip
    base = rows[0]["median_ms"]
    for r in rows:
        r["ratio_vs_empty"] = round(r["median_ms"] / base, 2)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "dag_parse", "repeat": REPEAT, "python": sys.version.split()[0],
              "rows": rows, "total_network_connections": len(connections)}  # fmt: skip
    (out / "dag_parse.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# DAG parse time (DagBag, same run)", "",
             f"Median of {REPEAT} parses after a cold one; ratio against an empty DAG file.", "",
             "| file | cold ms | median ms | ratio vs empty | network connections |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['file']} | {r['cold_ms']} | {r['median_ms']} | {r['ratio_vs_empty']} | "
              f"{r['network_connections']} |" for r in rows]  # fmt: skip
    (out / "dag_parse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(home, ignore_errors=True)
    if connections:
        raise SystemExit(f"network connections during DAG parsing: {connections}")


if __name__ == "__main__":
    main()
