"""Realistic sample events for a job's schema: on time, late, too late and malformed.

Events go round-robin over partitions in event-time order, so every micro-batch (which takes an
equal share of each partition) holds a contiguous slice of time. That makes the watermark's
effect exact and predictable: only the events built to be too late are dropped.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from streamops.bundle.models import Job

Kind = Literal["on_time", "late", "too_late", "malformed"]

_VOCAB: dict[str, list[str]] = {
    "claim_type": ["auto", "property", "health", "liability", "travel"],
    "region": ["north", "south", "east", "west", "central"],
    "site": ["plant-lyon", "plant-porto", "plant-brno"],
    "merchant_category": ["grocery", "fuel", "travel", "electronics", "restaurants", "utilities"],
    "currency": ["EUR", "USD", "GBP"],
}
_MALFORMED_KINDS = ("invalid_json", "missing_field", "wrong_type", "bad_timestamp", "not_an_object")


@dataclass(frozen=True)
class SampleEvent:
    key: bytes
    value: bytes
    partition: int
    kind: Kind
    event: dict[str, Any] | None  # the typed event for valid ones (what the job should see)


@dataclass
class Sample:
    """Events to produce, and what a correct job must make of them."""

    events: list[SampleEvent] = field(default_factory=list)

    def count(self, *kinds: Kind) -> int:
        return sum(e.kind in kinds for e in self.events)

    def valid_events(self) -> list[dict[str, Any]]:
        """Events that must reach the aggregate (on time or late within the watermark)."""
        return [e.event for e in self.events if e.kind in ("on_time", "late") and e.event]


def _value(name: str, ftype: str, rng: random.Random, i: int) -> Any:
    if name in _VOCAB:
        return rng.choice(_VOCAB[name])
    if name == "device_id":
        return f"dev-{rng.randrange(40):03d}"
    if name.endswith("_id"):
        return f"{name[:-3][:3].upper()}-{i:07d}"
    if ftype in ("double", "float"):
        if "temperature" in name:
            return round(rng.gauss(62.0, 6.0), 2)
        if "vibration" in name:
            return round(abs(rng.gauss(2.5, 1.0)), 3)
        return round(rng.lognormvariate(7.2, 0.9), 2)
    if ftype.startswith("decimal"):
        return Decimal(str(round(rng.lognormvariate(3.5, 1.1), 2))).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
    if ftype in ("int", "long"):
        return rng.randrange(1000)
    if ftype == "boolean":
        return rng.random() < 0.5
    return f"{name}-{rng.randrange(100)}"


def _json(event: dict[str, Any]) -> bytes:
    def enc(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if isinstance(v, Decimal):
            return float(v)  # JSON number; Spark parses it into the declared decimal exactly
        return v

    return json.dumps({k: enc(v) for k, v in event.items()}).encode()


def _malformed(job: Job, good: dict[str, Any], rng: random.Random, n: int) -> bytes:
    kind = _MALFORMED_KINDS[n % len(_MALFORMED_KINDS)]
    required = [k for k, f in job.schema_.items() if f.required]
    if kind == "invalid_json":
        return _json(good)[: rng.randrange(5, 20)]
    if kind == "missing_field":
        bad = dict(good)
        bad.pop(rng.choice(required))
        return _json(bad)
    if kind == "wrong_type":
        numeric = [k for k, f in job.schema_.items() if f.type not in ("string", "timestamp")]
        bad = dict(good)
        bad[numeric[0] if numeric else job.event_time] = "not-a-number"
        return _json(bad)
    if kind == "bad_timestamp":
        return _json(good).replace(
            b'"' + job.event_time.encode() + b'": "',
            b'"' + job.event_time.encode() + b'": "yesterday ',
        )
    return b'["an", "array", "not", "an", "event"]'


@dataclass
class _Builder:
    """Appends events to a sample round-robin over the partitions, keyed by their `*_id` field."""

    job: Job
    rng: random.Random
    partitions: int
    first_index: int
    sample: Sample = field(default_factory=Sample)

    def event(self, i: int, t: datetime) -> dict[str, Any]:
        """Event number `i` (from `first_index`) at time `t`, its other fields drawn at random."""
        job = self.job
        return {
            name: t
            if name == job.event_time
            else _value(name, f.type, self.rng, self.first_index + i)
            for name, f in job.schema_.items()
        }

    def add(
        self,
        kind: Kind,
        ev: dict[str, Any] | None,
        value: bytes | None = None,
        key_from: dict[str, Any] | None = None,
    ) -> None:
        """Append `ev` (or `value`, bytes of a malformed one keyed like `key_from`)."""
        seq = len(self.sample.events)
        keyed = key_from if key_from is not None else ev
        assert keyed is not None
        key = next(
            (str(keyed[name]).encode() for name in self.job.schema_ if name.endswith("_id")),
            str(seq).encode(),
        )
        payload = value if value is not None else _json(keyed)
        self.sample.events.append(SampleEvent(key, payload, seq % self.partitions, kind, ev))


def generate(
    job: Job,
    *,
    partitions: int,
    start: datetime,
    span: timedelta,
    n: int,
    malformed: int = 0,
    late: int = 0,
    too_late: int = 0,
    seed: int = 7,
    first_index: int = 0,
) -> Sample:
    """`n` on-time events over [start, start+span), plus late, too-late and malformed ones.

    Late events are older than the newest event by half the watermark delay (they must be
    counted); too-late events are older than everything by the watermark delay plus one window
    and come last (they must be dropped by the watermark and counted as dropped).
    """
    rng = random.Random(seed)
    wm = job.watermark
    delay = timedelta(seconds=wm.delay.seconds) if wm else timedelta(minutes=10)
    window = (
        timedelta(seconds=job.aggregate.window.seconds) if job.aggregate else timedelta(hours=1)
    )
    late_at = set(rng.sample(range(n // 4, n), min(late, max(0, n - n // 4)))) if late else set()
    bad_at = set(rng.sample(range(n), min(malformed, n))) if malformed else set()
    b = _Builder(job, rng, partitions, first_index)
    step = span / max(1, n)
    malformed_n = 0
    for i in range(n):
        jitter_ms = rng.randrange(0, max(1, int(step.total_seconds() * 500)))
        t = start + step * i + timedelta(milliseconds=jitter_ms)
        ev = b.event(i, t)
        if i in late_at:
            b.add("late", b.event(i, t - delay / 2))
        if i in bad_at:
            b.add("malformed", None, _malformed(job, ev, rng, malformed_n), key_from=ev)
            malformed_n += 1
            continue
        b.add("on_time", ev)
    for j in range(too_late):
        # One window apart: Spark counts drops after partial aggregation, so two late events in
        # the same window and group would count once. Apart, each is one dropped row.
        b.add("too_late", b.event(n + j, start - delay - window * (j + 2)))
    return b.sample


def _conf(kafka: str | dict[str, str]) -> dict[str, str]:
    # A plain host:port, or librdkafka settings (`KafkaClientSettings.librdkafka()`, SASL included).
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


def produce(kafka: str | dict[str, str], topic: str, sample: Sample) -> int:
    """Produce every event to `topic` on its partition; return how many were acknowledged."""
    from confluent_kafka import Producer

    acked = 0
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            errors.append(f"{topic}[{msg.partition()}]: {err}")

    conf = _conf(kafka)
    bootstrap_servers = conf["bootstrap.servers"]
    p = Producer({**conf, "linger.ms": 5, "acks": "all", "log_level": 3})
    for e in sample.events:
        p.produce(topic, key=e.key, value=e.value, partition=e.partition, on_delivery=on_delivery)
        p.poll(0)
    remaining = p.flush(30)
    if remaining or errors:
        from streamops.errors import KafkaError

        raise KafkaError(
            f"producing to '{topic}' on {bootstrap_servers}: {remaining} not delivered, "
            f"{len(errors)} failed ({'; '.join(errors[:3])})"
        )
    return acked


def ensure_topic(kafka: str | dict[str, str], topic: str, partitions: int) -> None:
    """Create `topic` with `partitions` if it does not exist yet."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({**_conf(kafka), "log_level": 3})
    md = admin.list_topics(timeout=10)
    if topic in md.topics and not md.topics[topic].error:
        return
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ]
    try:
        fut.result(30)
    except Exception as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def utc(text: str) -> datetime:
    """Parse an ISO time as UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
