"""Local Kafka source throughput: Spark + streamops_kafka vs a plain confluent-kafka consumer.

Same records, same broker, same run. Writes bench/results/source_throughput.{json,md}.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from streamops.kafka.offsets import client_config
from streamops.localstack import LocalStack
from streamops.demo.sample import ensure_topic
from streamops.pipeline.session import local_session

ROOT = Path(__file__).resolve().parents[1]
RECORDS = 200_000
PARTITIONS = 4
VALUE = json.dumps({"claim_id": "CLM-0000001", "claim_type": "auto", "region": "north",
                    "claim_amount": 1234.56, "event_time": "2026-11-24T06:00:00.000Z"}).encode()  # fmt: skip


def produce(bootstrap: str, topic: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    for i in range(RECORDS):
        p.produce(topic, key=str(i).encode(), value=VALUE, partition=i % PARTITIONS)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(60)


def plain_consumer(bootstrap: str, topic: str) -> float:
    c = Consumer(client_config(bootstrap, {"group.id": f"bench-{uuid.uuid4().hex[:6]}"}))
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    n, t0 = 0, time.perf_counter()
    while n < RECORDS:
        for m in c.consume(10_000, 1.0):
            if m.error() is None:
                n += 1
    dt = time.perf_counter() - t0
    c.close()
    return dt


def spark_source(spark, bootstrap: str, topic: str, ckpt: str) -> float:  # type: ignore[no-untyped-def]
    df = (spark.readStream.format("streamops_kafka").option("kafka.bootstrap.servers", bootstrap)
          .option("subscribe", topic).load())  # fmt: skip
    t0 = time.perf_counter()
    q = (df.writeStream.format("noop").option("checkpointLocation", ckpt)
         .trigger(availableNow=True).start())  # fmt: skip
    q.awaitTermination()
    dt = time.perf_counter() - t0
    rows = sum(p["numInputRows"] for p in q.recentProgress)
    assert rows == RECORDS, f"spark read {rows} of {RECORDS}"
    return dt


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(ROOT / ".cache", state_dir=Path(tmp) / "stack")
        stack.up(services=("broker",))
        try:
            bs = stack.broker_bootstrap()
            topic = f"bench-{uuid.uuid4().hex[:6]}"
            ensure_topic(bs, topic, PARTITIONS)
            produce(bs, topic)
            spark = local_session(cores=2, app_name="bench")
            spark_source(spark, bs, topic, f"{tmp}/warmup")  # JVM and worker warm-up
            s = spark_source(spark, bs, topic, f"{tmp}/ck")
            c = plain_consumer(bs, topic)
        finally:
            stack.down()
    res = {
        "records": RECORDS, "partitions": PARTITIONS, "value_bytes": len(VALUE),
        "spark_streamops_kafka_rows_per_s": round(RECORDS / s),
        "plain_confluent_consumer_rows_per_s": round(RECORDS / c),
        "ratio_spark_to_plain": round((RECORDS / s) / (RECORDS / c), 3),
    }  # fmt: skip
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "source_throughput.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in res.items()]
    (out / "source_throughput.md").write_text(
        "# Local Kafka source throughput (2 cores, local[2])\n\n" + "\n".join(md) + "\n"
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
