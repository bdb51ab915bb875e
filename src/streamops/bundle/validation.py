"""Validation rules that span fields: the production patterns streamops encodes.

Each rule returns Problems naming the YAML path (and so `file:line`), what is wrong and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from streamops.bundle import jobs_api_fields as api
from streamops.bundle.durations import human
from streamops.bundle.models import (
    NUMERIC,
    DatabricksSettings,
    Job,
    JoinStep,
    KafkaSecurity,
    Table,
    WatermarkStep,
    WindowAggregateStep,
)
from streamops.bundle.runtime import TESTED_RUNTIME, TESTED_SPARK, spark_version_of
from streamops.bundle.secrets import SecretRef, looks_like_secret
from streamops.bundle.yamlsource import YamlDocument, YamlPath, dotted
from streamops.errors import MissingDependencyError, Problem

if TYPE_CHECKING:
    from streamops.bundle.resolved import Bundle

# Partitions beyond this many per core mean many scheduling waves per batch for little work.
PARTITIONS_PER_CORE_MAX = 4
DURABLE_SCHEMES = (
    "abfss://",
    "abfs://",
    "wasbs://",
    "s3://",
    "s3a://",
    "gs://",
    "dbfs:/",
    "/Volumes/",
)
ABFSS_FIX = "use abfss://<container>@<account>.dfs.core.windows.net/<path>"


class _Ctx:
    def __init__(self, bundle: Bundle, doc: YamlDocument):
        self.bundle = bundle
        self.doc = doc
        self.problems: list[Problem] = []

    def add(self, path: YamlPath, message: str, fix: str = "", *, warning: bool = False) -> None:
        self.problems.append(
            Problem(
                self.doc.file,
                self.doc.line_of(path),
                dotted(path),
                message,
                fix,
                "warning" if warning else "error",
            )
        )


Rule = Callable[[_Ctx], None]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def check(bundle: Bundle, doc: YamlDocument) -> list[Problem]:
    """Run every rule for the bundle's target; errors first, then warnings, each by line."""
    ctx = _Ctx(bundle, doc)
    for r in RULES:
        r(ctx)
    return sorted(ctx.problems, key=lambda p: (p.severity != "error", p.line or 0))


def _jobs(ctx: _Ctx) -> Iterator[tuple[str, Job]]:
    yield from ctx.bundle.spec.jobs.items()


# --- references -----------------------------------------------------------------------------


@rule
def references(ctx: _Ctx) -> None:
    """Every name a job uses exists: its source, sink, event time and the columns of each step."""
    spec = ctx.bundle.spec
    for name, job in _jobs(ctx):
        base: YamlPath = ("jobs", name)
        if job.source not in spec.sources:
            ctx.add(
                (*base, "source"),
                f"unknown source '{job.source}'",
                f"use one of: {', '.join(spec.sources)}",
            )
        if job.sink not in spec.tables:
            ctx.add(
                (*base, "sink"),
                f"unknown table '{job.sink}'",
                f"add it under `tables:` or use one of: {', '.join(spec.tables)}",
            )
        _event_time(ctx, base, job)
        for i, step in enumerate(job.steps):
            sp: YamlPath = (*base, "steps", i)
            if isinstance(step, WatermarkStep):
                _watermark_column(ctx, sp, job, step)
            elif isinstance(step, WindowAggregateStep):
                _aggregate_columns(ctx, sp, job, step)
            elif isinstance(step, JoinStep):
                _join_columns(ctx, sp, job, step)
        _table_columns(ctx, name, job)


def _event_time(ctx: _Ctx, base: YamlPath, job: Job) -> None:
    ev = job.schema_.get(job.event_time)
    if ev is None:
        ctx.add(
            (*base, "event_time"),
            f"'{job.event_time}' is not a field of the schema",
            "name the schema field that holds the event time",
        )
    elif ev.type != "timestamp":
        ctx.add(
            (*base, "schema", job.event_time),
            f"the event time field has type '{ev.type}'",
            "declare it as `timestamp` (ISO-8601 text or epoch seconds are parsed)",
        )


def _watermark_column(ctx: _Ctx, sp: YamlPath, job: Job, step: WatermarkStep) -> None:
    schema = job.schema_
    col = step.watermark.column
    path: YamlPath = (*sp, "watermark", "column")
    if col not in schema:
        ctx.add(
            path,
            f"'{col}' is not a field of the schema",
            f"use the event time field '{job.event_time}'",
        )
    elif col == job.event_time:
        pass  # the event time's own type is checked above
    elif schema[col].type != "timestamp":
        # Spark refuses it only when the query starts, on the cluster.
        ctx.add(
            path,
            f"'{col}' has type '{schema[col].type}'; a watermark needs a timestamp",
            f"watermark the event time field '{job.event_time}' (declared `timestamp`)",
        )
    elif job.event_time in schema:
        # Quarantine (event_time_in_future), windows and the late report all use the
        # job's event time: a watermark on another column drops events none of them
        # would count as late.
        ctx.add(
            path,
            f"'{col}' is not the job's event time '{job.event_time}'",
            f"use `column: {job.event_time}`, or make '{col}' the job's `event_time`",
        )


