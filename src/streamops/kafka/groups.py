"""Commit each batch's end offsets to a consumer group named after the query (metadata only).

Spark keeps its offsets in the checkpoint and commits none to Kafka, so the usual lag tools
(kafka-consumer-groups, Burrow, the cloud consoles) see nothing. After each committed batch the
runner commits that batch's end offsets to the group `<query name>`; nothing ever consumes with
this group, and Spark never reads it back (the checkpoint stays the source of truth).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from streamops.kafka.offsets import client_config

if TYPE_CHECKING:
    from confluent_kafka import Consumer

log = logging.getLogger(__name__)


class GroupCommitter:
    """One metadata-only consumer per query; commits are synchronous with a short timeout, and
    a failure is counted and logged, never raised (the stream does not depend on it)."""

    def __init__(
        self, bootstrap: str, extra: dict[str, str] | None = None, *, timeout: float = 5.0
    ):
        self.bootstrap = bootstrap
        self.extra = extra or {}
        self.timeout = timeout
        self._consumers: dict[str, Consumer] = {}
        self._lock = threading.Lock()
        self.committed = 0
        self.failures = 0
        self.last_error: str | None = None

    def _consumer(self, group: str) -> Consumer:
        from confluent_kafka import Consumer

        if group not in self._consumers:
            conf: dict[str, Any] = client_config(self.bootstrap, self.extra)
            conf["group.id"] = group
            self._consumers[group] = Consumer(conf)
        return self._consumers[group]

    def commit(self, group: str, end_offsets: dict[str, dict[str, int]]) -> bool:
        from confluent_kafka import TopicPartition

        tps = [
            TopicPartition(t, int(p), int(o))
            for t, parts in end_offsets.items()
            for p, o in parts.items()
            if int(o) >= 0
        ]
        if not tps:
            return False
        with self._lock:
            try:
                result = self._consumer(group).commit(offsets=tps, asynchronous=False)
                errors = [tp for tp in result or [] if tp.error is not None]
                if errors:
                    raise RuntimeError(
                        f"{errors[0].topic}[{errors[0].partition}]: {errors[0].error}"
                    )
                self.committed += 1
                return True
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("offset commit to group %s failed: %s", group, self.last_error)
                return False

    def close(self) -> None:
        with self._lock:
            for c in self._consumers.values():
                with contextlib.suppress(Exception):  # closing is best effort
                    c.close()
            self._consumers.clear()


def group_offsets(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: list[int],
    extra: dict[str, str] | None = None,
) -> dict[int, int]:
    """What the group `group` has committed for `topic` (for checks and tests)."""
    from confluent_kafka import Consumer, TopicPartition

    conf = client_config(bootstrap, extra)
    conf["group.id"] = group
    c = Consumer(conf)
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()
