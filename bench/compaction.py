"""Compaction throughput: `compact_table` through Spark OPTIMIZE (bin-pack, Z-order, liquid
clustering) against a pyarrow read + rewrite of the same files, side by side in one run; then the
conflict rate of compaction beside a live streaming MERGE writer.

A Delta table of many small files (what a 30-second trigger leaves behind in a day) is set up
once, untimed: pyarrow writes the parquet files, Spark's `CONVERT TO DELTA` makes them a table,
and copies are taken (one per Spark run; the liquid one gets ALTER TABLE ... CLUSTER BY, a
metadata-only commit). Timed, in this order:
  1. baseline: pyarrow reads every file and writes files of the bundle's target size;
  2. `compact_table(bundle, "bench")`: the log read, the plan, Spark's OPTIMIZE, the report;
  3. `compact_table(bundle, "bench_z", zorder=True)`: the same with ZORDER BY (device_id);
  4. `compact_table(bundle, "bench_c")`: plain OPTIMIZE of the table clustered by device_id.
Then `conflict_rate`: three short "nights" of back-to-back compactions of a day-partitioned table
that a writer upserts into with one MERGE micro-batch a second.
The Spark session is started (and warmed up on a small table) before the timed runs, so neither
run pays the JVM's start; its start time is reported apart. MB/s = input bytes / wall seconds.
Writes bench/results/compaction.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
TARGET_MB = 16
TABLES = f"""tables:
  bench:
    zorder_by: [device_id]
    target_file_size_mb: {TARGET_MB}
  bench_z:
    zorder_by: [device_id]
    target_file_size_mb: {TARGET_MB}
  bench_c:
    cluster_by: [device_id]
    target_file_size_mb: {TARGET_MB}
  live:
    partition_by: [day]
    target_file_size_mb: {TARGET_MB}
  warmup:
    target_file_size_mb: {TARGET_MB}
