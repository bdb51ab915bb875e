"""The sinks' Delta app transactions when a checkpoint starts again behind its table.

A checkpoint rebuilt, restored from a backup or started new numbers its batches from a lower id
than the table already holds. With the batch id as the transaction version, Delta skips every
such batch without a word; the writers recognise a replay by its content (batch id and end
offsets) and number everything else above the table. Driven through the foreachBatch functions
with static DataFrames on the session's Spark (delta-spark), so each case is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from streamops.errors import SinkError
from streamops.pipeline.commit_meta import from_commit_info
from streamops.pipeline.sinks import BatchWrite, GoldWriter, SinkSpec, ensure_table

APP = "claims_hourly"


def _ends(tag: str) -> Any:
    """End offsets per batch id; `tag` makes one checkpoint's ranges differ from another's."""
    return lambda b: ({"reservoirVersion": b, "index": -1, "run": tag},)


class Run:
    """One run of a query: a new writer (as after a restart), fed batch by batch, into the table
    its query's start created when missing."""

    def __init__(self, spark: SparkSession, table: Path, tag: str, mode: str = "append"):
        self.spark = spark
        self.writes: list[BatchWrite] = []
        ensure_table(spark, str(table), spark.createDataFrame([], "k string, v long").schema)
        spec = SinkSpec(str(table), APP, mode, ("k",) if mode == "merge" else ())  # type: ignore[arg-type]
        self.writer = GoldWriter(spec, _ends(tag), on_write=self.writes.append)

    def batch(self, batch_id: int, rows: list[tuple[str, int]]) -> BatchWrite:
        df = self.spark.createDataFrame(rows, "k string, v long")
        self.writer(df, batch_id)
        return self.writes[-1]


def _rows(table: Path) -> list[tuple[str, int]]:
    t = DeltaTable(str(table)).to_pyarrow_table()
    return sorted(zip(t.column("k").to_pylist(), t.column("v").to_pylist(), strict=True))


def _txns(table: Path) -> list[int]:
    out = []
    for info in reversed(DeltaTable(str(table)).history()):
        c = from_commit_info(info)
        if c is not None:
            out.append(c.txn)
    return out


@pytest.fixture
def table(tmp_path: Path, spark: SparkSession) -> Path:
    """A table that one checkpoint wrote batches 0..3 to."""
    path = tmp_path / "gold"
    first = Run(spark, path, "first")
    for b in range(4):
        assert first.batch(b, [(f"a{b}", b)]).skipped is False
    assert _txns(path) == [0, 1, 2, 3]
    return path


def test_a_new_checkpoint_from_batch_zero_writes_every_batch(
    table: Path, spark: SparkSession
) -> None:
    run = Run(spark, table, "second")
    for b in range(3):
        w = run.batch(b, [(f"b{b}", 10 + b)])
        assert w.skipped is False and w.rows == 1 and w.version is not None
    assert _rows(table) == sorted(
        [(f"a{b}", b) for b in range(4)] + [(f"b{b}", 10 + b) for b in range(3)]
    )
    assert _txns(table) == [0, 1, 2, 3, 4, 5, 6]  # numbering goes on from the table


def test_a_replay_is_skipped_and_the_run_goes_on_above_the_table(
    table: Path, spark: SparkSession
) -> None:
    """A restored backup ends at batch 1: Spark replays batch 1 over the same offsets (skipped),
    then plans new batches 2, 3 over other ranges than the lost run did: both are written."""
    run = Run(spark, table, "first")
    assert run.batch(1, [("a1", 1)]).skipped is True
    run.writer.end_offsets = _ends("replanned")
    assert run.batch(2, [("c2", 22)]).skipped is False
    assert run.batch(3, [("c3", 33)]).skipped is False
    assert ("c2", 22) in _rows(table) and ("c3", 33) in _rows(table)
    assert _txns(table) == [0, 1, 2, 3, 4, 5]


def test_a_restart_where_the_table_stands_keeps_the_numbering(
    table: Path, spark: SparkSession
) -> None:
    run = Run(spark, table, "first")
    assert run.batch(3, [("a3", 3)]).skipped is True  # the last batch, replayed after a crash
    assert run.batch(4, [("a4", 4)]).skipped is False
    assert _txns(table) == [0, 1, 2, 3, 4]


def test_merge_from_a_new_checkpoint_is_not_skipped(tmp_path: Path, spark: SparkSession) -> None:
    path = tmp_path / "agg"
    first = Run(spark, path, "first", "merge")
    for b in range(3):
        first.batch(b, [("w", b)])
    rebuilt = Run(spark, path, "rebuilt", "merge")
    rebuilt.batch(0, [("w", 100), ("x", 1)])  # the rebuilt aggregate replaces the old one
    assert _rows(path) == [("w", 100), ("x", 1)]
    assert _txns(path) == [0, 1, 2, 3]


def test_a_write_delta_skips_is_an_error_never_silent(table: Path, spark: SparkSession) -> None:
    """Another writer took the query's app id past this run's numbering mid-run: Delta skips
    the write; the writer stops with the table, batch and version named."""
    run = Run(spark, table, "second")
    run.batch(0, [("b0", 1)])  # version 4
    other = Run(spark, table, "third")
    other.batch(0, [("x", 1)])  # version 5
    other.batch(1, [("y", 1)])  # version 6
    with pytest.raises(SinkError, match=r"batch 2 of query 'claims_hourly' was not committed"):
        run.batch(2, [("b2", 1)])  # version 6 again: Delta skips it
