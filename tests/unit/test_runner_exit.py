"""A stopped stream is not a success: the runner's await loop on real local Spark queries.

A continuous query that ends while nobody asked (here: `StreamingQuery.stop()` called from
elsewhere in the process, as an outage would end it) raises QueryStoppedError, so `jobs/stream.py`
exits non-zero and Databricks restarts the run. A stop requested through streamops (SIGTERM, or
`StopRequest.request`) and a catch-up that reaches its end stay exit 0.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from streamops.clock import REAL
from streamops.errors import QueryStoppedError, StreamopsError
from streamops.pipeline.progress import BatchProgress
from streamops.runner.job import JobRun, RunningQuery, await_queries
from streamops.runner.stopping import StopRequest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

# Not a timing assertion: a stop that is not honoured would otherwise hang the test; the guard
# then stops the queries from outside, which the loop reports as QueryStoppedError (a failure).
HANG_GUARD_S = 120.0


class NoFailure:
    """A sink that failed nothing (the loop reads only `failure`)."""

    failure: StreamopsError | None = None


def _rate_query(spark: SparkSession, name: str, tmp_path: Path) -> StreamingQuery:
    return (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 5)
        .load()
        .writeStream.format("noop")
        .queryName(name)
        .option("checkpointLocation", str(tmp_path / name))
        .trigger(processingTime="100 milliseconds")
        .start()
    )


@pytest.fixture
def two_queries(spark: SparkSession, tmp_path: Path) -> Iterator[list[RunningQuery]]:
    """A continuous job's two queries (bronze, gold), stopped at the end whatever happened."""
    running = [
        RunningQuery(kind, _rate_query(spark, f"exit_{kind}_{os.getpid()}", tmp_path), NoFailure())
        for kind in ("bronze", "gold")
    ]
    yield running
    for r in running:
        r.query.stop()


@contextmanager
def hang_guard(running: list[RunningQuery]) -> Iterator[None]:
    timer = threading.Timer(HANG_GUARD_S, lambda: [r.query.stop() for r in running])
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _after_first_gold_batch(act: Callable[[], None]) -> Callable[[BatchProgress], None]:
    def on_batch(b: BatchProgress) -> None:
        if b.query_name.startswith("exit_gold") and b.batch_id >= 1:
            act()

    return on_batch


def _run() -> JobRun:
    return JobRun("claims_hourly", "claims_hourly", "", "")


def test_a_query_stopped_from_outside_fails_the_run(two_queries: list[RunningQuery]) -> None:
    gold = two_queries[1].query
    stop = StopRequest()
    with hang_guard(two_queries), pytest.raises(QueryStoppedError) as info:
        await_queries(
            two_queries, _run(), _after_first_gold_batch(gold.stop), None, False, REAL, stop
        )
    err = info.value
    assert err.exit_code != 0 and err.query == gold.name and err.job == "claims_hourly"
    message = str(err)
    assert "\n" not in message
    assert f"query '{gold.name}' stopped without an error" in message
    assert "Databricks restarts the run" in message
    # Half a job is not left running: the other query was stopped too.
    assert not any(r.query.isActive for r in two_queries)


def test_a_requested_stop_ends_the_run_without_error(two_queries: list[RunningQuery]) -> None:
    stop = StopRequest()
    run = _run()
    with hang_guard(two_queries):
        await_queries(
            two_queries,
            run,
            _after_first_gold_batch(lambda: stop.request("test")),
            None,
            False,
            REAL,
            stop,
        )
    assert stop.reason == "test"
    assert not any(r.query.isActive for r in two_queries)
    assert len(run.batches) >= 2 and run.bronze_batches


def test_sigterm_is_a_requested_stop(two_queries: list[RunningQuery]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    sigterm = _after_first_gold_batch(lambda: os.kill(os.getpid(), signal.SIGTERM))
    with hang_guard(two_queries), stop.on_signals():
        await_queries(two_queries, _run(), sigterm, None, False, REAL, stop)
    assert stop.requested and stop.reason == "signal SIGTERM"
    assert not any(r.query.isActive for r in two_queries)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_a_catch_up_that_reaches_its_end_is_a_success(spark: SparkSession, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"{i}.txt").write_text(f"line {i}\n")
    query = (
        spark.readStream.format("text")
        .load(str(inbox))
        .writeStream.format("noop")
        .queryName(f"exit_catch_up_{os.getpid()}")
        .option("checkpointLocation", str(tmp_path / "ck"))
        .trigger(availableNow=True)
        .start()
    )
    running = [RunningQuery("bronze", query, NoFailure())]
    run = _run()
    with hang_guard(running):
        await_queries(running, run, None, None, True, REAL, StopRequest())
    assert sum(b.input_rows for b in run.bronze_batches) == 3
    assert not query.isActive