def _aggregate_columns(ctx: _Ctx, sp: YamlPath, job: Job, step: WindowAggregateStep) -> None:
    schema = job.schema_
    agg = step.window_aggregate
    base: YamlPath = (*sp, "window_aggregate")
    for j, col in enumerate(agg.group_by):
        if col not in schema:
            ctx.add(
                (*base, "group_by", j),
                f"'{col}' is not a field of the schema",
                "group by a schema field",
            )
    for j, m in enumerate(agg.metrics):
        path: YamlPath = (*base, "metrics", j, "column")
        if m.column and m.column != "*" and m.column not in schema:
            ctx.add(path, f"'{m.column}' is not a field of the schema", "use a schema field")
        elif m.fn in ("sum", "avg") and m.column in schema:
            t = schema[m.column].type
            if t not in NUMERIC and not t.startswith("decimal"):
                ctx.add(
                    path,
                    f"{m.fn} of '{m.column}' needs a number, it is '{t}'",
                    "use a numeric field",
                )
    if agg.slide is not None and agg.slide.seconds > agg.window.seconds:
        ctx.add(
            (*base, "slide"),
            "slide is longer than the window; events between windows would be skipped",
            "use slide <= window",
        )


def _join_columns(ctx: _Ctx, sp: YamlPath, job: Job, step: JoinStep) -> None:
    sources = ctx.bundle.spec.sources
    js = step.join
    if js.source not in sources:
        ctx.add(
            (*sp, "join", "source"),
            f"unknown source '{js.source}'",
            f"use one of: {', '.join(sources)}",
        )
    for k, col in enumerate(js.on):
        if col not in job.schema_ or col not in js.schema_:
            ctx.add(
                (*sp, "join", "on", k),
                f"join key '{col}' must be in both schemas",
                "add it to both, or join on another field",
            )
    jcol = js.watermark.column
    path: YamlPath = (*sp, "join", "watermark", "column")
    if jcol not in js.schema_:
        ctx.add(
            path,
            f"'{jcol}' is not a field of the joined schema",
            "name the joined source's event time field",
        )
    elif js.schema_[jcol].type != "timestamp":
        ctx.add(
            path,
            f"'{jcol}' has type '{js.schema_[jcol].type}'; a watermark needs a timestamp",
            "name the joined source's event time field (declared `timestamp`)",
        )


def _table_columns(ctx: _Ctx, name: str, job: Job) -> None:
    """The sink's layout columns are columns the job writes."""
    table = ctx.bundle.spec.tables.get(job.sink)
    if table is None:
        return
    cols = set(_output_columns(job))
    for key in ("partition_by", "zorder_by", "cluster_by"):
        for k, col in enumerate(getattr(table, key)):
            if cols and col not in cols:
                ctx.add(
                    ("tables", job.sink, key, k),
                    f"'{col}' is not a column that job '{name}' writes",
                    f"use one of: {', '.join(sorted(cols))}",
                )


def _output_columns(job: Job) -> list[str]:
    agg = job.aggregate
    if agg is not None:
        return ["window_start", "window_end", *agg.group_by, *(m.name for m in agg.metrics)]
    cols = list(job.schema_)
    if job.join is not None:
        cols += [c for c in job.join.schema_ if c not in cols]
    return cols


# --- storage and checkpoints ------------------------------------------------------------------


def non_durable_reason(location: str) -> str | None:
    """Why a location cannot hold checkpoints that must survive a cluster, or None if it can."""
    loc = location.strip()
    low = loc.lower()
    if low.startswith("file:"):
        return "a file: URL is local to one machine"
    if low.startswith(("dbfs:/tmp", "/dbfs/tmp")):
        return "dbfs:/tmp is scratch space that is cleaned up"
    if low.startswith("/tmp") or low.startswith("/var/tmp"):
        return "/tmp is local scratch space, lost with the machine"
    if low.startswith(tuple(s.lower() for s in DURABLE_SCHEMES)):
        return None
    if "://" in loc:
        return None  # another object store: trust the user
    return "a local path lives on one machine's disk"


