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

from typing import TYPE_CHECKING

from streamops.bundle.models import Job

if TYPE_CHECKING:
    from pyspark.sql import Column

# Event times before this are not plausible for any streaming source (epoch-zero bugs).
EARLIEST_EVENT_TIME = "2000-01-01 00:00:00"
# Variant type names (schema_of_variant) that a field declared as string must not hold: a
# nested document stored as its JSON text would become a bogus group in gold.
_NESTED = ("OBJECT", "ARRAY")
# One JSON string literal; possessive quantifiers keep Java's regex from recursing per char.
_STRING_LITERAL = r'"(?:[^"\\]++|\\.)*+"'


def _closers(c: Column) -> Column:
    """How many `]` a JSON text holds outside its string literals (escapes cannot fake one)."""
    from pyspark.sql import functions as F

    bare = F.regexp_replace(c, F.lit(_STRING_LITERAL), F.lit('""'))
    return F.length(bare) - F.length(F.replace(bare, F.lit("]"), F.lit("")))


def _read_to_end(wrapped: Column, first: Column) -> Column:
    """True when a parser that returned `first` for `[...]` read it to its end.

    Both Spark JSON parsers stop after the first value without looking further, so `1],[2`
    wrapped reads as `[1]`. A re-serialised value keeps every structural `]` of what was read,
    and the wrapper's own closing `]` is read last: the counts are equal only when nothing was
    left over. Only a text that holds a `]` can close the wrapper early, so most events (flat
    objects) skip the count.
    """
    from pyspark.sql import functions as F

    return first.isNotNull() & (
        (F.instr(wrapped.substr(F.lit(2), F.length(wrapped) - 2), "]") == 0)
        | (_closers(wrapped) == _closers(first))
    )


# Spark's JSON reader is lenient by default (single quotes, NaN); for telling duplicate keys
# apart it must be as strict as the Variant parser in everything else.
_STRICT_JSON = {"allowSingleQuotes": "false", "allowNonNumericNumbers": "false"}


def _only_duplicate_keys(wrapped: Column) -> Column:
    """For a text the Variant parser refused: True when Jackson, which keeps the last of
    duplicate keys, reads it strictly as exactly one JSON value."""
    from pyspark.sql import functions as F

    values = F.from_json(wrapped, "array<string>", _STRICT_JSON)
    one = F.concat(F.lit("["), F.element_at(values, 1), F.lit("]"))
    return (F.size(values) == 1) & _read_to_end(wrapped, one)


def reason_column(job: Job, parsed: Column) -> Column:
    """The quarantine reason of each Kafka row (null when the event is good).

    `parsed` is from_json(value) with the job's schema; the raw columns key/value/timestamp of
    the Kafka source must be in scope. "Now" is the micro-batch's time (`current_timestamp()` is
    fixed per batch and recorded in the offset log, so a replayed batch decides the same way),
    never the producer's timestamp, which a producer with a wrong clock sets as wrongly as the
    event time.
    """
    from pyspark.sql import functions as F

    value = F.col("value")
    text = value.cast("string")
    wrapped = F.concat(F.lit("["), text, F.lit("]"))
    doc = F.call_function("try_parse_json", wrapped)
    root = F.call_function("variant_get", doc, F.lit("$[0]"))
    second = F.call_function("variant_get", doc, F.lit("$[1]"))

    def shape(v: Column) -> Column:
        return F.call_function("schema_of_variant", v)

    checks: list[tuple[Column, Column]] = [
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
        (~shape(root).startswith("OBJECT"), F.lit("not_a_json_object")),
    ]
    for name, f in job.schema_.items():
        raw = F.call_function("variant_get", root, F.lit(f"$.{name}"))
        raw_type = shape(raw)
        present = raw.isNotNull() & (raw_type != F.lit("VOID"))  # JSON null counts as missing
        if f.required:
            checks.append((~present, F.lit(f"missing_field:{name}")))
        kind = "unparseable_event_time" if name == job.event_time else f"wrong_type:{name}"
        wrong = present & parsed[name].isNull()
        if f.type == "string":
            wrong = wrong | (present & F.split_part(raw_type, F.lit("<"), F.lit(1)).isin(*_NESTED))
        checks.append((wrong, F.lit(kind)))
        if f.type in ("double", "float"):
            # NaN, "Infinity" and overflow (1e400) parse as doubles; one of them poisons every
            # sum and average of its window.
            x = parsed[name]
            finite = ~F.isnan(x) & (F.abs(x) != F.lit(float("inf")))
            checks.append((present & ~finite, F.lit(f"non_finite_number:{name}")))
    et = parsed[job.event_time]
    skew = int(job.max_clock_skew.seconds)
    checks += [
        (et < F.lit(EARLIEST_EVENT_TIME).cast("timestamp"), F.lit("event_time_out_of_range")),
        (
            et > F.current_timestamp() + F.expr(f"INTERVAL {skew} SECONDS"),
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
