"""The claims job end to end against two baselines, on the same produced data, in one run.

(a) full:  the real job: bronze + quarantine + gold (watermark, hourly windows, merge) + progress
(b) bare:  the same source and Delta sink with none of the guards: parse, append, no quarantine,
           no app transactions, no aggregation
(c) plain: a confluent-kafka consumer writing the same rows with delta-rs, no Spark

Each variant runs in its own process (peak memory = the process tree's peak RSS, JVM included);
rows/s is measured from the first read to the last commit, without the JVM start.
Writes bench/results/pipeline.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 60_000
PARTITIONS = 4
FIELDS = ("claim_id", "policy_id", "claim_type", "region", "claim_amount", "event_time")


def _bundle(storage: Path, bootstrap: str, topic: str) -> Any:
    from streamops.bundle import load

    b = load(ROOT / "bundle.yml", "local")
    spec = b.spec
    target = spec.targets["local"].model_copy(update={"storage_root": str(storage)})
    src = spec.sources["claims"].model_copy(update={"topic": topic, "partitions": PARTITIONS})
    job = spec.jobs["claims_hourly"].model_copy(update={"max_offsets_per_trigger": 20_000})
    spec = spec.model_copy(update={"targets": {**spec.targets, "local": target},
                                   "sources": {**spec.sources, "claims": src},
                                   "jobs": {**spec.jobs, "claims_hourly": job}})  # fmt: skip
    return dataclasses.replace(b, spec=spec, bootstrap_override=bootstrap)


def variant_full(storage: Path, bootstrap: str, topic: str) -> dict[str, Any]:
    from streamops.runner.job import run_job
    from streamops.pipeline.session import local_session

    bundle = _bundle(storage, bootstrap, topic)
    spark = local_session(cores=2, app_name="bench-full")
    t0 = time.perf_counter()
    run = run_job(bundle, "claims_hourly", spark, available_now=True)
    dt = time.perf_counter() - t0
    assert run.bronze_input_rows == EVENTS == run.input_rows, (
        run.bronze_input_rows,
        run.input_rows,
    )
    return {"rows": EVENTS, "seconds": dt}


def variant_bare(storage: Path, bootstrap: str, topic: str) -> dict[str, Any]:
    from deltalake import write_deltalake
    from pyspark.sql import functions as F

    from streamops.pipeline.transform import event_schema
    from streamops.pipeline.session import local_session

    bundle = _bundle(storage, bootstrap, topic)
    job = bundle.job("claims_hourly")
    spark = local_session(cores=2, app_name="bench-bare")
    raw = (spark.readStream.format("streamops_kafka").option("kafka.bootstrap.servers", bootstrap)
           .option("subscribe", topic).option("maxOffsetsPerTrigger", "20000").load())  # fmt: skip
    parsed = raw.select(
        F.from_json(F.col("value").cast("string"), event_schema(job.schema_)).alias("e")
    ).select("e.*")
    uri = str(storage / "bare")
    rows = [0]

    def write(df: Any, batch_id: int) -> None:
        t = df.toArrow()
        rows[0] += t.num_rows
        if t.num_rows:
            write_deltalake(uri, t, mode="append")

    t0 = time.perf_counter()
    q = (parsed.writeStream.foreachBatch(write).option("checkpointLocation", str(storage / "ck-bare"))
         .trigger(availableNow=True).start())  # fmt: skip
    q.awaitTermination()
    dt = time.perf_counter() - t0
    assert rows[0] == EVENTS, rows
    return {"rows": rows[0], "seconds": dt}


def variant_plain(storage: Path, bootstrap: str, topic: str) -> dict[str, Any]:
    import pyarrow as pa
    from confluent_kafka import Consumer, TopicPartition
    from deltalake import write_deltalake

    from streamops.kafka.offsets import client_config

    c = Consumer(client_config(bootstrap, {"group.id": "bench-plain"}))
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    uri = str(storage / "plain")
    n = 0
    batch: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    while n < EVENTS:
        for m in c.consume(10_000, 1.0):
            if m.error() is not None:
                continue
            n += 1
            # The minimum any consumer must do: drop what does not parse or has the wrong shape.
            try:
                ev = json.loads(m.value())
            except (ValueError, TypeError):
                continue
            if (
                isinstance(ev, dict)
                and all(ev.get(f) is not None for f in FIELDS)
                and isinstance(ev["claim_amount"], int | float)
            ):
                batch.append(ev)
        if len(batch) >= 20_000 or (n >= EVENTS and batch):
            write_deltalake(uri, pa.Table.from_pylist(batch), mode="append")
            batch = []
    dt = time.perf_counter() - t0
    c.close()
    return {"rows": n, "seconds": dt}


def _peak_rss_of(cmd: list[str]) -> tuple[dict[str, Any], int]:
    import psutil

    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    err = tempfile.TemporaryFile()  # noqa: SIM115 - read back after the process ends
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        err.seek(0)
        tail = err.read().decode(errors="replace")[-3000:]
        raise SystemExit(f"variant failed: {' '.join(cmd)}\n{out}\n{tail}")
    return json.loads(out.strip().splitlines()[-1]), peak


def main() -> None:
    from streamops.localstack import LocalStack
    from streamops.demo.sample import ensure_topic, generate, produce, utc

    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(ROOT / ".cache", state_dir=Path(tmp) / "stack")
        stack.up(services=("broker",))
        try:
            bs = stack.broker_bootstrap()
            topic = "bench.claims"
            ensure_topic(bs, topic, PARTITIONS)
            job = _bundle(Path(tmp), bs, topic).job("claims_hourly")
            sample = generate(job, partitions=PARTITIONS, start=utc("2026-11-24T00:00:00Z"),
                              span=timedelta(hours=24), n=EVENTS, malformed=600)  # fmt: skip
            produce(bs, topic, sample)
            results: dict[str, Any] = {}
            for name in ("full", "bare", "plain"):
                storage = Path(tmp) / name
                storage.mkdir()
                cmd = [sys.executable, __file__, "--variant", name, str(storage), bs, topic]
                res, peak = _peak_rss_of(cmd)
                results[name] = {
                    **res,
                    "rows_per_s": round(res["rows"] / res["seconds"]),
                    "peak_rss_mb": round(peak / 2**20),
                }
        finally:
            stack.down()
    f, b, p = results["full"], results["bare"], results["plain"]
    summary = {
        "events": EVENTS, "partitions": PARTITIONS, "machine": f"{os.cpu_count()} cores, local[2]",
        "variants": results,
        "overhead_of_guards_rows_per_s_ratio_a_over_b": round(f["rows_per_s"] / b["rows_per_s"], 3),
        "full_vs_no_spark_rows_per_s_ratio_a_over_c": round(f["rows_per_s"] / p["rows_per_s"], 3),
        "peak_memory_ratio_a_over_b": round(f["peak_rss_mb"] / b["peak_rss_mb"], 3),
        "peak_memory_ratio_a_over_c": round(f["peak_rss_mb"] / p["peak_rss_mb"], 3),
    }  # fmt: skip
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Claims pipeline end to end ({EVENTS} events, {PARTITIONS} partitions, 1% malformed, local[2])",
        "",
        "| variant | rows/s | seconds | peak RSS (MB) |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {r['rows_per_s']} | {r['seconds']:.1f} | {r['peak_rss_mb']} |"
            for n, r in results.items()
        ),
        "",
        f"- (a)/(b) rows/s, overhead of the guards: {summary['overhead_of_guards_rows_per_s_ratio_a_over_b']}",
        f"- (a)/(c) rows/s, against the no-Spark reference: {summary['full_vs_no_spark_rows_per_s_ratio_a_over_c']}",
        f"- peak memory (a)/(b): {summary['peak_memory_ratio_a_over_b']}, (a)/(c): {summary['peak_memory_ratio_a_over_c']}",
    ]
    (out / "pipeline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--variant":
        fn = {"full": variant_full, "bare": variant_bare, "plain": variant_plain}[sys.argv[2]]
        print(json.dumps(fn(Path(sys.argv[3]), sys.argv[4], sys.argv[5])))
    else:
        main()
