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
Each variant runs --rounds times on fresh tables ((a) and (b) alternate; (c)'s rounds run before
Spark starts) and its median round counts: this machine is shared, and one round can catch a
neighbour's load. rows/s = Kafka records / wall seconds; peak memory = the highest VmRSS of this
process and its children (the Spark JVM; not the broker), sampled every 0.1 s during the variant.
The JVM keeps the heap it grew, so (b) starts where (a) left it: "RSS at start" (first round)
says how much of a peak was there before the variant began. The profile (durationMs per query,
Spark jobs by call site) is the median round's. Writes bench/results/pipeline.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from claims_topic import (
    CACHE,
    JOB,
    ROOT,
    SOURCE,
    Neighbours,
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
ROUNDS = 3
OPAQUE_SITES = ("NativeMethodAccessorImpl.java:0", "<unknown>:0")
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

    from streamops.pipeline.bronze import event_schema, kafka_options

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
    others = Neighbours()
    start_mb = rss.mark()
    others.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, {"seconds": round(seconds, 2), "peak_rss_mb": rss.peak_mb(),
                 "rss_at_start_mb": start_mb, "others_cpu_s": round(others.cpu_s(), 1)}  # fmt: skip


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
        where = where.rsplit("/", 1)[-1]
        # Actions called through py4j carry no Python call site: the method alone says it.
        site = f"{method} at {where}" if where and where not in OPAQUE_SITES else method
        site = site or "(unnamed)"
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
    before = log.terminated
    run_job(warm, JOB, spark, available_now=True)
    variant_bare(spark, warm, ws.root / "warmup")
    log.settle(before + 3)
    print("warm-up done")


