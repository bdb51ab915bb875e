"""A Spark 4 Python streaming source over confluent-kafka, for where Spark's Kafka jar is absent.

It takes the built-in source's options (`kafka.bootstrap.servers`, `subscribe`, `startingOffsets`,
`maxOffsetsPerTrigger`, `failOnDataLoss`, and `kafka.*` client settings), returns the same
columns (key, value, topic, partition, offset, timestamp, timestampType), and keeps offsets in
the checkpoint in the same JSON shape, so a job moves between engines without a code change.
One Spark task reads one partition's exact offset range [from, until).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from streamops.errors import KafkaError

FORMAT = "streamops_kafka"

KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)
_ARROW_SCHEMA = pa.schema(
    [
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("timestampType", pa.int32()),
    ]
)
_ROWS_PER_ARROW_BATCH = 10_000
# A read that sees no record for this long although the range says there are more is stuck.
_READ_STALL_S = 60.0


@dataclass
class KafkaRange(InputPartition):
    """Offsets [start, until) of one topic partition: one Spark task."""

    topic: str
    partition: int
    start: int
    until: int
    conf: dict[str, Any]

    def __init__(self, topic: str, partition: int, start: int, until: int, conf: dict[str, Any]):
        super().__init__((topic, partition, start, until))
        self.topic, self.partition, self.start, self.until, self.conf = (
            topic,
            partition,
            start,
            until,
            conf,
        )


def _client_conf(options: dict[str, str]) -> dict[str, Any]:
    from streamops.kafka.offsets import client_config

    bootstrap = options.get("kafka.bootstrap.servers")
    if not bootstrap:
        raise KafkaError("option 'kafka.bootstrap.servers' is required (host:port[,host:port])")
    extra = {
        k.removeprefix("kafka."): v
        for k, v in options.items()
        if k.startswith("kafka.") and k != "kafka.bootstrap.servers"
    }
    return client_config(bootstrap, extra)


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Driver side: plans offset ranges; `read` runs in the executors."""

    def __init__(self, options: dict[str, str]):
        # Spark hands options case-insensitively; compare them in lower case like it does.
        self.options = {k.lower(): v for k, v in options.items()}
        self.conf = _client_conf(self.options)
        topics = self.options.get("subscribe", "")
        self.topics = [t.strip() for t in topics.split(",") if t.strip()]
        if not self.topics:
            raise KafkaError("option 'subscribe' is required (one or more topics, comma separated)")
        self.starting = self.options.get("startingoffsets", "earliest").strip()
        mo = self.options.get("maxoffsetspertrigger")
        self.max_offsets = int(mo) if mo else None
        self.fail_on_data_loss = self.options.get("failondataloss", "true").lower() != "false"
        # Where skipped (lost) offset ranges are recorded when failOnDataLoss is false.
        self.loss_log = self.options.get("streamops.losslog")
        self._consumer: Any = None
        self._latest: dict[str, dict[str, int]] | None = None
        self._cap: dict[str, dict[str, int]] | None = None
        # Partitions whose end offset a fetch confirmed in the last look (see true_end_offsets).
        self._confirmed: dict[str, set[int]] = {}
        self.skipped_records = 0

    # -- driver-side helpers -------------------------------------------------------------

    def _meta(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            conf = dict(self.conf, **{"group.id": f"streamops-meta-{uuid.uuid4().hex[:8]}"})
            self._consumer = Consumer(conf)
        return self._consumer

    def _watermarks(self) -> dict[str, dict[int, tuple[int, int]]]:
        from streamops.kafka.offsets import topic_partitions, watermarks

        out = {}
        self._confirmed = {}
        for topic in self.topics:
            try:
                parts = topic_partitions(self._meta(), topic)
            except KafkaError as exc:
                raise KafkaError(
                    f"{exc} (bootstrap servers {self.conf['bootstrap.servers']}). Fix: create the "
                    f"topic, or correct `sources.<name>.topic` in bundle.yml"
                ) from None
            confirmed: set[int] = set()
            out[topic] = watermarks(self._meta(), topic, parts, confirmed=confirmed)
            self._confirmed[topic] = confirmed
        return out

    def _ends(self) -> dict[str, dict[str, int]]:
        return {
            t: {str(p): hw for p, (_, hw) in wm.items()} for t, wm in self._watermarks().items()
        }

    # -- the streaming source contract ---------------------------------------------------

    def initialOffset(self) -> dict:
        wms = self._watermarks()
        if self.starting in ("earliest", "latest"):
            i = 0 if self.starting == "earliest" else 1
            return {t: {str(p): v[i] for p, v in wm.items()} for t, wm in wms.items()}
        from streamops.kafka.offsets import parse_offsets_json

        given = parse_offsets_json(self.starting, where="option startingOffsets")
        out: dict[str, dict[str, int]] = {}
        for t, wm in wms.items():
            out[t] = {}
            for p, (low, high) in wm.items():
                off = given.get(t, {}).get(str(p), -2)
                out[t][str(p)] = low if off == -2 else high if off == -1 else off
        return out

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_offsets) if self.max_offsets else ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        # availableNow: read up to what exists now, in as many batches as the read limit needs.
        self._cap = self._ends()

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        latest = self._ends()
        self._latest = latest
        if self._cap is not None:
            latest = {
                t: {p: min(off, self._cap.get(t, {}).get(p, off)) for p, off in parts.items()}
                for t, parts in latest.items()
            }
        start = start or {}
        begin = {t: {p: start.get(t, {}).get(p, 0) for p in parts} for t, parts in latest.items()}
        ahead = [
            (t, p, begin[t][p], end)
            for t, parts in latest.items()
            for p, end in parts.items()
            if begin[t][p] > max(end, (self._latest or {}).get(t, {}).get(p, end))
            # Only a fetch-confirmed end proves the topic shrank; a slow broker's answer does not.
            and int(p) in self._confirmed.get(t, set())
        ]
        if ahead:
            where = ", ".join(
                f"{t}[{p}] checkpoint at {a}, broker ends at {b}" for t, p, a, b in ahead
            )
            if self.fail_on_data_loss:
                # Offsets beyond the end mean the topic was deleted and recreated (or the broker
                # lost data): reading on would silently skip everything up to the old offsets.
                raise KafkaError(
                    f"the checkpoint's offsets are beyond the end of the topic: {where}. The topic "
                    "was probably recreated. Fix: if the old data is gone for good, start the job "
                    "with a new checkpoint (or set `fail_on_data_loss: false` to continue from the "
                    "old offsets); otherwise restore the topic"
                )
        if not isinstance(limit, ReadMaxRows):
            return {
                t: {p: max(begin[t][p], o) for p, o in parts.items()} for t, parts in latest.items()
            }
        return _rate_limit(begin, latest, limit.max_rows)

    def reportLatestOffset(self) -> dict | None:
        return self._latest

    def partitions(self, start: dict, end: dict) -> list[KafkaRange]:
        wms = self._watermarks()
        ranges = []
        lost = []
        for topic, parts in end.items():
            for p, until in sorted(parts.items(), key=lambda x: int(x[0])):
                frm = (start or {}).get(topic, {}).get(p, 0)
                low = wms.get(topic, {}).get(int(p), (0, 0))[0]
                if frm < low:
                    lost.append((topic, p, frm, low))
                    frm = low
                if until > frm:
                    ranges.append(KafkaRange(topic, int(p), frm, until, self.conf))
        if lost:
            where = ", ".join(f"{t}[{p}] offsets {a}..{b - 1}" for t, p, a, b in lost)
            if self.fail_on_data_loss:
                raise KafkaError(
                    f"records are no longer available on the broker (retention removed them): "
                    f"{where}. They were never processed. Fix: replay them from another copy, or "
                    f"set `fail_on_data_loss: false` on the source to skip them and count the loss"
                )
            self.skipped_records += sum(b - a for _, _, a, b in lost)
            if self.loss_log:
                with open(self.loss_log, "a", encoding="utf-8") as fh:
                    for t, p, a, b in lost:
                        fh.write(json.dumps({"time": time.time(), "topic": t, "partition": int(p),
                                             "from": a, "to": b, "skipped": b - a}) + "\n")  # fmt: skip
        return ranges

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, KafkaRange)
        yield from read_range(partition)

    def commit(self, end: dict) -> None:
        # Offsets live in Spark's checkpoint; nothing to commit on the broker here.
        return None

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _rate_limit(begin: dict, latest: dict, max_rows: int) -> dict:
    """Split `max_rows` across partitions in proportion to what each has, as Spark's source does."""
    avail = {(t, p): max(0, latest[t][p] - begin[t][p]) for t in latest for p in latest[t]}
    total = sum(avail.values())
    end = {t: dict(parts) for t, parts in begin.items()}
    if total <= max_rows:
        for (t, p), n in avail.items():
            end[t][p] = begin[t][p] + n
        return end
    for (t, p), n in avail.items():
        share = max_rows * n / total
        take = math.ceil(share) if share < 1 else math.floor(share)
        end[t][p] = begin[t][p] + min(n, take)
    return end