@rule
def durable_storage(ctx: _Ctx) -> None:
    b = ctx.bundle
    t = b.target
    tp: YamlPath = ("targets", b.target_name)
    places: list[tuple[YamlPath, str, str]] = [((*tp, "storage_root"), t.storage_root, "tables")]
    if t.checkpoint_root:
        places.append(((*tp, "checkpoint_root"), t.checkpoint_root, "checkpoints"))
    for name, job in _jobs(ctx):
        if job.checkpoint:
            places.append((("jobs", name, "checkpoint"), job.checkpoint, "checkpoints"))
    for key, table in b.spec.tables.items():
        if table.location:
            places.append((("tables", key, "location"), table.location, "tables"))
    if t.mode == "local":
        local = [p for p in places if non_durable_reason(p[1])]
        if local:
            ctx.add(
                local[0][0],
                f"{local[0][2]} are kept under a local folder ('{local[0][1]}')",
                "fine for the local target; dev/prod must use durable storage (abfss://)",
                warning=True,
            )
        return
    for path, loc, what in places:
        reason = non_durable_reason(loc)
        if reason:
            word = "durable" if what == "checkpoints" else "shared"
            ctx.add(
                path,
                f"'{loc}' is not {word} on target '{b.target_name}' ({reason}); "
                f"{what} there would be lost or reset",
                ABFSS_FIX,
            )
    if t.kafka.bootstrap_servers == "embedded":
        ctx.add(
            (*tp, "kafka", "bootstrap_servers"),
            "'embedded' (the local broker) is only for the local target",
            "name the cluster's brokers, e.g. 'broker-1:9093,broker-2:9093'",
        )
    if t.databricks is None or not t.databricks.host:
        ctx.add(
            (*tp, "databricks"),
            "no Databricks workspace host is set; deploys to this target will need one",
            "add `databricks: {host: https://adb-<id>.<n>."
            "azuredatabricks.net, token: '{{secrets/<scope>/<key>}}'}`",
            warning=True,
        )


@rule
def checkpoints_unique(ctx: _Ctx) -> None:
    b = ctx.bundle
    seen_names: dict[str, str] = {}
    seen_locs: dict[str, str] = {}
    for name, job in _jobs(ctx):
        qn = job.query_name
        if qn in seen_names:
            ctx.add(
                ("jobs", name, "query_name"),
                f"query name '{qn}' is also used by job "
                f"'{seen_names[qn]}'; their checkpoints and progress would collide",
                "give every job its own stable query name",
            )
        seen_names.setdefault(qn, name)
        if job.checkpoint and job.checkpoint.rstrip("/").rsplit("/", 1)[-1] != qn:
            ctx.add(
                ("jobs", name, "checkpoint"),
                f"the checkpoint location must end with the "
                f"query name '{qn}' so a renamed query cannot silently reuse or lose it",
                f"use '<durable root>/{qn}', or drop `checkpoint:` to derive it from the "
                "target's checkpoint_root",
            )
        loc = b.checkpoint_location(job)
        if loc in seen_locs:
            ctx.add(
                ("jobs", name, "checkpoint") if job.checkpoint else ("jobs", name, "query_name"),
                f"checkpoint '{loc}' is also used by job '{seen_locs[loc]}'; two queries "
                "sharing one checkpoint corrupt each other",
                "give each job its own location",
            )
        seen_locs.setdefault(loc, name)


# --- stateful steps and watermarks ------------------------------------------------------------


@rule
def watermarks(ctx: _Ctx) -> None:
    spec = ctx.bundle.spec
    for name, job in _jobs(ctx):
        src = spec.sources.get(job.source)
        watermark_seen = None
        for i, step in enumerate(job.steps):
            sp: YamlPath = ("jobs", name, "steps", i)
            if isinstance(step, WatermarkStep):
                watermark_seen = step.watermark
                if src and step.watermark.delay.seconds < src.max_lateness.seconds:
                    ctx.add(
                        (*sp, "watermark", "delay"),
                        f"watermark '{step.watermark.delay}' is shorter than source "
                        f"'{job.source}' declared max_lateness '{src.max_lateness}'; "
                        "late events would be dropped",
                        f"set the delay to at least '{src.max_lateness}'",
                    )
            elif isinstance(step, WindowAggregateStep | JoinStep) and watermark_seen is None:
                kind = "window_aggregate" if isinstance(step, WindowAggregateStep) else "join"
                ctx.add(
                    (*sp, kind),
                    f"this {kind.replace('_', ' ')} keeps state but no watermark "
                    "comes before it; its state would grow forever",
                    f"add `- watermark: {{column: {job.event_time}, delay: '<max lateness>'}}`"
                    " before it",
                )
            if isinstance(step, JoinStep):
                other = spec.sources.get(step.join.source)
                d = step.join.watermark.delay
                if other and d.seconds < other.max_lateness.seconds:
                    ctx.add(
                        (*sp, "join", "watermark", "delay"),
                        f"watermark '{d}' is shorter than source '{step.join.source}' declared "
                        f"max_lateness '{other.max_lateness}'; late events would be dropped",
                        f"set the delay to at least '{other.max_lateness}'",
                    )
        if sum(isinstance(s, WindowAggregateStep | JoinStep) for s in job.steps) > 1:
            ctx.add(
                ("jobs", name, "steps"),
                "more than one stateful step in one query",
                "split it into two jobs chained through a Delta table",
            )


