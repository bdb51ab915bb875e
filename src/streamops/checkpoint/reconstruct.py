"""Rebuild startingOffsets for a new checkpoint from what the sink already holds.

Sources, in order of trust:
1. `delta-commit`: the end offsets the sink recorded in its last Delta commit of the query
   (`commitInfo.userMetadata`, `streamops.pipeline.commit_meta`; written in the same commit as
   the batch's data: exact).
2. `consumer-group`: the end offsets each batch mirrors to the consumer group `<query name>`
   (Spark's Kafka source commits none of its own).
3. `kafka-timestamps`: offsets_for_times at the newest event time in the sink minus the source's
   max lateness (approximate: may re-read records the sink already holds).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamops.checkpoint.registry import queries_of
from streamops.errors import CheckpointError
from streamops.pipeline.commit_meta import from_commit_info

if TYPE_CHECKING:
    from streamops.bundle import Bundle

Offsets = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Reconstructed:
    """Starting offsets for one query and where they came from."""

    query_name: str
    starting_offsets: Offsets
    source: str  # "delta-commit" | "consumer-group" | "kafka-timestamps"
    why: str
    table: str = ""
    version: int | None = None
    batch: int | None = None


@dataclass
class Reconstruction:
    job: str
    target: str
    queries: list[Reconstructed] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "target": self.target,
            "generated_at": time.time(),
            "queries": {
                q.query_name: {
                    "startingOffsets": q.starting_offsets,
                    "source": q.source,
                    "why": q.why,
                    "table": q.table,
                    "version": q.version,
                    "batch": q.batch,
                }
                for q in self.queries
            },
            "skipped": self.skipped,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)


def _merge(sources: list[Any]) -> Offsets:
    out: Offsets = {}
    for s in sources:
        for topic, parts in (s or {}).items():
            out.setdefault(topic, {}).update({str(p): int(o) for p, o in parts.items()})
    return out


def from_delta_commits(
    tables: tuple[str, ...], query_name: str, delta_options: dict[str, str] | None = None
) -> Reconstructed | None:
    """The newest commit of `query_name` (highest batch id over `tables`) with end offsets."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    best: Reconstructed | None = None
    for uri in tables:
        try:
            dt = DeltaTable(uri, storage_options=delta_options)
        except TableNotFoundError:
            continue
        for c in dt.history():
            commit = from_commit_info(c)
            if commit is None or commit.query != query_name:
                continue
            offsets = commit.kafka_offsets()
            if not offsets:
                continue
            batch = commit.batch_id
            if best is None or (best.batch or -1) < batch:
                best = Reconstructed(
                    query_name, offsets, "delta-commit",
                    f"end offsets of batch {batch}, recorded in version {c.get('version')} of "
                    f"{uri} in the same commit as the batch's data (exact)",
                    uri, c.get("version"), batch,
                )  # fmt: skip
            break  # history is newest first: the first match is this table's newest
    return best


def from_consumer_group(
    bundle: Bundle,
    job_name: str,
    query_name: str,
    tables: tuple[str, ...],
    delta_options: dict[str, str] | None = None,
    kafka_config: dict[str, str] | None = None,
) -> Reconstructed | None:
    """The offsets the job mirrors to the consumer group `<query name>` after each batch."""
    from confluent_kafka import Consumer, TopicPartition
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from streamops.kafka.offsets import client_config, topic_partitions

    src = bundle.source(bundle.job(job_name))
    kafka = bundle.runtime.kafka_for(bundle.job(job_name).source)
    consumer = Consumer(
        client_config(
            kafka.bootstrap_servers,
            dict(kafka.librdkafka(), **(kafka_config or {}), **{"group.id": query_name}),
        )
    )
    try:
        parts = topic_partitions(consumer, src.topic)
        committed = consumer.committed([TopicPartition(src.topic, p) for p in parts], timeout=10)
    finally:
        consumer.close()
    if not committed or any(tp.offset < 0 for tp in committed):
        return None
    # The new checkpoint must go on numbering after the sink's last batch of this query.
    batch = None
    for uri in tables:
        try:
            v = DeltaTable(uri, storage_options=delta_options).transaction_version(query_name)
        except TableNotFoundError:
            continue
        if v is not None and (batch is None or v > batch):
            batch = v
    offsets = {src.topic: {str(tp.partition): tp.offset for tp in committed}}
    return Reconstructed(
        query_name, offsets, "consumer-group",
        f"no Delta commit of '{query_name}' records end offsets; the consumer group "
        f"'{query_name}' holds the end offsets the job committed after its last batch",
        batch=batch,
    )  # fmt: skip


