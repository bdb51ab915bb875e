"""Why an event cannot be used: one reason per event, decided once, in the bronze query.

The reason is null for a good event. Checks run in order and the first that fails names the
event's problem, so an operator reading the quarantine table sees the root cause, not a symptom.

The value is parsed twice, not once per field: `from_json` gives the typed values, and
`try_parse_json` (a Variant) gives the JSON's own shape (what type each field really holds,
whether the text is one JSON value, duplicate keys). Wrapping the text in `[...]` makes the
Variant parser see anything after the first value: `{..} trailing` and `{..}{..}` fail to parse,
`{..},{..}` parses as an array of two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamops.bundle.models import Job

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import StructType

# Name of the observed metrics in each bronze progress event (input vs malformed rows per batch).
QUALITY = "streamops_quality"
# Event times before this are not plausible for any streaming source (epoch-zero bugs).
EARLIEST_EVENT_TIME = "2000-01-01 00:00:00"
# One JSON string literal; possessive quantifiers keep Java's regex from recursing per char.
_STRING_LITERAL = r'"(?:[^"\\]++|\\.)*+"'


def _closers(c: Column) -> Column:
    """How many `]` a JSON text holds outside its string literals (escapes cannot fake one)."""
    from pyspark.sql import functions as F

    bare = F.regexp_replace(c, F.lit(_STRING_LITERAL), F.lit('""'))
    return F.length(bare) - F.length(F.replace(bare, F.lit("]"), F.lit("")))


def _read_to_end(wrapped: Column, first: Column) -> Column:
    """True when a parser that returned `first` (re-serialised) for `[...]` read it to its end.

    Both Spark JSON parsers stop after the first value without looking further, so `1],[2`
    wrapped reads as `[1]`. A re-serialised value keeps every structural `]` of what was read,
    and the wrapper's own closing `]` is read last: the counts are equal only when nothing was
    left over. Only a text that holds a `]` can close the wrapper early, so most events (flat
    objects) never serialise `first`.
    """
    from pyspark.sql import functions as F

    inner = wrapped.substr(F.lit(2), F.length(wrapped) - 2)
    return (F.instr(inner, "]") == 0) | (_closers(wrapped) == _closers(first))


# Spark's JSON reader is lenient by default (single quotes, NaN); for telling duplicate keys
# apart it must be as strict as the Variant parser in everything else.
_STRICT_JSON = {"allowSingleQuotes": "false", "allowNonNumericNumbers": "false"}


def _only_duplicate_keys(wrapped: Column) -> Column:
    """For a text the Variant parser refused: True when Jackson, which keeps the last of
    duplicate keys, reads it strictly as exactly one JSON value."""
    from pyspark.sql import functions as F

    values = F.from_json(wrapped, "array<string>", _STRICT_JSON)
    one = F.concat(F.lit("["), F.element_at(values, 1), F.lit("]"))
    return (F.size(values) == 1) & one.isNotNull() & _read_to_end(wrapped, one)


# Helper columns of `with_reason`: the parsed Variant of `[value]` and its first element.
_DOC, _ROOT = "_streamops_doc", "_streamops_root"


def with_reason(raw: DataFrame, job: Job, schema: StructType) -> DataFrame:
    """`raw` (Kafka rows) with `e` (the event parsed with `schema`) and `reason` added.

    Each parse gets a projection of its own: a column used by many checks is computed once,
    where the same expression inside the checks (each a branch of one CASE WHEN) would be
    evaluated again by every check that reaches it.
    """
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    wrapped = F.concat(F.lit("["), text, F.lit("]"))
    staged = raw.withColumn("e", F.from_json(text, schema, {"mode": "PERMISSIVE"})).withColumn(
        _DOC, F.call_function("try_parse_json", wrapped)
    )
    staged = staged.withColumn(_ROOT, F.call_function("variant_get", F.col(_DOC), F.lit("$[0]")))
    flagged = staged.withColumn("reason", reason_column(job, F.col("e"), F.col(_DOC), F.col(_ROOT)))
    return flagged.drop(_DOC, _ROOT)


def reason_column(job: Job, parsed: Column, doc: Column, root: Column) -> Column:
    """The quarantine reason of each Kafka row (null when the event is good).

    `parsed` is from_json(value) with the job's schema, `doc` try_parse_json("[" + value + "]")
    and `root` its first element; the raw columns key/value/timestamp of the Kafka source must
    be in scope. "Now" is the micro-batch's time (`current_timestamp()` is fixed per batch and
    recorded in the offset log, so a replayed batch decides the same way), never the producer's
    timestamp, which a producer with a wrong clock sets as wrongly as the event time.
    The checks run in order and the first that fails names the reason.
    """
    checks = _record_checks(job, doc, root)
    for name, f in job.schema_.items():
        checks += _field_checks(job, name, f, parsed, root)
    checks += _time_checks(job, parsed)
    return _first_failing(checks)


Check = tuple["Column", "Column"]


def _record_checks(job: Job, doc: Column, root: Column) -> list[Check]:
    """Checks of the record as a whole: null, size, key, encoding, one JSON object."""
    from pyspark.sql import functions as F

    value = F.col("value")
    text = value.cast("string")
    wrapped = F.concat(F.lit("["), text, F.lit("]"))
    second = F.call_function("variant_get", doc, F.lit("$[1]"))
    # The text is one JSON value once the checks above passed: an object starts with "{".
    opens_object = F.substring(F.ltrim(text, F.lit(" \t\n\r")), 1, 1) == F.lit("{")
    checks: list[Check] = [
        (value.isNull(), F.lit("null_value")),
        (F.length(value) > job.max_event_bytes, F.lit("oversize_value")),
    ]
    if job.key_required:
        checks.append((F.col("key").isNull(), F.lit("null_key")))
    checks += [
        (F.coalesce(F.length(F.col("key")), F.lit(0)) > job.max_key_bytes, F.lit("oversize_key")),
        (~F.expr("is_valid_utf8(cast(value as string))"), F.lit("invalid_encoding")),
        # The Variant parser refuses duplicate keys where Jackson keeps the last one: a second
        # parse, only for rows the first refused, tells that apart from broken JSON.
        (doc.isNull() & _only_duplicate_keys(wrapped), F.lit("duplicate_key")),
        (
            doc.isNull()
            | root.isNull()
            | second.isNotNull()
            | ~_read_to_end(wrapped, F.to_json(doc)),
            F.lit("invalid_json"),
        ),
        (~opens_object, F.lit("not_a_json_object")),
    ]
    return checks


def _holds(v: Column, kind: str) -> Column:
    from pyspark.sql import functions as F

    # A typed cast of the Variant fails fast (null) unless it holds that kind of value;
    # schema_of_variant would build a type string for every field of every event.
    return F.call_function("try_variant_get", v, F.lit("$"), F.lit(kind)).isNotNull()


def _field_checks(job: Job, name: str, f: Any, parsed: Column, root: Column) -> list[Check]:
    """Checks of one schema field: present when required, of its type, finite."""
    from pyspark.sql import functions as F

    checks: list[Check] = []
    raw = F.call_function("variant_get", root, F.lit(f"$.{name}"))
    # JSON null counts as missing.
    present = raw.isNotNull() & ~F.call_function("is_variant_null", raw)
    if f.required:
        checks.append((~present, F.lit(f"missing_field:{name}")))
    kind = "unparseable_event_time" if name == job.event_time else f"wrong_type:{name}"
    wrong = present & parsed[name].isNull()
    if f.type == "string":  # a nested document kept as its text: a bogus group in gold
        wrong = wrong | (
            present & (_holds(raw, "map<string,variant>") | _holds(raw, "array<variant>"))
        )
    checks.append((wrong, F.lit(kind)))
    if f.type in ("double", "float"):
        # NaN, "Infinity" and overflow (1e400) parse as doubles; one of them poisons every
        # sum and average of its window.
        x = parsed[name]
        finite = ~F.isnan(x) & (F.abs(x) != F.lit(float("inf")))
        checks.append((present & ~finite, F.lit(f"non_finite_number:{name}")))
    return checks


def _time_checks(job: Job, parsed: Column) -> list[Check]:
    """Event time within range and not ahead of the batch's time; a known event type."""
    from pyspark.sql import functions as F

    et = parsed[job.event_time]
    skew = int(job.max_clock_skew.seconds)
    checks: list[Check] = [
        (et < F.lit(EARLIEST_EVENT_TIME).cast("timestamp"), F.lit("event_time_out_of_range")),
        (
            et > F.current_timestamp() + F.expr(f"INTERVAL {skew} SECONDS"),
            F.lit("event_time_in_future"),
        ),
    ]
    if job.event_type is not None:
        field, values = job.event_type.field, job.event_type.values
        checks.append((~parsed[field].isin(values), F.lit(f"unknown_event_type:{field}")))
    return checks


def _first_failing(checks: list[Check]) -> Column:
    from pyspark.sql import functions as F

    expr = None
    for cond, reason in checks:
        # A null condition (e.g. a comparison with a null time) is not a failure of that check.
        c = F.coalesce(cond, F.lit(False))
        expr = F.when(c, reason) if expr is None else expr.when(c, reason)
    assert expr is not None
    return expr.otherwise(F.lit(None).cast("string"))


def malformed(fields: dict[str, Any], parsed: Column) -> Column:
    """True for a parsed struct that is null or misses a required field (a join's other side,
    read without a quarantine of its own, drops such events)."""
    cond = parsed.isNull()
    for name, f in fields.items():
        if f.required:
            cond = cond | parsed[name].isNull()
    return cond