"""


def batch(i: int, rows: int) -> pa.Table:
    base = i * rows
    return pa.table({
        "id": pa.array(range(base, base + rows), pa.int64()),
        "device_id": [f"device-{(base + k) * 7919 % 5000:05d}" for k in range(rows)],
        "site": [f"site-{(base + k) % 17}" for k in range(rows)],
        "temperature_c": pa.array([((base + k) % 400) / 10 for k in range(rows)], pa.float64()),
        "event_time": pa.array([1_795_000_000_000 + base + k for k in range(rows)],
                               pa.timestamp("us", tz="UTC")),
    })  # fmt: skip


def small_files(folder: Path, files: int, rows: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"part-{i:05d}.parquet" for i in range(files)]
    for i, p in enumerate(paths):
        pq.write_table(batch(i, rows), p)
    return paths


def make_delta(spark: Any, folder: Path) -> None:
    """The parquet files in `folder` become a Delta table in one commit (no rewrite)."""
    spark.sql(f"CONVERT TO DELTA parquet.`{folder}` NO STATISTICS").collect()


def pyarrow_rewrite(paths: list[Path], out: Path, rows_per_file: int) -> float:
    t0 = time.perf_counter()
    dataset = ds.dataset([str(p) for p in paths], format="parquet")
    ds.write_dataset(
        dataset, out, format="parquet", max_rows_per_file=rows_per_file,
        max_rows_per_group=min(rows_per_file, 1_048_576),
    )  # fmt: skip
    return time.perf_counter() - t0


class TimedRunner:
    """The Spark runner, timing the OPTIMIZE statement apart from the rest of the run."""

    dialect: Final = "spark"

    def __init__(self, spark: Any):
        from streamops.compaction.spark_sql import SparkSqlRunner

        self.inner = SparkSqlRunner(spark)
        self.optimize_s = 0.0

    def execute(self, statement: str, *, user_metadata: str | None = None) -> str:
        t0 = time.perf_counter()
        done = self.inner.execute(statement, user_metadata=user_metadata)
        if statement.startswith("OPTIMIZE"):
            self.optimize_s += time.perf_counter() - t0
        return done


def timed_compaction(bundle: Any, key: str, spark: Any, *, zorder: bool) -> dict[str, Any]:
    from streamops.compaction import compact_table

    runner = TimedRunner(spark)
    t0 = time.perf_counter()
    r = compact_table(bundle, key, zorder=zorder, runner=runner)
    seconds = time.perf_counter() - t0
    assert r.status == "compacted", r
    return {"seconds": seconds, "optimize_s": runner.optimize_s, "report": r}


def clustered_copy(spark: Any, source: Path, dest: Path) -> None:
    """The same files as a liquid-clustered table: a copy, then ALTER TABLE ... CLUSTER BY
    (only a commit of clustering metadata: the data files are not rewritten)."""
    shutil.copytree(source, dest)
    spark.sql(f"ALTER TABLE delta.`{dest}` CLUSTER BY (device_id)").collect()


def conflict_rate(spark: Any, bundle: Any, nights: int, seconds_per_night: float) -> dict[str, Any]:
    """Compaction nights beside a live MERGE writer (a thread committing one MERGE micro-batch a
    second, upserting into every day partition, as the gold sink's foreachBatch does). Counts the OPTIMIZE attempts
    that lost the commit race (retried on a fresh snapshot) and the stream's MERGEs that lost
    it to an OPTIMIZE (the sink's own retry)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from streamops.compaction import compact_table
    from streamops.errors import CompactionConflictError

    uri = bundle.table_location("live")

    def small_appends() -> None:
        df = spark.range(0, 4000).select(
            (F.col("id") % 2000).alias("key"), F.concat(F.lit("d"), F.col("id") % 4).alias("day"),
            F.lit(0.0).alias("value"))  # fmt: skip
        df.repartition(40).write.format("delta").mode("append").partitionBy("day").save(uri)

    small_appends()
    stream_conflicts = {"OPTIMIZE": 0, "other": 0}
    merges = [0]

    def upsert(df: Any, batch_id: int) -> None:
        src = df.select((F.col("id") % 2000).alias("key"),
                        F.concat(F.lit("d"), F.col("id") % 4).alias("day"),
                        F.rand().alias("value")).dropDuplicates(["key", "day"])  # fmt: skip
        for _ in range(10):
            try:
                (DeltaTable.forPath(df.sparkSession, uri).alias("t")
                 .merge(src.alias("s"), "t.key = s.key AND t.day = s.day")
                 .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())  # fmt: skip
                merges[0] += 1
                return
            except Exception as exc:  # a lost commit race: retried like the sink's replay would
                if "Concurrent" not in str(exc) and "CONCURRENT" not in str(exc):
                    raise
                # Delta names the winner: 'a concurrent OPTIMIZE added data ...'.
                stream_conflicts["OPTIMIZE" if "concurrent OPTIMIZE" in str(exc) else "other"] += 1

    stop = threading.Event()

    def writer() -> None:
        # One MERGE micro-batch a second, as the gold sink's foreachBatch commits them.
        batch_id = 0
        while not stop.is_set():
            upsert(spark.range(batch_id * 200, batch_id * 200 + 200), batch_id)
            batch_id += 1
            stop.wait(1.0)

    thread = threading.Thread(target=writer, name="merge-writer", daemon=True)
    thread.start()
    attempts = conflicts = gave_up = 0
    try:
        for _ in range(nights):
            small_appends()  # the day's small files
            t_end = time.perf_counter() + seconds_per_night
            while time.perf_counter() < t_end:
                try:
                    r = compact_table(bundle, "live", spark=spark)
                except CompactionConflictError as exc:
                    attempts += exc.attempts
                    conflicts += exc.attempts
                    gave_up += 1
                    continue
                if r.status == "compacted":
                    attempts += 1 + r.retries
                    conflicts += r.retries
                time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    return {
        "nights": nights, "optimize_attempts": attempts, "optimize_conflicts": conflicts,
        "conflict_rate": round(conflicts / attempts, 3) if attempts else 0.0,
        "runs_given_up": gave_up, "stream_merges": merges[0],
        "stream_merge_conflicts_with_optimize": stream_conflicts["OPTIMIZE"],
        # With the night's own small appends (the other writer of this table).
        "stream_merge_conflicts_other": stream_conflicts["other"],
    }  # fmt: skip


def run(files: int, rows: int, work: Path) -> dict[str, Any]:
    from streamops.bundle import load
    from streamops.pipeline.session import local_session

    text = (ROOT / "bundle.yml").read_text().replace("tables:\n", TABLES, 1)
    # Short backoff: a night here lasts seconds, not hours.
    text = text.replace("  max_retries: 5", "  backoff: 0.5 seconds\n  max_retries: 3", 1)
    (work / "bundle.yml").write_text(text)
    b = load(work / "bundle.yml", "local")
    bench, bench_z = Path(b.table_location("bench")), Path(b.table_location("bench_z"))
    paths = small_files(bench, files, rows)
    in_bytes = sum(p.stat().st_size for p in paths)
    rows_per_file = max(1, int(TARGET_MB * 1024 * 1024 / (in_bytes / (files * rows))))

    t0 = time.perf_counter()
    spark = local_session(jars=CACHE / "jvm" / "spark", cores=2, app_name="bench-compaction")
    start_s = time.perf_counter() - t0
    make_delta(spark, bench)
    shutil.copytree(bench, bench_z)
    clustered_copy(spark, bench, Path(b.table_location("bench_c")))
    small_files(Path(b.table_location("warmup")), 20, 100)
    make_delta(spark, Path(b.table_location("warmup")))
    timed_compaction(b, "warmup", spark, zorder=False)  # JIT and class loading, untimed

    load_1m = os.getloadavg()[0]
    base_s = pyarrow_rewrite(paths, work / "pyarrow_out", rows_per_file)
    base_files = len(list((work / "pyarrow_out").glob("*.parquet")))
    binpack = timed_compaction(b, "bench", spark, zorder=False)
    zorder = timed_compaction(b, "bench_z", spark, zorder=True)
    cluster = timed_compaction(b, "bench_c", spark, zorder=False)
    assert cluster["report"].cluster_by == ("device_id",)
    for key in ("bench", "bench_z", "bench_c"):
        n = spark.read.format("delta").load(b.table_location(key)).count()
        assert n == files * rows, (key, n)
    live = conflict_rate(spark, b, nights=3, seconds_per_night=20)
    spark.stop()

    mb = in_bytes / 1e6

    def figures(
        seconds: float, before: int, after: int, optimize_s: float | None = None
    ) -> dict[str, Any]:
        return {"seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 2),
                "optimize_statement_s": None if optimize_s is None else round(optimize_s, 3),
                "files_before": before, "files_after": after,
                "vs_pyarrow": round(base_s / seconds, 3)}  # fmt: skip

    bp, zr, cl = binpack["report"], zorder["report"], cluster["report"]
    return {
        "machine": f"{platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, Spark local[2]",
        # The cores are shared: the 1-minute load average when the timed runs began.
        "load_average_1m": round(load_1m, 2),
        "files_in": files,
        "rows": files * rows,
        "mb_in": round(mb, 2),
        "target_file_size_mb": TARGET_MB,
        "spark_session_start_s": round(start_s, 2),
        "pyarrow_rewrite": figures(base_s, files, base_files),
        "spark_optimize": figures(binpack["seconds"], bp.before.files, bp.after.files,
                                  binpack["optimize_s"])
        | {"small_file_ratio_before": bp.before.small_file_ratio,
           "small_file_ratio_after": bp.after.small_file_ratio},
        "spark_optimize_zorder": figures(zorder["seconds"], zr.before.files, zr.after.files,
                                         zorder["optimize_s"]),
        "spark_optimize_liquid": figures(cluster["seconds"], cl.before.files, cl.after.files,
                                         cluster["optimize_s"]),
        "beside_streaming_merge": live,
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    p, c, z = result["pyarrow_rewrite"], result["spark_optimize"], result["spark_optimize_zorder"]
    rows = [
        ("pyarrow read + rewrite (baseline)", p),
        ("streamops compact: Spark OPTIMIZE (bin-pack)", c),
        ("streamops compact --zorder: Spark OPTIMIZE ZORDER BY (device_id)", z),
        ("streamops compact, cluster_by [device_id]: OPTIMIZE (liquid clustering)",
         result["spark_optimize_liquid"]),
    ]  # fmt: skip
    live = result["beside_streaming_merge"]
    lines = [
        f"# Compaction throughput ({result['files_in']} files, {result['mb_in']} MB, "
        f"target {result['target_file_size_mb']} MB files)",
        "",
        "| run | seconds | of which OPTIMIZE | MB/s | files before | files after | vs pyarrow |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {f['seconds']} | {f['optimize_statement_s'] or '-'} | {f['mb_per_s']} "
            f"| {f['files_before']} | {f['files_after']} | {f['vs_pyarrow']:.2f} |"
            for name, f in rows
        ),
        "",
        f"{result['machine']}, load average {result['load_average_1m']} (shared cores). "
        "Ratio > 1 means faster than the baseline. The streamops figures include reading the "
        "Delta log with delta-rs, planning, the OPTIMIZE statement (its own column) and the "
        "report; the Spark session was started beforehand "
        f"({result['spark_session_start_s']} s, not counted) and warmed up on a small table.",
        "",
        "## Beside a live streaming MERGE writer",
        "",
        "| nights | OPTIMIZE attempts | lost the commit race (retried) | conflict rate "
        "| runs given up | writer MERGEs | MERGEs that lost to an OPTIMIZE (retried) "
        "| MERGEs that lost to the night's appends |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {live['nights']} | {live['optimize_attempts']} | {live['optimize_conflicts']} "
        f"| {live['conflict_rate']:.1%} | {live['runs_given_up']} | {live['stream_merges']} "
        f"| {live['stream_merge_conflicts_with_optimize']} "
        f"| {live['stream_merge_conflicts_other']} |",
        "",
        "A writer commits one MERGE micro-batch a second (upserting into every day partition, as "
        "the gold sink's foreachBatch does) while compaction runs back to back on the table; no "
        "metadata commit is made by compaction, so a conflict is only ever a data race on files.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1500, help="small files in the table")
    parser.add_argument("--rows", type=int, default=1500, help="rows per small file")
    args = parser.parse_args()
    # Spark would otherwise resolve the hostname, and warn when it maps to a loopback address.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = Path(tempfile.mkdtemp(prefix="streamops-bench-compaction-"))
    try:
        result = run(args.files, args.rows, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compaction.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (out / "compaction.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
