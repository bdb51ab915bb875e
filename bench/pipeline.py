"""The claims job end to end against two baselines, on the same records, in one run.

(a) full:  `run_job(bundle, "claims_hourly", spark, available_now=True)`: bronze + quarantine
           (Kafka -> parse -> good/bad, idempotent appends, per-batch checks), then gold (bronze as
           a Delta stream -> watermark -> hourly windows -> MERGE), with the checkpoint guard,
           preflight and monitoring (metrics, fast-path alerts, consumer-group commits).
(b) bare:  one Spark query, the same Kafka options: parse -> drop unparsable -> watermark ->
           hourly count/sum/avg by claim_type, region -> Delta MERGE in foreachBatch; no
           quarantine, no app transactions, no guards, no monitoring.
(c) plain: a confluent-kafka consumer -> json.loads + field checks -> delta-rs `write_deltalake`
           in chunks of max_offsets_per_trigger rows; no Spark, no aggregation.

One local broker, one topic (8 partitions, 1 % malformed) produced once; one SparkSession for
(a) and (b), warmed up first on a small topic with both, so neither pays the JVM's warm-up alone.
(c) runs before Spark starts. rows/s = Kafka records / wall seconds of the variant; peak memory =
the peak VmRSS of this process and its children (the Spark JVM; not the broker), sampled every
0.1 s from the start of the variant. The JVM keeps the heap it grew, so (b) starts where (a) left
it: "RSS at start" says how much of a peak was there before the variant began.
Writes bench/results/pipeline.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claims_topic import (
    CACHE,
    JOB,
    ROOT,
    SOURCE,
    PeakRss,
    Workspace,
    claims_bundle,
    machine,
    others_running,
    produce_claims,
    workspace,
)
from pyspark.sql.streaming import StreamingQueryListener

from streamops.runner.job import run_job

PARTITIONS = 8
MALFORMED_PCT = 1.0
MAX_OFFSETS = 200_000
WARMUP_EVENTS = 16_000
BARE_QUERY = "bench_bare"
DURATIONS = ("addBatch", "getBatch", "latestOffset", "queryPlanning", "walCommit",
             "triggerExecution")  # fmt: skip
GOALS = {"full_over_bare": 0.9, "full_over_plain": 0.5}


class ProgressLog(StreamingQueryListener):
    """Every progress event of every query, by query name (the durationMs breakdown included)."""

    def __init__(self) -> None:
        self.progress: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.terminated = 0
        self._lock = threading.Lock()

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        with self._lock:
            self.progress[p.name].append(
                {"batch": p.batchId, "rows": p.numInputRows, "ms": dict(p.durationMs)}
            )

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        with self._lock:
            self.terminated += 1

    def settle(self, terminations: int, timeout_s: float = 60) -> None:
        """Wait until `terminations` queries have ended: the bus delivers a query's progress
        events before its end, so every batch is here then."""
        deadline = time.monotonic() + timeout_s
        while self.terminated < terminations:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"only {self.terminated} of {terminations} queries reported an end"
                )
            time.sleep(0.1)

    def reset(self) -> None:
        with self._lock:
            self.progress.clear()


def query_profile(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches, rows and the summed durationMs breakdown (in seconds) of one query's run."""
    return {
        "batches": len(events),
        "rows": sum(e["rows"] for e in events),
        "seconds": {k: round(sum(e["ms"].get(k, 0) for e in events) / 1000, 2) for k in DURATIONS},
    }