@rule
def clock_skew(ctx: _Ctx) -> None:
    """max_clock_skew <= the watermark delay: an event accepted that far ahead of processing time
    moves the watermark to at most processing time, never past the events arriving on time."""
    for name, job in _jobs(ctx):
        for i, step in enumerate(job.steps):
            if not isinstance(step, WatermarkStep):
                continue
            skew, delay = job.max_clock_skew, step.watermark.delay
            if skew.seconds > delay.seconds:
                # The default never exceeds the delay (models.Job): the user wrote this skew.
                ctx.add(
                    ("jobs", name, "max_clock_skew"),
                    f"max_clock_skew '{skew}' is longer than the watermark delay '{delay}' "
                    f"(jobs.{name}.steps[{i}].watermark.delay): one event that far ahead of "
                    "the clock is accepted, moves the watermark past processing time, and "
                    "every on-time event after it is dropped as late",
                    f"set max_clock_skew to at most '{delay}' (events further ahead are "
                    "quarantined as event_time_in_future), or lengthen the watermark delay",
                )
            break


# --- sizing: files, partitions, state -------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n:,.1f} MB" if n < 100 else f"{n:,.0f} MB"


def _fitting_interval(rate_mb: float, lo: float, hi: float, up: bool) -> float:
    """A round trigger interval whose batches land inside [lo, hi] MB (the band's near edge)."""
    exact = (lo if up else hi) / rate_mb
    # Prefer whole minutes, then 5 s, then 1 s; a coarse step can overshoot a narrow band.
    for step in (60, 5, 1) if exact >= 120 else (5, 1):
        n = math.ceil(exact / step) * step if up else math.floor(exact / step) * step
        if n > 0 and lo <= rate_mb * n <= hi:
            return float(n)
    ms = math.ceil(exact * 1000) if up else math.floor(exact * 1000)
    return max(ms, 1) / 1000


@rule
def file_sizes(ctx: _Ctx) -> None:
    lo, hi = ctx.bundle.target.file_size_band_mb
    for name, job in _jobs(ctx):
        src = ctx.bundle.spec.sources.get(job.source)
        if src is None:
            continue
        rate_mb = src.events_per_second * src.bytes_per_event / 1e6  # MB/s landed
        if job.trigger.processing_time is not None:
            iv = job.trigger.processing_time.seconds
            size = rate_mb * iv
            if lo <= size <= hi:
                continue
            fit = _fitting_interval(rate_mb, lo, hi, up=size < lo)
            side = "below" if size < lo else "above"
            ctx.add(
                ("jobs", name, "trigger", "processing_time"),
                f"trigger '{job.trigger.processing_time}' lands ~{_mb(size)} per batch "
                f"({src.events_per_second:g} events/s x {src.bytes_per_event} B), {side} the "
                f"{lo:g}-{hi:g} MB file-size rule of thumb",
                f"a trigger of '{human(fit)}' would land ~{_mb(rate_mb * fit)}"
                + (
                    "; or keep it and let nightly compaction merge the small files"
                    if size < lo
                    else ""
                ),
                warning=True,
            )
        elif job.max_offsets_per_trigger:
            size = job.max_offsets_per_trigger * src.bytes_per_event / 1e6
            if lo <= size <= hi:
                continue
            # Round towards the inside of the band, so the suggestion really lands in it.
            exact = (lo if size < lo else hi) * 1e6 / src.bytes_per_event
            fit = max(1, math.ceil(exact) if size < lo else math.floor(exact))
            ctx.add(
                ("jobs", name, "max_offsets_per_trigger"),
                f"{job.max_offsets_per_trigger} offsets per batch land ~{_mb(size)}, outside "
                f"the {lo:g}-{hi:g} MB file-size rule of thumb",
                f"max_offsets_per_trigger: {fit} would land "
                f"~{_mb(fit * src.bytes_per_event / 1e6)}",
                warning=True,
            )


@rule
def partitions_vs_cores(ctx: _Ctx) -> None:
    cores = ctx.bundle.target.cluster.total_cores
    tname = ctx.bundle.target_name
    for name, job in _jobs(ctx):
        src = ctx.bundle.spec.sources.get(job.source)
        if src is None:
            continue
        if src.partitions > PARTITIONS_PER_CORE_MAX * cores:
            ctx.add(
                ("sources", job.source, "partitions"),
                f"{src.partitions} partitions far exceed the {cores} cores of target "
                f"'{tname}' (one read task per partition: "
                f"{math.ceil(src.partitions / cores)} waves per batch)",
                f"size the cluster to at least {math.ceil(src.partitions / PARTITIONS_PER_CORE_MAX)}"
                " cores, or use fewer partitions",
                warning=True,
            )
        if job.cpu_heavy and src.partitions < cores and not job.repartition:
            ctx.add(
                ("jobs", name, "cpu_heavy"),
                f"a CPU-heavy job reads {src.partitions} partitions on {cores} cores of target "
                f"'{tname}': {cores - src.partitions} cores would sit idle",
                f"add `repartition: {cores}` to spread the work after the read",
                warning=True,
            )


