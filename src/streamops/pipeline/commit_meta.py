"""The one codec of what a streaming batch records in its Delta commit (`commitInfo.userMetadata`).

The writers (Spark, on every target) encode it; the JVM-free readers (checkpoint
reconstruction, the late report, compaction planning, through delta-rs) decode it. Keeping both
sides here means a reader can never look for metadata where the writer does not put it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Marks our JSON in userMetadata, which other tools (or a user) may also set.
TAG = "streamops"
VERSION = 1


@dataclass(frozen=True)
class BatchCommit:
    """One micro-batch's commit: which query, which batch, and the batch's end offsets.

    `end_offsets` holds one entry per source of the query, as Spark's checkpoint `offsets/N`
    holds it (for Kafka `{"topic": {"0": 42, ...}}`; for a Delta source its own offset object).
    """

    query: str
    batch_id: int
    end_offsets: tuple[Any, ...] = field(default=())
    # The Delta app-transaction version the batch was written under (txnVersion). Commits written
    # before it was recorded used the batch id.
    txn_version: int | None = None

    @property
    def txn(self) -> int:
        return self.batch_id if self.txn_version is None else self.txn_version

    def kafka_offsets(self) -> dict[str, dict[str, int]]:
        """The Kafka sources' end offsets merged into {topic: {partition: next offset}}."""
        out: dict[str, dict[str, int]] = {}
        for s in self.end_offsets:
            if not is_kafka_offsets(s):
                continue
            for topic, parts in s.items():
                out.setdefault(topic, {}).update({str(p): int(o) for p, o in parts.items()})
        return out


def is_kafka_offsets(value: Any) -> bool:
    """Whether a source offset is Kafka's shape: {topic: {partition: int}}."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(
            isinstance(parts, dict)
            and all(isinstance(o, int) and not isinstance(o, bool) for o in parts.values())
            for parts in value.values()
        )
    )


def encode(commit: BatchCommit) -> str:
    """The userMetadata string of `commit`."""
    data: dict[str, Any] = {TAG: VERSION, "query": commit.query, "batchId": commit.batch_id,
                            "endOffsets": list(commit.end_offsets)}  # fmt: skip
    if commit.txn_version is not None:
        data["txnVersion"] = commit.txn_version
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode(user_metadata: str | None) -> BatchCommit | None:
    """The BatchCommit in a userMetadata string, or None when it holds none of ours."""
    if not user_metadata:
        return None
    try:
        data = json.loads(user_metadata)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get(TAG) != VERSION:
        return None
    try:
        txn = data.get("txnVersion")
        return BatchCommit(
            str(data["query"]),
            int(data["batchId"]),
            tuple(data.get("endOffsets") or ()),
            int(txn) if txn is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def from_commit_info(info: dict[str, Any]) -> BatchCommit | None:
    """The BatchCommit of one Delta commitInfo (as delta-rs `history()` or Spark returns it)."""
    return decode(info.get("userMetadata"))
