"""Why an event cannot be used: one reason per event, the same in the bronze and gold queries.

The reason is null for a good event. Checks run in order and the first that fails names the
event's problem, so an operator reading the quarantine table sees the root cause, not a symptom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.bundle.models import Job

if TYPE_CHECKING:
    from pyspark.sql import Column

# Event times before this are not plausible for any streaming source (epoch-zero bugs).
EARLIEST_EVENT_TIME = "2000-01-01 00:00:00"


def reason_column(job: Job, parsed: Column) -> Column:
    """The quarantine reason of each Kafka row (null when the event is good).

    `parsed` is from_json(value) with the job's schema; the raw columns key/value/timestamp of
    the Kafka source must be in scope.
    """
    from pyspark.sql import functions as F

    value = F.col("value")
    text = value.cast("string")
    root = F.get_json_object(text, "$")
    checks: list[tuple[Column, Column]] = [
        (value.isNull(), F.lit("null_value")),
        (F.length(value) > job.max_event_bytes, F.lit("oversize_value")),
    ]
    if job.key_required:
        checks.append((F.col("key").isNull(), F.lit("null_key")))
    checks += [
        (F.coalesce(F.length(F.col("key")), F.lit(0)) > job.max_key_bytes, F.lit("oversize_key")),
        (~F.expr("is_valid_utf8(cast(value as string))"), F.lit("invalid_encoding")),
        (root.isNull(), F.lit("invalid_json")),
        (~F.trim(root).startswith("{"), F.lit("not_a_json_object")),
    ]
    for name, f in job.schema_.items():
        raw = F.get_json_object(text, f"$.{name}")
        if f.required:
            checks.append((raw.isNull(), F.lit(f"missing_field:{name}")))
        kind = "unparseable_event_time" if name == job.event_time else f"wrong_type:{name}"
        checks.append((raw.isNotNull() & parsed[name].isNull(), F.lit(kind)))
    et = parsed[job.event_time]
    skew = int(job.max_clock_skew.seconds)
    checks += [
        (et < F.lit(EARLIEST_EVENT_TIME).cast("timestamp"), F.lit("event_time_out_of_range")),
        (
            et > F.col("timestamp") + F.expr(f"INTERVAL {skew} SECONDS"),
            F.lit("event_time_in_future"),
        ),
    ]
    if job.event_type is not None:
        field, values = job.event_type.field, job.event_type.values
        checks.append((~parsed[field].isin(values), F.lit(f"unknown_event_type:{field}")))
    expr = None
    for cond, reason in checks:
        # A null condition (e.g. a comparison with a null time) is not a failure of that check.
        c = F.coalesce(cond, F.lit(False))
        expr = F.when(c, reason) if expr is None else expr.when(c, reason)
    assert expr is not None
    return expr.otherwise(F.lit(None).cast("string"))