def _row_bytes(job: Job) -> int:
    if job.state_row_bytes:
        return job.state_row_bytes
    agg = job.aggregate
    assert agg is not None
    # Unsafe-row overhead + window struct + ~40 B per string key + ~16 B per aggregate buffer
    # (avg keeps sum and count); RocksDB adds its own overhead, so this is a low estimate.
    per_key = sum(
        40 if job.schema_[c].type == "string" else 8 for c in agg.group_by if c in job.schema_
    )
    per_agg = sum(16 if m.fn == "avg" else 8 for m in agg.metrics)
    return 64 + 32 + per_key + per_agg


@rule
def state_size(ctx: _Ctx) -> None:
    b = ctx.bundle
    cl = b.target.cluster
    budget = cl.total_memory_gb * cl.state_memory_fraction * 1024**3
    for name, job in _jobs(ctx):
        src = b.spec.sources.get(job.source)
        if src is None:
            continue
        wm = job.watermark
        delay = wm.delay.seconds if wm else 0.0
        forecast = 0.0
        explain = ""
        agg = job.aggregate
        if agg is not None:
            slide = (agg.slide or agg.window).seconds
            held = math.ceil((agg.window.seconds + delay) / slide)
            row = _row_bytes(job)
            forecast = src.key_cardinality * held * row
            explain = (
                f"{src.key_cardinality:,} keys x {held} windows held until the watermark "
                f"passes x {row} B/row"
            )
        elif job.join is not None:
            other = b.spec.sources.get(job.join.source)
            horizon = delay + job.join.within.seconds
            forecast = src.events_per_second * horizon * src.bytes_per_event
            if other:
                horizon_o = job.join.watermark.delay.seconds + job.join.within.seconds
                forecast += other.events_per_second * horizon_o * other.bytes_per_event
            explain = "events of both sides buffered for watermark + join window"
        if forecast > budget:
            ctx.add(
                ("jobs", name, "steps"),
                f"state store forecast ~{forecast / 1024**3:,.1f} GiB ({explain}) exceeds "
                f"{cl.state_memory_fraction:.0%} of the {cl.total_memory_gb:g} GiB of target "
                f"'{b.target_name}'",
                "use a shorter watermark or window, fewer grouping keys, or a bigger cluster "
                "(cluster.workers / memory_gb_per_worker)",
                warning=True,
            )


# --- secrets ----------------------------------------------------------------------------------


