"""A hostile producer: 45 kinds of records that break consumers in production, written between
good events at known partitions and offsets, through the real broker (SASL) and the real job.

Reconciled exactly afterwards: every record in exactly one of bronze and quarantine, each
hostile one with its expected reason (or accepted, for the ones a tolerant reader should take),
and gold holding exactly the accepted events: same counts and sums per window and group, none
dropped as late. Among them are events from the future (2099, 2100, a day ahead) produced with
matching Kafka timestamps: had one reached the watermark, every on-time event after it would
have been dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streamops.bundle.durations import parse_duration
from streamops.localstack import LocalStack
from streamops.monitoring.metrics import WATERMARK_LEAD, batch_points
from streamops.runner.job import run_job
from tests.integration.helpers import delta_rows, hour_of, kafka_conf, local_bundle

JOB = "claims_hourly"
NOW = datetime.now(UTC)
# On-time events: all within 20 minutes, well inside the 30-minute watermark delay, so none of
# them is late whatever the batch boundaries.
BASE = (NOW - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
pytestmark = pytest.mark.slow


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def good(i: int, **changes: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "claim_id": f"CLM-{i}",
        "policy_id": f"POL-{i % 7}",
        "claim_type": ("auto", "property", "health")[i % 3],
        "region": ("north", "south")[i % 2],
        "claim_amount": round(10 + i * 1.25, 2),
        "event_time": _iso(BASE + timedelta(seconds=7 * (i % 120))),
    }
    for k, v in changes.items():
        if v is _DROP:
            ev.pop(k)
        else:
            ev[k] = v
    return ev


_DROP = object()


def js(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev).encode()


def raw(i: int, **changes: str) -> bytes:
    """A good event with some values replaced by raw JSON text (what json.dumps cannot write)."""
    ev = good(i)
    parts = [f'"{k}": {changes.get(k, json.dumps(v))}' for k, v in ev.items()]
    return ("{" + ", ".join(parts) + "}").encode()


@dataclass(frozen=True)
class Hostile:
    kind: str
    value: bytes | None
    reason: str | None  # None: accepted into bronze
    key: bytes | None = b"k"
    timestamp_ms: int | None = None  # the producer's own timestamp (default: now)
    event: dict[str, Any] | None = None  # the event bronze must hold, when accepted


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


Y2099 = datetime(2099, 1, 1, tzinfo=UTC)
Y2100 = datetime(2100, 6, 1, tzinfo=UTC)
DAY_AHEAD = NOW + timedelta(days=1)
NESTED = "[" * 2000 + "]" * 2000


def hostile() -> list[Hostile]:
    h = [
        Hostile("empty value", b"", "invalid_json"),
        Hostile("null value (tombstone)", None, "null_value"),
        Hostile("null key", js(good(900)), "null_key", key=None),
        Hostile("oversize key", js(good(901)), "oversize_key", key=b"K" * 300),
        Hostile("oversize value", js(good(902, policy_id="P" * 9000)), "oversize_value"),
        Hostile("invalid UTF-8", b'\xff\xfe{"claim_id": "x"}', "invalid_encoding"),
        Hostile("UTF-8 surrogate", b'{"claim_id": "\xed\xa0\x80"}', "invalid_encoding"),
        Hostile("truncated JSON", js(good(903))[:40], "invalid_json"),
        Hostile("trailing text", js(good(904)) + b" trailing", "invalid_json"),
        Hostile("two objects back to back", js(good(905)) + js(good(906)), "invalid_json"),
        Hostile("two objects with a comma", js(good(907)) + b"," + js(good(908)), "invalid_json"),
        Hostile("closing the wrapper", js(good(909)) + b'],[{"a": 1}', "invalid_json"),
        Hostile("escaped bracket then closing", b'{"a": "\\u005d"}],[1', "invalid_json"),
        Hostile("whitespace only", b"   \n\t ", "invalid_json"),
        Hostile("NaN literal", raw(910, claim_amount="NaN"), "invalid_json"),
        Hostile("Infinity literal", raw(911, claim_amount="Infinity"), "invalid_json"),
        Hostile("single quotes", b"{'claim_id': 'x'}", "invalid_json"),
        Hostile("unquoted keys", b'{claim_id: "x"}', "invalid_json"),
        Hostile("comment", b'/* hi */ {"claim_id": "x"}', "invalid_json"),
        Hostile("raw newline in a string", raw(912, region='"nor\nth"'), "invalid_json"),
        Hostile("nesting 2000 deep", raw(913, policy_id=NESTED), "invalid_json"),
        Hostile("byte order mark", b"\xef\xbb\xbf" + js(good(914)), "invalid_json"),
        Hostile("JSON array", b'[{"claim_id": "x"}]', "not_a_json_object"),
        Hostile("JSON string", b'"claim"', "not_a_json_object"),
        Hostile("JSON number", b"42", "not_a_json_object"),
        Hostile("JSON null", b"null", "not_a_json_object"),
        Hostile("JSON true", b"true", "not_a_json_object"),
        Hostile("duplicate key", raw(915, region='"north", "region": "south"'), "duplicate_key"),
        Hostile("nested duplicate key", raw(916, policy_id='{"a": 1, "a": 2}'), "duplicate_key"),
        Hostile("missing field", js(good(917, region=_DROP)), "missing_field:region"),
        Hostile("null field", js(good(918, region=None)), "missing_field:region"),
        Hostile("number as text", js(good(919, claim_amount="12.5")), "wrong_type:claim_amount"),
        Hostile("boolean amount", js(good(920, claim_amount=True)), "wrong_type:claim_amount"),
        Hostile("object amount", js(good(921, claim_amount={"v": 1})), "wrong_type:claim_amount"),
        Hostile("array amount", js(good(922, claim_amount=[1, 2])), "wrong_type:claim_amount"),
        Hostile("array in a string field", js(good(923, region=["north"])), "wrong_type:region"),
        Hostile("object in a string field", js(good(924, region={"n": 1})), "wrong_type:region"),
        Hostile('"NaN" amount', js(good(925, claim_amount="NaN")), "non_finite_number:claim_amount"),
        Hostile('"Infinity" amount', js(good(926, claim_amount="Infinity")),
                "non_finite_number:claim_amount"),
        Hostile('"-Infinity" amount', js(good(927, claim_amount="-Infinity")),
                "non_finite_number:claim_amount"),
        Hostile("overflow 1e400", raw(928, claim_amount="1e400"), "non_finite_number:claim_amount"),
        Hostile("overflow -1e400", raw(929, claim_amount="-1e400"), "non_finite_number:claim_amount"),
        Hostile("unparseable time", js(good(930, event_time="yesterday")), "unparseable_event_time"),
        Hostile("empty time", js(good(931, event_time="")), "unparseable_event_time"),
        Hostile("object time", js(good(932, event_time={"t": 1})), "unparseable_event_time"),
        Hostile("epoch zero", js(good(933, event_time="1970-01-01T00:00:00Z")),
                "event_time_out_of_range"),
        Hostile("year 2099, producer agrees", js(good(934, event_time=_iso(Y2099))),
                "event_time_in_future", timestamp_ms=_ms(Y2099)),
        Hostile("year 2100, producer agrees", js(good(935, event_time=_iso(Y2100))),
                "event_time_in_future", timestamp_ms=_ms(Y2100)),
        Hostile("a day ahead, producer agrees", js(good(936, event_time=_iso(DAY_AHEAD))),
                "event_time_in_future", timestamp_ms=_ms(DAY_AHEAD)),
    ]  # fmt: skip
    # What a tolerant reader takes as it is (each is a good event in every other respect).
    accepted = [
        ("unknown extra field", good(940), js({**good(940), "channel": "mobile"})),
        ("numeric id for a string field", good(941, claim_id="12345"), raw(941, claim_id="12345")),
        ("unicode escape", good(942), raw(942, region='"\\u006eorth"')),
        ("escaped NUL in a string", good(943, policy_id="a\u0000b"), js(good(943, policy_id="a\u0000b"))),
        ("leading and trailing whitespace", good(944), b"\n  " + js(good(944)) + b"  \n"),
        ("empty key", good(945), js(good(945))),
        ("bracket inside a string", good(946, policy_id="P]1"), js(good(946, policy_id="P]1"))),
    ]  # fmt: skip
    for kind, event, value in accepted:
        key = b"" if kind == "empty key" else b"k"
        h.append(Hostile(kind, value, None, key=key, event=event))
    return h


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_hostile_records_are_reconciled_exactly(
    tmp_path: Path, spark: Any, local_stack: LocalStack, new_topic: Callable[..., str]
) -> None:
    kinds = hostile()
    assert len({h.kind for h in kinds if h.reason}) >= 40
    # Kafka 4 refuses producer timestamps more than an hour ahead by default; a topic that lets
    # them in is the case where the producer's clock cannot be trusted.
    topic = new_topic(partitions=2, config={"message.timestamp.after.max.ms": str(2**63 - 1)})
    bundle = local_bundle(
        tmp_path, topics={"claims": topic},
        jobs={JOB: {"max_event_bytes": 8000, "max_key_bytes": 256, "max_offsets_per_trigger": 30,
                    "max_clock_skew": parse_duration("5 minutes")}},
    )  # fmt: skip
    p = Producer({**kafka_conf(bundle), "log_level": 3})
    where: dict[tuple[int, int], Any] = {}

    def produce(
        part: int, key: bytes | None, value: bytes | None, what: Any, ts: int | None
    ) -> None:
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            where[(msg.partition(), msg.offset())] = what

        kw: dict[str, Any] = {"timestamp": ts} if ts is not None else {}
        p.produce(topic, key=key, value=value, partition=part, on_delivery=done, **kw)
        p.flush(30)  # one at a time: offsets in the order written

    goods: list[dict[str, Any]] = []
    for i, h in enumerate(kinds):
        part = i % 2
        ev = good(i)
        goods.append(ev)
        produce(part, b"k", js(ev), ev, None)
        produce(part, h.key, h.value, h, h.timestamp_ms)
    for i in range(len(kinds), len(kinds) + 60):  # on-time events after all of them
        ev = good(i)
        goods.append(ev)
        produce(i % 2, b"k", js(ev), ev, None)

    run = run_job(bundle, JOB, spark, available_now=True, timeout_s=600)

    job = bundle.job(JOB)
    quarantine = {(r["kafka_partition"], r["kafka_offset"]): r
                  for r in delta_rows(bundle.quarantine_location(job))}  # fmt: skip
    bronze = {(r["kafka_partition"], r["kafka_offset"]): r
              for r in delta_rows(bundle.bronze_location(job))}  # fmt: skip
    assert not set(quarantine) & set(bronze)
    assert set(quarantine) | set(bronze) == set(where), "a record is in neither table"
    wrong = {}
    accepted: list[dict[str, Any]] = []
    for coord, what in where.items():
        if isinstance(what, Hostile) and what.reason is not None:
            got = quarantine.get(coord, {}).get("reason", "<in bronze>")
            if got != what.reason:
                wrong[what.kind] = got
            else:
                assert quarantine[coord]["value"] == what.value  # raw bytes, as they came
        else:
            event = what.event if isinstance(what, Hostile) else what
            if coord not in bronze:
                wrong[getattr(what, "kind", "good event")] = quarantine[coord]["reason"]
                continue
            row = bronze[coord]
            assert {k: row[k] for k in ("claim_id", "policy_id", "region")} == {
                k: event[k] for k in ("claim_id", "policy_id", "region")
            }
            accepted.append(event)
    assert wrong == {}, f"kind -> reason it got instead: {wrong}"
    assert run.quarantined_rows == len(quarantine) == sum(1 for h in kinds if h.reason)

    # Gold: exactly the accepted events, none dropped as late (no watermark from the future).
    assert run.dropped_by_watermark == 0
    want: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for e in accepted:
        want[(hour_of(_parse_time(e["event_time"])), e["claim_type"], e["region"])].append(
            e["claim_amount"]
        )
    gold = {(r["window_start"], r["claim_type"], r["region"]): r
            for r in delta_rows(bundle.table_location(job.sink))}  # fmt: skip
    assert set(gold) == set(want)
    for k, amounts in want.items():
        assert gold[k]["claims"] == len(amounts), k
        assert gold[k]["total_amount"] == pytest.approx(sum(amounts), rel=1e-12), k

    # The watermark never ran ahead of the clock, and each gold batch says by how much it lagged.
    leads = [pt["value"] for b in run.batches
             for pt in batch_points(b, job=JOB, target="local", trigger_seconds=None)
             if pt["name"] == WATERMARK_LEAD]  # fmt: skip
    assert leads and max(leads) < 0
