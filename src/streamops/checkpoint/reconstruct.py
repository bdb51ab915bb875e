"""Rebuild startingOffsets for a lost bronze checkpoint from what the sink already holds.

Only the bronze query reads Kafka, so only its offsets can be rebuilt. The gold query reads the
bronze table as a Delta stream and keeps its window state in the checkpoint: a lost gold
checkpoint is restored from a backup (or gold is rebuilt from bronze), never reconstructed.

Sources, in order of trust (the bronze query writes the bronze and quarantine tables):
1. `delta-commit`: the end offsets the sink recorded in its newest commit of the query
   (`commitInfo.userMetadata`, `streamops.pipeline.commit_meta`; written in the same commit as
   the batch's data): exact.
2. `consumer-group`: the end offsets the job mirrors to the consumer group `<query name>` after
   each batch (Spark's Kafka source commits none of its own).
3. `kafka-timestamps`: per partition, offsets_for_times at the newest Kafka record timestamp the
   sink holds for it (each row keeps its `kafka_timestamp`).
The two approximate ones are moved up to the Kafka coordinates the sink already holds (every
record lands in bronze or quarantine with its partition and offset), so after a crash between
a batch's commit and its mirror, or for records sharing a timestamp, nothing is read twice.

Each result carries the sink's last batch id of the query: the new checkpoint goes on numbering
after it (`registry.seed_checkpoint`). The sinks do not depend on it: they number their Delta
transactions from where each table stands (`pipeline.sinks`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from streamops.checkpoint.registry import QueryNow, queries_of
from streamops.errors import CheckpointError
from streamops.pipeline.commit_meta import BatchCommit, from_commit_info
from streamops.pipeline.driver_delta import open_delta

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from deltalake import DeltaTable

    from streamops.bundle import Bundle

Offsets = dict[str, dict[str, int]]
# The newest commits looked at first; the whole history only when none of them is the query's
# (a quarantine table may not have been written for many batches).
RECENT_COMMITS = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Reconstructed:
    """Starting offsets for one query and where they came from."""

    query_name: str
    starting_offsets: Offsets
    source: str  # "delta-commit" | "consumer-group" | "kafka-timestamps"
    why: str
    table: str = ""
    version: int | None = None
    batch: int | None = None  # the sink's last batch of the query: the new checkpoint's first


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


def _table(bundle: Bundle, uri: str) -> DeltaTable | None:
    # delta-rs off the cluster, delta-spark on it (the same reads either way).
    return open_delta(uri, bundle.runtime.storage(uri))


def _newest_commit(dt: DeltaTable, query_name: str) -> tuple[int | None, BatchCommit] | None:
    """(version, commit) of the newest commit of `query_name` that records Kafka end offsets."""
    for limit in (RECENT_COMMITS, None):
        for info in dt.history(limit):
            commit = from_commit_info(info)
            if commit is not None and commit.query == query_name and commit.kafka_offsets():
                return info.get("version"), commit
    return None


def _last_batch(bundle: Bundle, q: QueryNow) -> int | None:
    """The newest batch id of `q` in its sink tables (from its commits' metadata)."""
    found: list[int] = []
    for uri in q.tables:
        dt = _table(bundle, uri)
        if dt is None:
            continue
        for limit in (RECENT_COMMITS, None):
            ids = [
                c.batch_id
                for info in dt.history(limit)
                if (c := from_commit_info(info)) is not None and c.query == q.query_name
            ]
            if ids:
                found.append(max(ids))
                break
    return max(found, default=None)


def _newest_per_partition(bundle: Bundle, q: QueryNow, topic: str, column: str) -> dict[int, Any]:
    """{partition: the largest `column` (a Kafka coordinate) among the rows of `topic` that the
    query's sink tables hold}."""
    import pyarrow.compute as pc

    newest: dict[int, Any] = {}
    for uri in q.tables:
        dt = _table(bundle, uri)
        if dt is None:
            continue
        rows = dt.to_pyarrow_table(columns=["kafka_topic", "kafka_partition", column])
        rows = rows.filter(pc.equal(rows.column("kafka_topic"), topic))
        if not rows.num_rows:
            continue
        grouped = rows.group_by("kafka_partition").aggregate([(column, "max")])
        for p, v in zip(grouped.column(0).to_pylist(), grouped.column(1).to_pylist(), strict=True):
            if p is not None and v is not None and (int(p) not in newest or v > newest[int(p)]):
                newest[int(p)] = v
    return newest


def _held_next_offsets(bundle: Bundle, q: QueryNow, topic: str) -> dict[int, int]:
    """{partition: the offset after the newest record of `topic` the sink holds}.

    Every record the query read lands in exactly one of its tables with its Kafka coordinates,
    and a batch commits whole ranges, so this is exactly where reading must go on: starting
    from an approximate source (the consumer group, Kafka timestamps) at no earlier offset than
    this writes no record twice.
    """
    return {
        p: int(o) + 1 for p, o in _newest_per_partition(bundle, q, topic, "kafka_offset").items()
    }


def _not_before_held(offsets: dict[str, int], held: dict[int, int]) -> tuple[dict[str, int], int]:
    """`offsets` moved up to what the sink already holds; and how many records that skips."""
    out = {p: max(o, held.get(int(p), o)) for p, o in offsets.items()}
    return out, sum(out[p] - offsets[p] for p in offsets)


def from_delta_commits(bundle: Bundle, q: QueryNow) -> Reconstructed | None:
    """The newest commit of `q` (highest batch id over its tables) with Kafka end offsets."""
    best: Reconstructed | None = None
    for uri in q.tables:
        dt = _table(bundle, uri)
        found = _newest_commit(dt, q.query_name) if dt is not None else None
        if found is None:
            continue
        version, commit = found
        if best is None or (best.batch if best.batch is not None else -1) < commit.batch_id:
            best = Reconstructed(
                q.query_name,
                commit.kafka_offsets(),
                "delta-commit",
                f"end offsets of batch {commit.batch_id}, recorded in version {version} of {uri} "
                "in the same commit as the batch's data (exact)",
                uri,
                version,
                commit.batch_id,
            )
    return best


def _consumer(bundle: Bundle, job_name: str, group: str | None = None) -> Consumer:
    from confluent_kafka import Consumer

    from streamops.kafka.offsets import client_config

    kafka = bundle.runtime.kafka_for(bundle.job(job_name).source)
    extra = dict(kafka.librdkafka(), **({"group.id": group} if group else {}))
    return Consumer(client_config(kafka.bootstrap_servers, extra))


def from_consumer_group(bundle: Bundle, job_name: str, q: QueryNow) -> Reconstructed | None:
    """The end offsets the job mirrored to the consumer group `<query name>` after its batches."""
    from confluent_kafka import TopicPartition

    from streamops.kafka.offsets import topic_partitions

    topic = bundle.source(bundle.job(job_name)).topic
    consumer = _consumer(bundle, job_name, group=q.query_name)
    try:
        parts = topic_partitions(consumer, topic)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    finally:
        consumer.close()
    if not committed or any(tp.offset < 0 for tp in committed):
        return None
    offsets, moved = _not_before_held(
        {str(tp.partition): tp.offset for tp in committed}, _held_next_offsets(bundle, q, topic)
    )
    return Reconstructed(
        q.query_name,
        {topic: offsets},
        "consumer-group",
        f"no Delta commit of '{q.query_name}' records end offsets; the consumer group "
        f"'{q.query_name}' holds the end offsets the job committed after its last batch"
        + (
            f", {moved} record(s) behind what the sink holds (the job died before mirroring its "
            "last batch): moved up to the sink's newest Kafka coordinates"
            if moved
            else ""
        )
        + "; no record is read twice or skipped",
        batch=_last_batch(bundle, q),
    )


def _newest_record_times(bundle: Bundle, q: QueryNow, topic: str) -> dict[int, int]:
    """{partition: newest Kafka record timestamp (ms)} over the rows the sink holds of `topic`."""
    newest = _newest_per_partition(bundle, q, topic, "kafka_timestamp")
    # Integer arithmetic: a float timestamp could round to a later millisecond.
    return {
        p: (ts.replace(tzinfo=ts.tzinfo or UTC) - EPOCH) // timedelta(milliseconds=1)
        for p, ts in newest.items()
    }


def from_kafka_timestamps(bundle: Bundle, job_name: str, q: QueryNow) -> Reconstructed | None:
    """Per partition: the first offset at the newest Kafka record timestamp the sink holds."""
    from confluent_kafka import TopicPartition

    from streamops.kafka.offsets import topic_partitions, watermarks

    topic = bundle.source(bundle.job(job_name)).topic
    newest = _newest_record_times(bundle, q, topic)
    if not newest:
        return None
    consumer = _consumer(bundle, job_name)
    try:
        parts = topic_partitions(consumer, topic)
        earliest = {p: lo for p, (lo, _) in watermarks(consumer, topic, parts).items()}
        asked = [TopicPartition(topic, p, newest[p]) for p in parts if p in newest]
        found = {tp.partition: tp.offset for tp in consumer.offsets_for_times(asked, timeout=10)}
    finally:
        consumer.close()
    # A partition the sink holds nothing of, or none of whose records is as new as the sink's
    # newest (gone to retention), starts at its earliest record: nothing is skipped.
    by_time = {str(p): found[p] if found.get(p, -1) >= 0 else earliest[p] for p in parts}
    offsets, moved = _not_before_held(by_time, _held_next_offsets(bundle, q, topic))
    return Reconstructed(
        q.query_name,
        {topic: offsets},
        "kafka-timestamps",
        f"no Delta commit of '{q.query_name}' records end offsets and the consumer group "
        f"'{q.query_name}' has none; per partition, the first record at the newest Kafka "
        f"timestamp the sink holds, moved past the {moved} record(s) sharing that timestamp "
        "that the sink already holds (by their Kafka coordinates): none is read twice or skipped",
        batch=_last_batch(bundle, q),
    )


def not_rebuildable(bundle: Bundle, job_name: str, q: QueryNow) -> str:
    """Why a query that does not read Kafka gets no reconstructed offsets, and what to do."""
    return (
        f"{q.kind} query '{q.query_name}' reads {', '.join(q.source_tables)} as a Delta stream, "
        "not Kafka, and keeps its window state in its checkpoint: a lost one cannot be rebuilt "
        f"from offsets. Fix: `streamops checkpoint restore --job {job_name} --target "
        f"{bundle.target_name}` restores its newest backup"
    )


def reconstruct(
    bundle: Bundle,
    job_name: str,
    *,
    only: Collection[str] | None = None,
    use_kafka: bool = True,
) -> Reconstruction:
    """Starting offsets for the job's Kafka-reading queries (those named in `only`, if given).

    CheckpointError when none can be found.
    """
    out = Reconstruction(job_name, bundle.target_name)
    for q in queries_of(bundle, job_name):
        if only is not None and q.query_name not in only:
            continue
        if not q.reads_kafka:
            out.skipped[q.query_name] = not_rebuildable(bundle, job_name, q)
            continue
        found = from_delta_commits(bundle, q)
        if found is None and use_kafka:
            found = from_consumer_group(bundle, job_name, q) or from_kafka_timestamps(
                bundle, job_name, q
            )
        if found is None:
            out.skipped[q.query_name] = (
                f"no commit with end offsets and no Kafka coordinates in {', '.join(q.tables)}"
            )
            continue
        out.queries.append(found)
    if not out.queries:
        raise CheckpointError(
            f"job '{job_name}': nothing to reconstruct offsets from ("
            + "; ".join(f"{name}: {why}" for name, why in out.skipped.items())
            + "). Fix: a query whose sink holds no batch starts without --reset-from (it reads "
            "from the source's startingOffsets); restore a lost gold checkpoint from a backup"
        )
    return out