def _strings(data: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, (*path, str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _strings(v, (*path, i))
    elif isinstance(data, str):
        yield path, data


@rule
def literal_secrets(ctx: _Ctx) -> None:
    for path, value in _strings(ctx.doc.data):
        if looks_like_secret(value):
            ctx.add(
                path,
                "this value looks like a literal secret (token, account key, SAS "
                "signature or private key); it would be committed and logged",
                "store it in a secret scope or environment variable and write "
                "'{{secrets/<scope>/<key>}}' or '{{env/VAR_NAME}}'",
            )


# --- compaction -------------------------------------------------------------------------------


@rule
def compaction_tables(ctx: _Ctx) -> None:
    for key, table in ctx.bundle.spec.tables.items():
        base: YamlPath = ("tables", key)
        if table.time_partition and table.time_partition not in table.partition_by:
            ctx.add(
                (*base, "time_partition"),
                f"'{table.time_partition}' is not one of the table's partition columns",
                f"add it to `partition_by` or name one of: {', '.join(table.partition_by) or '(none)'}",
            )
        for k, col in enumerate(table.zorder_by):
            if col in table.partition_by:
                ctx.add(
                    (*base, "zorder_by", k),
                    f"'{col}' is a partition column; Z-ORDER BY a partition column does nothing "
                    "(Databricks refuses it)",
                    "Z-order by a data column instead",
                )
        _liquid_clustering(ctx, base, table)
        names = [r.name for r in table.readers]
        for k, name in enumerate(names):
            if name in names[:k]:
                ctx.add(
                    (*base, "readers", k, "name"),
                    f"reader '{name}' is listed twice",
                    "keep one entry per streaming reader",
                )


def _liquid_clustering(ctx: _Ctx, base: YamlPath, table: Table) -> None:
    """cluster_by replaces partitioning and Z-order: Delta refuses either beside it."""
    if not table.cluster_by:
        return
    for key in ("partition_by", "zorder_by"):
        if getattr(table, key):
            ctx.add(
                (*base, key),
                f"`{key}` cannot be combined with `cluster_by` (liquid clustering replaces "
                f"{'partitioning' if key == 'partition_by' else 'Z-ordering'})",
                f"remove `{key}`, or remove `cluster_by` to keep the old layout",
            )
    if len(table.cluster_by) > 4:
        ctx.add(
            (*base, "cluster_by"),
            f"{len(table.cluster_by)} clustering columns; Delta clusters by at most 4",
            "keep the 4 columns queries filter on most",
        )


@rule
def compaction_warehouses(ctx: _Ctx) -> None:
    spec = ctx.bundle.spec
    for name in spec.compaction.warehouse_ids:
        if name not in spec.targets:
            ctx.add(
                ("compaction", "warehouse_ids", name),
                f"unknown target '{name}'",
                f"use one of: {', '.join(spec.targets)}",
            )
    t = ctx.bundle.target
    if (
        t.mode == "databricks"
        and spec.compaction.databricks_engine == "databricks-sql"
        and ctx.bundle.target_name not in spec.compaction.warehouse_ids
    ):
        ctx.add(
            ("compaction",),
            f"target '{ctx.bundle.target_name}' runs on Databricks but names no SQL "
            "warehouse; nightly compaction would fail there",
            f"add `warehouse_ids: {{{ctx.bundle.target_name}: <warehouse id>}}` under "
            "`compaction:`",
            warning=True,
        )


# --- Databricks job settings (streamops.deploy) ---------------------------------------------


def _jobs_api_keys(ctx: _Ctx, tname: str, db: DatabricksSettings) -> None:
    checks = (
        ("job_settings", api.job_settings_problems),
        ("cluster_settings", api.cluster_problems),
        ("libraries", api.library_problems),
    )
    for key, fn in checks:
        value = getattr(db, key)
        if not value:
            continue
        path: YamlPath = ("targets", tname, "databricks", key)
        try:
            found = fn(value)
        except MissingDependencyError as exc:
            # Validating (a DAG parse, CI) must not need the SDK; only deploy does, and refuses.
            ctx.add(
                path,
                f"not checked against the Databricks Jobs API 2.2: {exc.package} is "
                "not installed, and a misspelled key would be dropped silently at deploy",
                f"pip install 'streamops[{exc.extra}]'",
                warning=True,
            )
            continue
        for p in found:
            ctx.add((*path, *p.path), p.message, p.fix)


@rule
def databricks_job_settings(ctx: _Ctx) -> None:
    """Hand-written Jobs API settings: every key must be a Jobs API 2.2 field (never dropped)."""
    for tname, target in ctx.bundle.spec.targets.items():
        if target.databricks is not None:
            _jobs_api_keys(ctx, tname, target.databricks)
    t = ctx.bundle.target
    if t.mode == "databricks" and not (t.cluster.spark_version and t.cluster.node_type_id):
        ctx.add(
            ("targets", ctx.bundle.target_name, "cluster"),
            "spark_version and node_type_id are not set: `streamops deploy` cannot build "
            "the job cluster",
            f"set e.g. `spark_version: {TESTED_RUNTIME}` and `node_type_id: Standard_D8ds_v5`",
            warning=True,
        )
    for name, job in _jobs(ctx):
        if job.continuous and job.trigger.available_now:
            ctx.add(
                ("jobs", name, "continuous"),
                "a continuous job restarts as soon as it stops, but `available_now` stops "
                "after catching up: it would run in a loop",
                "use `continuous: false` for catch-up jobs, or a processing_time trigger",
            )


@rule
def kafka_credentials(ctx: _Ctx) -> None:
    """SASL needs a mechanism, and credentials unless the local broker generates them; for each
    target's login and each source's own (`sources.<s>.security`, on the bundle's target)."""
    logins: list[tuple[YamlPath, KafkaSecurity, str]] = [
        (("targets", tname, "kafka", "security"), t.kafka.security, t.kafka.bootstrap_servers)
        for tname, t in ctx.bundle.spec.targets.items()
    ]
    for sname, src in ctx.bundle.spec.sources.items():
        if src.security is not None:
            bootstrap = src.bootstrap_servers or ctx.bundle.target.kafka.bootstrap_servers
            logins.append((("sources", sname, "security"), src.security, bootstrap))
    for path, sec, bootstrap in logins:
        if not sec.protocol.startswith("SASL_"):
            continue
        if sec.sasl_mechanism is None:
            ctx.add(
                path,
                f"protocol {sec.protocol} needs a SASL mechanism",
                "add `sasl_mechanism: PLAIN` (or SCRAM-SHA-256 / SCRAM-SHA-512)",
            )
        if bootstrap != "embedded" and not (sec.username and sec.password):
            ctx.add(
                path,
                f"protocol {sec.protocol} needs a username and a password",
                "add `username: '{{secrets/<scope>/kafka-user}}'` and "
                "`password: '{{secrets/<scope>/kafka-password}}'`",
            )


@rule
def runtime_spark_version(ctx: _Ctx) -> None:
    """The runtime's Spark must be the one the jobs are tested with (one data path)."""
    for tname, target in ctx.bundle.spec.targets.items():
        runtime = target.cluster.spark_version
        if not runtime:
            continue
        path = ("targets", tname, "cluster", "spark_version")
        spark = spark_version_of(runtime)
        if spark is None:
            ctx.add(
                path,
                f"'{runtime}' is not a Databricks runtime streamops knows the Spark "
                f"version of; the jobs are tested with Apache Spark {TESTED_SPARK}",
                f"use `{TESTED_RUNTIME}` (Databricks Runtime 18 LTS, Spark {TESTED_SPARK}) "
                "or a runtime whose Spark is the same",
                warning=True,
            )
        elif spark != TESTED_SPARK:
            ctx.add(
                path,
                f"'{runtime}' runs Apache Spark {spark}, but the jobs are tested "
                f"with Apache Spark {TESTED_SPARK}: what runs there would not be what "
                "`make test` ran",
                f"use `{TESTED_RUNTIME}` (Databricks Runtime 18 LTS, Spark {TESTED_SPARK})",
            )


@rule
def bronze_query_names(ctx: _Ctx) -> None:
    """Each job also runs `<query_name>_bronze`; no other query may take that name."""
    names = {job.query_name: name for name, job in _jobs(ctx)}
    for name, job in _jobs(ctx):
        other = names.get(job.bronze_query_name)
        if other is not None:
            ctx.add(
                ("jobs", other, "query_name"),
                f"'{job.bronze_query_name}' is the name of job '{name}''s bronze query; two "
                "queries would share its checkpoint",
                "choose a query name that does not end in '_bronze'",
            )


# --- Databricks: governance, secrets on the cluster, tables by name (streamops.deploy) -------


@rule
def databricks_governance(ctx: _Ctx) -> None:
    """Who the job runs as and who may touch it; one level per group."""
    t = ctx.bundle.target
    if t.mode != "databricks" or t.databricks is None:
        return
    db = t.databricks
    base: YamlPath = ("targets", ctx.bundle.target_name, "databricks")
    if db.run_as is None:
        ctx.add(
            base,
            "no `run_as`: the job would run as whoever deploys it, and a dedicated "
            "(SINGLE_USER) cluster would belong to that person",
            "add `run_as: <application id of a service principal>`",
            warning=True,
        )
    seen: set[str] = set()
    for k, p in enumerate(db.permissions):
        if p.group in seen:
            ctx.add(
                (*base, "permissions", k, "group"),
                f"group '{p.group}' is listed twice",
                "keep one entry per group, with the highest level it needs",
            )
        seen.add(p.group)


def cluster_secret_refs(bundle: Bundle) -> list[tuple[YamlPath, SecretRef]]:
    """(YAML path, reference) of every secret the job reads on the cluster: the same list as
    `streamops.shipping.cluster.cluster_secrets` (a test keeps the two equal)."""
    t, tp = bundle.target, ("targets", bundle.target_name)
    sec, mon = t.kafka.security, t.monitoring
    found: list[tuple[YamlPath, SecretRef | None]] = [
        ((*tp, "kafka", "security", "username"), sec.username),
        ((*tp, "kafka", "security", "password"), sec.password),
        ((*tp, "monitoring", "pagerduty_routing_key"), mon.pagerduty_routing_key),
        ((*tp, "monitoring", "webhook_url"), mon.webhook_url),
        (
            (*tp, "databricks", "storage", "client_secret"),
            t.databricks_or_default.storage.client_secret,
        ),
        (
            (*tp, "monitoring", "azure_login", "client_secret"),
            mon.azure_login.client_secret if mon.azure_login else None,
        ),
    ]
    for sname, src in bundle.spec.sources.items():
        if src.security is not None:
            found.append((("sources", sname, "security", "username"), src.security.username))
            found.append((("sources", sname, "security", "password"), src.security.password))
    return [(path, ref) for path, ref in found if ref is not None]


@rule
def cluster_secrets(ctx: _Ctx) -> None:
    """On Databricks, a secret the job reads must be one the cluster can resolve: a Databricks
    secret (mapped into its environment at start), or an environment variable that
    `databricks.cluster_settings.spark_env_vars` sets. The cluster has no Airflow connection and
    no environment of the deploying machine, so anything else fails only when first needed
    (a page that never leaves the driver)."""
    t = ctx.bundle.target
    if t.mode != "databricks":
        return
    env_vars = t.databricks_or_default.cluster_settings.get("spark_env_vars") or {}
    for path, ref in cluster_secret_refs(ctx.bundle):
        if ref.kind == "secrets" or (ref.kind == "env" and ref.a in env_vars):
            continue
        where = "an Airflow connection" if ref.kind == "conn" else "an environment variable"
        ctx.add(
            path,
            f"{ref.text} names {where}, but the job reads it on the Databricks cluster of target "
            f"'{ctx.bundle.target_name}', which has no Airflow connections and no environment "
            "variable unless databricks.cluster_settings.spark_env_vars sets it",
            "store it in a secret scope the job's principal can READ and write "
            "'{{secrets/<scope>/<key>}}' (the cluster resolves it at start)",
        )


@rule
def pager_on_databricks(ctx: _Ctx) -> None:
    """A Databricks target pages a human: `log` would append every page to a file on a driver's
    disk that nobody reads and that is gone with the cluster."""
    t = ctx.bundle.target
    if t.mode != "databricks" or t.monitoring.paging in ("pagerduty", "webhook"):
        return
    ctx.add(
        ("targets", ctx.bundle.target_name, "monitoring", "paging"),
        f"target '{ctx.bundle.target_name}' runs on Databricks but pages to '"
        f"{t.monitoring.paging}': every page would be a line in a file on the driver's disk",
        "set `paging: pagerduty` with `pagerduty_routing_key: "
        "'{{secrets/<scope>/pagerduty-routing-key}}'`, or `paging: webhook` with "
        "`webhook_url: '{{secrets/<scope>/<key>}}'` (a Teams/Slack incoming webhook)",
    )


@rule
def metrics_login(ctx: _Ctx) -> None:
    """A Databricks target's exporter needs an Azure login the cluster can use: user code there
    gets no managed identity, so DefaultAzureCredential would fail inside the exporter thread."""
    t = ctx.bundle.target
    if t.mode != "databricks" or t.monitoring.metrics != "azure-monitor" or t.metrics_login:
        return
    ctx.add(
        ("targets", ctx.bundle.target_name, "monitoring"),
        f"metrics go to Azure Monitor but target '{ctx.bundle.target_name}' names no Azure login "
        "for the exporter (the job cluster's user code has no managed identity, and "
        "databricks.storage is not a service principal to reuse)",
        "add `azure_login: {via: service_principal, tenant_id: <tenant>, client_id: <app id>, "
        "client_secret: '{{secrets/<scope>/<key>}}'}` or `azure_login: {via: "
        "service_credential, name: <Unity Catalog service credential>}` under monitoring",
    )


@rule
def tables_by_name(ctx: _Ctx) -> None:
    """A Databricks target addresses every table by its Unity Catalog name (one table, not a
    path beside a name); the job's bronze and quarantine tables live in the sink's schema."""
    if ctx.bundle.target.mode != "databricks":
        return
    for key, table in ctx.bundle.spec.tables.items():
        if table.name is None:
            ctx.add(
                ("tables", key),
                f"no Unity Catalog `name`: on target "
                f"'{ctx.bundle.target_name}' tables are addressed by name",
                f"add `name: <catalog>.<schema>.{key}`",
            )
        elif table.name.count(".") != 2 or not all(table.name.split(".")):
            ctx.add(
                ("tables", key, "name"),
                f"'{table.name}' is not a three-part Unity Catalog name",
                f"write `<catalog>.<schema>.<table>`, e.g. main.streams.{key}",
            )


# --- Databricks: what a deploy ships, and the cluster it runs on (streamops.shipping) -------

# Standard (shared) access mode runs user code through Spark Connect: no sparkContext, no JVM
# gateway, no driver-side Python state shared with foreachBatch.
STANDARD_ACCESS_MODES = ("USER_ISOLATION", "DATA_SECURITY_MODE_STANDARD")


@rule
def artifact_location(ctx: _Ctx) -> None:
    """A Databricks target names where deploy uploads the job's code: a Unity Catalog volume
    (files there do not expire); a workspace folder works, with a warning."""
    t = ctx.bundle.target
    if t.mode != "databricks":
        return
    base: YamlPath = ("targets", ctx.bundle.target_name, "databricks")
    root = t.databricks_or_default.artifact_root
    volume = f"/Volumes/<catalog>/<schema>/<volume>/{ctx.bundle.spec.project}"
    if root is None:
        ctx.add(
            base if t.databricks is not None else base[:2],
            f"no `artifact_root`: target '{ctx.bundle.target_name}' does not say where deploy "
            "uploads the wheel, jobs/stream.py, jobs/compact.py and bundle.yml that its jobs run",
            f"add `artifact_root: {volume}` under databricks (a Unity Catalog volume the job's "
            "service principal can READ; create it once with CREATE VOLUME)",
        )
    elif root.startswith("/Workspace/"):
        ctx.add(
            (*base, "artifact_root"),
            f"'{root}' is a workspace folder: Databricks jobs lose access to workspace files "
            "after 30 days, and a streaming run (or its restart) lives longer",
            f"use a Unity Catalog volume: `artifact_root: {volume}`",
            warning=True,
        )


@rule
def cluster_access_mode(ctx: _Ctx) -> None:
    """The job cluster's access mode must let the runner use the Spark driver as it does."""
    for tname, target in ctx.bundle.spec.targets.items():
        db = target.databricks
        if db is None or db.data_security_mode not in STANDARD_ACCESS_MODES:
            continue
        dedicated = (
            "DATA_SECURITY_MODE_DEDICATED"
            if db.data_security_mode.startswith("DATA_SECURITY_MODE_")
            else "SINGLE_USER"
        )
        ctx.add(
            ("targets", tname, "databricks", "data_security_mode"),
            f"'{db.data_security_mode}' is standard (shared) access mode, which forbids what the "
            "streaming runner uses: spark.sparkContext (its parallelism), the JVM gateway "
            "(the checkpoint files' Hadoop filesystem) and driver-side state kept across "
            "foreachBatch calls (exactly-once Delta writes)",
            f"use `data_security_mode: {dedicated}` (dedicated to `run_as`)",
        )