def read_range(r: KafkaRange) -> Iterator[pa.RecordBatch]:
    """Read exactly [start, until) of one partition as Arrow batches."""
    from confluent_kafka import Consumer, TopicPartition

    conf = dict(r.conf, **{"group.id": f"streamops-read-{uuid.uuid4().hex[:8]}"})
    consumer = Consumer(conf)
    try:
        consumer.assign([TopicPartition(r.topic, r.partition, r.start)])
        cols: dict[str, list[Any]] = {n: [] for n in _ARROW_SCHEMA.names}
        nxt = r.start
        last_progress = time.monotonic()
        while nxt < r.until:
            msgs = consumer.consume(min(10_000, r.until - nxt), 0.5)
            if not msgs:
                # Offsets can have holes (transaction markers, compaction): trust the position.
                pos = consumer.position([TopicPartition(r.topic, r.partition)])[0].offset
                if pos >= r.until:
                    break
                if time.monotonic() - last_progress > _READ_STALL_S:
                    raise KafkaError(
                        f"{r.topic}[{r.partition}]: expected records up to offset {r.until - 1} "
                        f"but the broker returned none after offset {nxt - 1} for "
                        f"{_READ_STALL_S:.0f} s. Fix: check the broker is reachable from the "
                        "executors and the topic was not recreated"
                    )
                continue
            last_progress = time.monotonic()
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.retriable():
                        continue
                    raise KafkaError(f"{r.topic}[{r.partition}] at offset {nxt}: {err.str()}")
                off = m.offset()
                if off is None or off < nxt:
                    continue
                if off >= r.until:
                    nxt = r.until
                    break
                ts_type, ts = m.timestamp()
                cols["key"].append(m.key())
                cols["value"].append(m.value())
                cols["topic"].append(r.topic)
                cols["partition"].append(r.partition)
                cols["offset"].append(off)
                cols["timestamp"].append(ts * 1000 if ts >= 0 else None)
                cols["timestampType"].append(max(0, ts_type - 1) if ts_type else 0)
                nxt = off + 1
                if len(cols["offset"]) >= _ROWS_PER_ARROW_BATCH:
                    yield pa.RecordBatch.from_pydict(cols, schema=_ARROW_SCHEMA)
                    cols = {n: [] for n in _ARROW_SCHEMA.names}
        if cols["offset"]:
            yield pa.RecordBatch.from_pydict(cols, schema=_ARROW_SCHEMA)
    finally:
        consumer.close()


class KafkaDataSource(DataSource):
    """`spark.readStream.format("streamops_kafka")`: the local stand-in for format("kafka")."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return KafkaStreamReader(dict(self.options))