def _full(
    spark: Any, ws: Workspace, rss: PeakRss, log: ProgressLog, n: int, events: int,
    malformed: int, max_offsets: int,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    bundle = claims_bundle(ws.root / f"full-{n}", "bench.claims", PARTITIONS, max_offsets)
    job = bundle.job(JOB)
    log.reset()
    before, since = log.terminated, int(time.time() * 1000)
    run, full = _measure(rss, lambda: run_job(bundle, JOB, spark, available_now=True))
    log.settle(before + 2)
    print(f"round {n}: full done in {full['seconds']} s")
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
    spark: Any, ws: Workspace, rss: PeakRss, log: ProgressLog, n: int, events: int,
    malformed: int, max_offsets: int,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    root = ws.root / f"bare-{n}"
    bundle = claims_bundle(root, "bench.claims", PARTITIONS, max_offsets)
    log.reset()
    before, since = log.terminated, int(time.time() * 1000)
    _, bare = _measure(rss, lambda: variant_bare(spark, bundle, root))
    log.settle(before + 1)
    print(f"round {n}: bare done in {bare['seconds']} s")
    q = query_profile(log.progress[BARE_QUERY])
    _check("bare: Kafka records read", q["rows"], events)
    _check("bare: claims counted", _count_sum(str(root / "bare_hourly"), "claims"),
           events - malformed)  # fmt: skip
    q["spark_jobs"] = jobs_profile(spark_jobs(spark, since)[BARE_QUERY],
                                   q["seconds"]["triggerExecution"])  # fmt: skip
    return bare, {"bare": q, "bare_outside_batches_s": round(
        bare["seconds"] - q["seconds"]["triggerExecution"], 2)}  # fmt: skip


Rounds = list[tuple[dict[str, Any], dict[str, Any]]]


def run_spark_variants(
    ws: Workspace, rss: PeakRss, events: int, malformed: int, max_offsets: int, rounds: int
) -> tuple[Rounds, Rounds]:
    """Warm-up, then `rounds` x ((a), (b)) in one session: figures and profile of each."""
    from streamops.pipeline.session import local_session

    spark = local_session(jars=CACHE / "jvm" / "spark", cores=2, app_name="bench-pipeline")
    log = ProgressLog()
    spark.streams.addListener(log)
    fulls: Rounds = []
    bares: Rounds = []
    try:
        _warm_up(spark, ws, log)
        for n in range(rounds):
            fulls.append(_full(spark, ws, rss, log, n, events, malformed, max_offsets))
            bares.append(_bare(spark, ws, rss, log, n, events, malformed, max_offsets))
    finally:
        spark.stop()
    return fulls, bares


def _plain_rounds(ws: Workspace, rss: PeakRss, args: Any, malformed: int) -> Rounds:
    out: Rounds = []
    for n in range(args.rounds):
        bundle = claims_bundle(ws.root / f"plain-{n}", "bench.claims", PARTITIONS, args.max_offsets)
        uri = str(ws.root / f"plain-{n}" / "plain_events")
        written, plain = _measure(
            rss, partial(variant_plain, bundle, uri, args.events, args.max_offsets)
        )
        _check("plain: rows written", written, args.events - malformed)
        print(f"round {n}: plain done in {plain['seconds']} s")
        out.append((plain, {}))
    return out


def _median_round(rounds: Rounds) -> int:
    order = sorted(range(len(rounds)), key=lambda i: rounds[i][0]["seconds"])
    return order[(len(order) - 1) // 2]


def _summary(rounds: Rounds, events: int) -> dict[str, Any]:
    """Median wall seconds over the rounds (its rows/s), the highest peak RSS, the first start."""
    figures = [f for f, _ in rounds]
    seconds = statistics.median(f["seconds"] for f in figures)
    return {
        "seconds": round(seconds, 2), "rows_per_s": round(events / seconds),
        "seconds_per_round": [f["seconds"] for f in figures],
        "others_cpu_s_per_round": [f["others_cpu_s"] for f in figures],
        "peak_rss_mb": max(f["peak_rss_mb"] for f in figures),
        "rss_at_start_mb": figures[0]["rss_at_start_mb"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--max-offsets", type=int, default=MAX_OFFSETS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    args = ap.parse_args()
    busy, load = others_running(), [os.getloadavg()[0]]
    started = datetime.now(UTC)
    with workspace("pipeline") as ws, PeakRss(exclude=ws.broker_pid) as rss:
        bundle = claims_bundle(ws.root / "topic", "bench.claims", PARTITIONS, args.max_offsets)
        t0 = time.perf_counter()
        malformed = produce_claims(bundle, args.events, MALFORMED_PCT)
        produce_s = time.perf_counter() - t0
        print(f"produced {args.events} records ({malformed} malformed) in {produce_s:.1f} s")
        plains = _plain_rounds(ws, rss, args, malformed)
        fulls, bares = run_spark_variants(
            ws, rss, args.events, malformed, args.max_offsets, args.rounds
        )
    busy, load = busy or others_running(), [*load, os.getloadavg()[0]]
    variants = {k: _summary(r, args.events) for k, r in (("full", fulls), ("bare", bares),
                                                          ("plain", plains))}  # fmt: skip
    full, bare, plain = variants["full"], variants["bare"], variants["plain"]
    i, j = _median_round(fulls), _median_round(bares)
    profile = {"round": {"full": i, "bare": j}, **fulls[i][1], **bares[j][1]}
    result = {
        "events": args.events, "partitions": PARTITIONS, "malformed": malformed,
        "max_offsets_per_trigger": args.max_offsets, "rounds": args.rounds,
        "spark": "local[2], one session for (a) and (b)",
        "full_over_bare": round(full["rows_per_s"] / bare["rows_per_s"], 3),
        "full_over_plain": round(full["rows_per_s"] / plain["rows_per_s"], 3),
        "goals": GOALS, "variants": variants, "profile": profile,
        "produce_s": round(produce_s, 1), "machine": machine(),
        "load_1min_start_end": [round(x, 2) for x in load],
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
        f"| variant | what it does | rows/s | wall s (median of {r['rounds']}) | s per round | "
        "other processes' CPU per round, core-s | peak RSS MB | RSS at start MB |",
        "|---|---|---:|---:|---|---|---:|---:|",
        *(_variant_row(name, what, v[key]) for key, name, what in VARIANT_ROWS),
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


VARIANT_ROWS = (
    ("full", "(a) full", "run_job: bronze + quarantine, then gold (watermark, hourly MERGE), "
     "guard, monitoring"),
    ("bare", "(b) bare", "one Spark query: Kafka -> from_json -> watermark -> hourly window -> "
     "MERGE"),
    ("plain", "(c) plain", "confluent-kafka -> json.loads -> delta-rs append, no Spark"),
)  # fmt: skip


def _variant_row(name: str, what: str, x: dict[str, Any]) -> str:
    rounds = ", ".join(map(str, x["seconds_per_round"]))
    others = ", ".join(map(str, x["others_cpu_s_per_round"]))
    return (f"| {name} | {what} | {x['rows_per_s']:,} | {x['seconds']} | {rounds} | {others} | "
            f"{x['peak_rss_mb']} | {x['rss_at_start_mb']} |")  # fmt: skip


def _meaning(r: dict[str, Any]) -> list[str]:
    p = r["profile"]
    b, g = p["full_bronze"]["seconds"], p["full_gold"]["seconds"]
    full_s = r["variants"]["full"]["seconds"]
    # Bronze's foreachBatch materialises the batch (Kafka read, parse, quarantine checks, cache)
    # in the good/bad count it calls from Python; that call site carries no Python frame.
    read = sum(c["seconds"] for c in p["full_bronze"]["spark_jobs"]["by_call_site"]
               if c["site"].startswith("call at clientserver"))  # fmt: skip
    return [
        f"- The full job reads Kafka once (bronze, {b['triggerExecution']} s in "
        f"{p['full_bronze']['batches']} batches, {read:.1f} s of it in the Spark jobs of the "
        "good/bad count that materialises each batch: read, parse, quarantine checks, cache) and "
        f"the bronze table once more (gold, {g['triggerExecution']} s in "
        f"{p['full_gold']['batches']} batches); the bare query reads, parses, aggregates and "
        f"merges in one pass ({p['bare']['seconds']['triggerExecution']} s in "
        f"{p['bare']['batches']} batches, {p['bare']['spark_jobs']['running_s']} s of Spark jobs).",
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
        f"## Where the full job's time goes (median rounds: (a) #{p['round']['full']}, (b) "
        f"#{p['round']['bare']}; seconds summed over each query's batches, from the progress "
        "events' durationMs)",
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