def variant_plain(bundle: Any, uri: str, events: int, chunk: int) -> int:
    """(c): consume every record, keep the well-formed ones, append them with delta-rs."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    from deltalake import write_deltalake

    src = bundle.source(bundle.job(JOB))
    fields = {n: f.type for n, f in bundle.job(JOB).schema_.items()}
    conf = {**bundle.runtime.kafka_for(SOURCE).librdkafka(), "group.id": "bench-plain",
            "enable.auto.commit": False, "log_level": 3}  # fmt: skip
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(src.topic, p, OFFSET_BEGINNING) for p in range(src.partitions)])
    read = written = 0
    rows: list[tuple[Any, ...]] = []
    idle_since = time.monotonic()
    try:
        while read < events:
            msgs = consumer.consume(10_000, 1.0)
            if not msgs and time.monotonic() - idle_since > 30:
                raise SystemExit(f"plain consumer: stuck at {read} of {events} records")
            idle_since = time.monotonic() if msgs else idle_since
            for m in msgs:
                if m.error() is not None:
                    raise SystemExit(f"plain consumer: {m.error()}")
                read += 1
                row = _parse(m.value(), fields)
                if row is not None:
                    rows.append(row)
            if len(rows) >= chunk or (read >= events and rows):
                write_deltalake(uri, _arrow(rows, fields), mode="append")
                written += len(rows)
                rows = []
    finally:
        consumer.close()
    return written


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "timestamp": lambda v: isinstance(v, str) and _iso(v),
}


def _iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _parse(value: bytes | None, fields: dict[str, str]) -> tuple[Any, ...] | None:
    # The least any consumer must do: drop what does not parse or has the wrong shape.
    try:
        ev = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(ev, dict):
        return None
    row = tuple(ev.get(n) for n in fields)
    ok = all(v is not None and _CHECKS[t](v) for v, t in zip(row, fields.values(), strict=True))
    return row if ok else None


def _arrow(rows: list[tuple[Any, ...]], fields: dict[str, str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    types = {"string": pa.string(), "double": pa.float64(), "timestamp": pa.string()}
    cols = {n: pa.array([r[i] for r in rows], types[t]) for i, (n, t) in enumerate(fields.items())}
    for n, t in fields.items():
        if t == "timestamp":
            cols[n] = pc.cast(cols[n], pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def variant_bare(spark: Any, bundle: Any, root: Path) -> None:
    """(b): Kafka -> parse -> watermark -> hourly aggregate -> Delta MERGE, one query."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from streamops.pipeline.transform import event_schema, kafka_options

    job = bundle.job(JOB)
    agg, wm, t = job.aggregate, job.watermark, job.event_time
    uri = str(root / "bare_hourly")
    raw = spark.readStream.format("kafka").options(**kafka_options(bundle, job)).load()
    parsed = raw.select(
        F.from_json(F.col("value").cast("string"), event_schema(job.schema_)).alias("e")
    ).select("e.*")
    good = parsed.where(" AND ".join(f"`{n}` IS NOT NULL" for n in job.schema_))
    hourly = (
        good.withWatermark(t, wm.delay.text)
        .groupBy(F.window(t, agg.window.text).alias("w"), *agg.group_by)
        .agg(F.count(F.lit(1)).alias("claims"), F.sum("claim_amount").alias("total_amount"),
             F.avg("claim_amount").alias("avg_amount"))
        .select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
                *agg.group_by, "claims", "total_amount", "avg_amount")
    )  # fmt: skip
    DeltaTable.createIfNotExists(spark).location(uri).addColumns(hourly.schema).execute()
    keys = ("window_start", "window_end", *agg.group_by)
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)

    def merge(df: Any, _batch_id: int) -> None:
        (
            DeltaTable.forPath(df.sparkSession, uri).alias("t").merge(df.alias("s"), cond)
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        )  # fmt: skip

    q = (
        hourly.writeStream.queryName(BARE_QUERY).outputMode("update")
        .option("checkpointLocation", str(root / "bare_checkpoint"))
        .foreachBatch(merge).trigger(availableNow=True).start()
    )  # fmt: skip
    q.awaitTermination()


def _count_sum(uri: str, column: str) -> int:
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    return int(pc.sum(DeltaTable(uri).to_pyarrow_table(columns=[column]).column(0)).as_py() or 0)