def from_kafka_timestamps(
    bundle: Bundle,
    job_name: str,
    query_name: str,
    tables: tuple[str, ...],
    delta_options: dict[str, str] | None = None,
    kafka_config: dict[str, str] | None = None,
) -> Reconstructed | None:
    """offsets_for_times at (newest event time in the sink - max lateness)."""
    from confluent_kafka import Consumer, TopicPartition
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from streamops.kafka.offsets import client_config, topic_partitions

    job = bundle.job(job_name)
    src = bundle.source(job)
    newest = None
    for uri in tables:
        try:
            t = DeltaTable(uri, storage_options=delta_options).to_pyarrow_table()
        except TableNotFoundError:
            continue
        for col in (job.event_time, "window_end"):
            if col in t.column_names and t.num_rows:
                import pyarrow.compute as pc

                v = pc.max(t.column(col)).as_py()
                if v is not None and (newest is None or v > newest):
                    newest = v
                break
    if newest is None:
        return None
    at_ms = int(newest.timestamp() * 1000 - src.max_lateness.seconds * 1000)
    kafka = bundle.runtime.kafka_for(bundle.job(job_name).source)
    consumer = Consumer(
        client_config(kafka.bootstrap_servers, dict(kafka.librdkafka(), **(kafka_config or {})))
    )
    try:
        parts = topic_partitions(consumer, src.topic)
        found = consumer.offsets_for_times(
            [TopicPartition(src.topic, p, at_ms) for p in parts], timeout=10
        )
        offsets = {src.topic: {str(tp.partition): (tp.offset if tp.offset >= 0 else -1)
                               for tp in found}}  # fmt: skip
    finally:
        consumer.close()
    return Reconstructed(
        query_name, offsets, "kafka-timestamps",
        f"no Delta commit of '{query_name}' records end offsets; offsets of the first records at "
        f"or after {newest} minus max_lateness ({src.max_lateness.text}), the newest event time in "
        "the sink: approximate, records near that time may be read twice (-1 = latest)",
    )  # fmt: skip


def reconstruct(
    bundle: Bundle,
    job_name: str,
    *,
    delta_options: dict[str, str] | None = None,
    kafka_config: dict[str, str] | None = None,
    use_kafka: bool = True,
) -> Reconstruction:
    """Starting offsets for every query of `job_name`; CheckpointError when none can be found."""
    out = Reconstruction(job_name, bundle.target_name)
    for q in queries_of(bundle, job_name):
        found = from_delta_commits(q.tables, q.query_name, delta_options)
        if found is not None:
            out.skipped.setdefault(
                "consumer-group", "not needed: the sink's Delta commits record exact end offsets"
            )
        if found is None and use_kafka:
            found = from_consumer_group(
                bundle, job_name, q.query_name, q.tables, delta_options, kafka_config
            )
        if found is None and use_kafka:
            found = from_kafka_timestamps(
                bundle, job_name, q.query_name, q.tables, delta_options, kafka_config
            )
        if found is None:
            out.skipped[q.query_name] = (
                f"no Delta commit with end offsets and no event times in {', '.join(q.tables)}"
            )
            continue
        out.queries.append(found)
    if not out.queries:
        raise CheckpointError(
            f"job '{job_name}': nothing to reconstruct offsets from (the sink tables hold no "
            "commits of its queries). Fix: start the job without --reset-from; it reads from the "
            "source's startingOffsets"
        )
    return out