def _measure(rss: PeakRss, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    start_mb = rss.mark()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, {"seconds": round(seconds, 2), "peak_rss_mb": rss.peak_mb(),
                 "rss_at_start_mb": start_mb}  # fmt: skip


def _check(what: str, got: int, want: int) -> None:
    if got != want:
        raise SystemExit(f"{what}: {got}, expected {want}; the figures would be meaningless")


def spark_jobs(spark: Any, since_ms: int) -> dict[str, list[tuple[str, int, int]]]:
    """Spark jobs finished since `since_ms`, by streaming query: (call site, start, end in ms).

    Spark describes every job a query runs (its own and those of its foreachBatch) with the
    query's name on the first line; Delta's own jobs prefix it with "Delta: ".
    """
    by_query: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    it = spark.sparkContext._jsc.sc().statusStore().jobsList(None).iterator()
    while it.hasNext():
        j = it.next()
        desc, sub, end = j.description(), j.submissionTime(), j.completionTime()
        if not (desc.isDefined() and sub.isDefined() and end.isDefined()):
            continue
        if sub.get().getTime() < since_ms:
            continue
        query = desc.get().split("\n")[0].removeprefix("Delta: ")
        method, _, where = j.name().partition(" at ")
        # The file name only: call sites name absolute paths of this machine.
        method = method or "(unnamed)"
        site = f"{method} at {where.rsplit('/', 1)[-1]}" if where else method
        by_query[query].append((site, sub.get().getTime(), end.get().getTime()))
    return by_query


def jobs_profile(jobs: list[tuple[str, int, int]], batch_s: float) -> dict[str, Any]:
    """Seconds with a Spark job running (overlaps counted once), the rest of the batches' time
    (the driver alone: Delta commits and log reads, planning, Python), and the top call sites."""
    running, reach = 0, 0
    for _, start, end in sorted(jobs, key=lambda j: j[1]):
        running += max(0, end - max(start, reach))
        reach = max(reach, end)
    sites: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for site, start, end in jobs:
        sites[site][0] += 1
        sites[site][1] += (end - start) / 1000
    top = sorted(sites.items(), key=lambda kv: -kv[1][1])[:6]
    return {
        "jobs": len(jobs), "running_s": round(running / 1000, 2),
        "driver_only_s": round(batch_s - running / 1000, 2),
        "by_call_site": [{"site": k, "jobs": int(n), "seconds": round(t, 2)} for k, (n, t) in top],
    }  # fmt: skip


def _warm_up(spark: Any, ws: Workspace, log: ProgressLog) -> None:
    warm = claims_bundle(ws.root / "warmup", "bench.warmup", PARTITIONS, WARMUP_EVENTS // 4)
    produce_claims(warm, WARMUP_EVENTS, MALFORMED_PCT)
    run_job(warm, JOB, spark, available_now=True)
    variant_bare(spark, warm, ws.root / "warmup")
    log.settle(3)
    log.reset()
    print("warm-up done")


def _full(
    spark: Any, ws: Workspace, rss: PeakRss, log: ProgressLog, events: int, malformed: int,
    max_offsets: int,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    bundle = claims_bundle(ws.root / "full", "bench.claims", PARTITIONS, max_offsets)
    job = bundle.job(JOB)
    since = int(time.time() * 1000)
    run, full = _measure(rss, lambda: run_job(bundle, JOB, spark, available_now=True))
    log.settle(5)
    print(f"full done in {full['seconds']} s")
    _check("full: Kafka records read", run.input_rows, events)
    _check("full: quarantined", run.quarantined_rows, malformed)
    _check("full: claims in gold", _count_sum(run.table_uri, "claims"), events - malformed)
    jobs = spark_jobs(spark, since)
    profile: dict[str, Any] = {}
    for key, query, writes in (("full_bronze", job.bronze_query_name, run.bronze_writes),
                               ("full_gold", job.query_name, run.writes)):  # fmt: skip
        q = query_profile(log.progress[query])
        q["writer_s"] = round(sum(w.seconds for w in writes), 2)
        q["spark_jobs"] = jobs_profile(jobs[query], q["seconds"]["triggerExecution"])
        profile[key] = q
    busy = sum(profile[k]["seconds"]["triggerExecution"] for k in ("full_bronze", "full_gold"))
    profile["full_outside_batches_s"] = round(full["seconds"] - busy, 2)
    return full, profile


def _bare(
    spark: Any, ws: Workspace, rss: PeakRss, log: ProgressLog, events: int, malformed: int,
    max_offsets: int,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    bundle = claims_bundle(ws.root / "bare", "bench.claims", PARTITIONS, max_offsets)
    since = int(time.time() * 1000)
    _, bare = _measure(rss, lambda: variant_bare(spark, bundle, ws.root / "bare"))
    log.settle(6)
    q = query_profile(log.progress[BARE_QUERY])
    _check("bare: Kafka records read", q["rows"], events)
    table = str(ws.root / "bare" / "bare_hourly")
    _check("bare: claims counted", _count_sum(table, "claims"), events - malformed)
    q["spark_jobs"] = jobs_profile(spark_jobs(spark, since)[BARE_QUERY],
                                   q["seconds"]["triggerExecution"])  # fmt: skip
    return bare, q


def run_spark_variants(
    ws: Workspace, rss: PeakRss, events: int, malformed: int, max_offsets: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Warm-up, then (a) and (b) in one session: their figures and the query profiles."""
    from streamops.pipeline.session import local_session

    spark = local_session(jars=CACHE / "jvm" / "spark", cores=2, app_name="bench-pipeline")
    log = ProgressLog()
    spark.streams.addListener(log)
    try:
        _warm_up(spark, ws, log)
        full, profile = _full(spark, ws, rss, log, events, malformed, max_offsets)
        bare, profile["bare"] = _bare(spark, ws, rss, log, events, malformed, max_offsets)
    finally:
        spark.stop()
    profile["bare_outside_batches_s"] = round(
        bare["seconds"] - profile["bare"]["seconds"]["triggerExecution"], 2
    )
    return full, bare, profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--max-offsets", type=int, default=MAX_OFFSETS)
    args = ap.parse_args()
    busy = others_running()
    started = datetime.now(UTC)
    with workspace("pipeline") as ws, PeakRss(exclude=ws.broker_pid) as rss:
        bundle = claims_bundle(ws.root / "plain", "bench.claims", PARTITIONS, args.max_offsets)
        t0 = time.perf_counter()
        malformed = produce_claims(bundle, args.events, MALFORMED_PCT)
        produce_s = time.perf_counter() - t0
        print(f"produced {args.events} records ({malformed} malformed) in {produce_s:.1f} s")
        uri = str(ws.root / "plain" / "plain_events")
        written, plain = _measure(
            rss, lambda: variant_plain(bundle, uri, args.events, args.max_offsets)
        )
        _check("plain: rows written", written, args.events - malformed)
        print(f"plain done in {plain['seconds']} s")
        full, bare, profile = run_spark_variants(ws, rss, args.events, malformed, args.max_offsets)
    busy = busy or others_running()
    variants = {"full": full, "bare": bare, "plain": plain}
    for v in variants.values():
        v["rows_per_s"] = round(args.events / v["seconds"])
    result = {
        "events": args.events, "partitions": PARTITIONS, "malformed": malformed,
        "max_offsets_per_trigger": args.max_offsets, "spark": "local[2], one session for (a) and (b)",
        "full_over_bare": round(full["rows_per_s"] / bare["rows_per_s"], 3),
        "full_over_plain": round(full["rows_per_s"] / plain["rows_per_s"], 3),
        "goals": GOALS, "variants": variants, "profile": profile,
        "produce_s": round(produce_s, 1), "machine": machine(),
        "other_tests_running": busy, "date": started.isoformat(timespec="seconds"),
    }  # fmt: skip
    out = ROOT / "bench" / "results"
    (out / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "pipeline.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    v, p = r["variants"], r["profile"]
    missed = [k for k, goal in r["goals"].items() if r[k] < goal]
    lines = [
        f"# Claims pipeline end to end ({r['events']:,} events, {r['partitions']} partitions, "
        f"1 % malformed, local[2], {r['machine']['cores']} cores, {r['date'][:10]})",
        "",
        "| variant | what it does | rows/s | wall s | peak RSS MB | RSS at start MB |",
        "|---|---|---:|---:|---:|---:|",
        f"| (a) full | run_job: bronze + quarantine, then gold (watermark, hourly MERGE), guard, "
        f"monitoring | {v['full']['rows_per_s']:,} | {v['full']['seconds']} | "
        f"{v['full']['peak_rss_mb']} | {v['full']['rss_at_start_mb']} |",
        f"| (b) bare | one Spark query: Kafka -> from_json -> watermark -> hourly window -> MERGE "
        f"| {v['bare']['rows_per_s']:,} | {v['bare']['seconds']} | {v['bare']['peak_rss_mb']} | "
        f"{v['bare']['rss_at_start_mb']} |",
        f"| (c) plain | confluent-kafka -> json.loads -> delta-rs append, no Spark | "
        f"{v['plain']['rows_per_s']:,} | {v['plain']['seconds']} | {v['plain']['peak_rss_mb']} | "
        f"{v['plain']['rss_at_start_mb']} |",
        "",
        f"- full/bare = **{r['full_over_bare']}** (goal >= {r['goals']['full_over_bare']}), "
        f"full/plain = **{r['full_over_plain']}** (goal >= {r['goals']['full_over_plain']}); "
        f"{'goals met' if not missed else 'missed: ' + ', '.join(missed)}.",
        *_meaning(r),
    ]
    if r["other_tests_running"]:
        lines.append("- Other engineers' Spark test suites ran on this 2-core machine during the "
                     "run; the absolute figures are lower than on an idle machine.")  # fmt: skip
    if missed:
        lines += ["", *_profile_table(p)]
    return "\n".join(lines) + "\n"


def _meaning(r: dict[str, Any]) -> list[str]:
    p = r["profile"]
    b, g = p["full_bronze"]["seconds"], p["full_gold"]["seconds"]
    full_s = r["variants"]["full"]["seconds"]
    return [
        f"- The full job reads Kafka once (bronze, {b['triggerExecution']} s in "
        f"{p['full_bronze']['batches']} batches) and the bronze table once more (gold, "
        f"{g['triggerExecution']} s in {p['full_gold']['batches']} batches); the bare query does "
        f"parse and aggregate in one pass ({p['bare']['seconds']['triggerExecution']} s in "
        f"{p['bare']['batches']} batches).",
        f"- Outside its batches the full job spends {p['full_outside_batches_s']} s of its "
        f"{full_s} s (start-up of two queries, preflight, checkpoint guard, table creation, "
        f"progress polling); the bare query {p['bare_outside_batches_s']} s.",
        "- Peak RSS is this process plus the Spark JVM (driver memory 1g), sampled every 0.1 s; "
        "the JVM keeps the heap it grew, so (b) starts from what the warm-up and (a) left.",
        "- The plain consumer does no aggregation, keeps no state and writes no quarantine: it is "
        "the floor of reading and landing the records, not an equivalent job.",
    ]


def _profile_table(p: dict[str, Any]) -> list[str]:
    head = ["query", "batches", *DURATIONS, "writer (foreachBatch)"]
    rows = [
        ("(a) bronze", p["full_bronze"], p["full_bronze"]["writer_s"]),
        ("(a) gold", p["full_gold"], p["full_gold"]["writer_s"]),
        ("(b) bare", p["bare"], "-"),
    ]
    return [
        "## Where the full job's time goes (seconds, summed over each query's batches, from the "
        "progress events' durationMs)",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
        *(
            f"| {name} | {q['batches']} | "
            + " | ".join(str(q["seconds"][k]) for k in DURATIONS)
            + f" | {w} |"
            for name, q, w in rows
        ),
        "",
        "addBatch is the foreachBatch writer (bronze: persist, count good/bad, two idempotent "
        "appends and their commit checks; gold: persist, count, MERGE); triggerExecution is the "
        "whole batch.",
        "",
        "### Inside the batches: Spark jobs by call site (from Spark's status store)",
        "",
        "| query | Spark jobs | s with a job running | s driver only | top call sites (jobs, s) |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {name} | {q['spark_jobs']['jobs']} | {q['spark_jobs']['running_s']} | "
            f"{q['spark_jobs']['driver_only_s']} | "
            + "; ".join(
                f"`{c['site']}` ({c['jobs']}, {c['seconds']})"
                for c in q["spark_jobs"]["by_call_site"]
            )
            + " |"
            for name, q, _ in rows
        ),
        "",
        "Driver only = batch time with no Spark job running: Delta commits and log reads, "
        "planning, the Python side of foreachBatch. `call at clientserver.py` = an action called "
        "from Python in foreachBatch (bronze: the good/bad count over the persisted batch); "
        "`save` = a Delta append; `getHistory` = the commit check; `start` = jobs that carry the "
        "call site of the query's start (the stream thread's own, and in (b) its MERGE too); "
        "`count` = gold's count of the persisted batch; the Delta internals "
        "(`recordDeltaOperationInternal`, `withThreadLocalCaptured`) are snapshot/log replay and "
        "MERGE steps.",
    ]


if __name__ == "__main__":
    main()
