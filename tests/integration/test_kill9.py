"""Exactly-once through crashes: kill -9 the driver again and again while events keep coming.

Half of the kills land at the worst moment: the gold Delta commit is done but Spark has not
written its commit file, so the batch is replayed on restart and must be skipped by the sink.
At the end bronze, quarantine and gold must equal exactly what the produced events imply.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from streamops.bundle import load
from streamops.demo.sample import generate, produce, utc
from streamops.localstack import LocalStack, local_broker
from tests.integration.helpers import SHIPPED_BUNDLE, expected_hourly, kafka_conf, table_rows
from tests.stack_fixtures import PROJECT

# Four kills, two at the worst moment: each kind of crash is replayed twice; more cycles add only
# cold starts (about 50 s each on 2 cores), not new interleavings.
KILLS = 4
START = utc("2026-11-24T06:00:00Z")


def _bundle_file(tmp_path: Path, topic: str) -> Path:
    doc = yaml.safe_load(SHIPPED_BUNDLE.read_text())
    doc["targets"]["local"]["storage_root"] = str(tmp_path / "data")
    doc["sources"]["claims"]["topic"] = topic
    job = doc["jobs"]["claims_hourly"]
    job["trigger"] = {"processing_time": "1 second"}
    # Few, large batches: a batch costs seconds of fixed work on 2 cores whatever its size, and
    # the interleavings under test are per batch, not per record.
    job["max_offsets_per_trigger"] = 1000
    path = tmp_path / "bundle.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# Every job process a test started, so that a failing test leaves no driver (and its JVM) running
# on into the rest of the suite.
_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_job_left_running() -> Iterator[None]:
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            _kill9(proc)


def _start(bundle: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    # The environment carries the session broker's stack dir (SASL credentials) and the jars.
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    if extra and extra[0] == "--available-now":
        cmd = [sys.executable, "-m", "streamops.cli", "run", "--bundle", str(bundle),
               "--target", "local", "--job", "claims_hourly", *extra]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "tests.integration.crash_driver", str(bundle),
               "claims_hourly", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    _STARTED.append(proc)
    return proc


def _wait(
    cond: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, limit_s: float = 120
) -> None:
    # A bounded number of polls, so a hung job fails the test instead of stalling the suite.
    for _ in range(int(limit_s / 0.1)):
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"job exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for the job:\n{log.read_text()[-3000:]}")


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    # The whole session: the Python driver and the JVM it started die together, as in a crash.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


@pytest.mark.slow
# Eleven cold starts of a Spark driver on 2 cores; every wait inside is bounded on its own.
@pytest.mark.timeout(1200)
def test_exactly_once_through_repeated_kill_minus_9(
    tmp_path: Path, local_stack: LocalStack, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=4)
    bundle_path = _bundle_file(tmp_path, topic)
    bundle = load(bundle_path, "local", local_broker=local_broker)
    job = bundle.job("claims_hourly")
    sample = generate(
        job, partitions=4, start=START, span=timedelta(hours=2), n=4000, malformed=60, seed=99
    )
    log = tmp_path / "job.log"
    rng = random.Random(4)

    def producer() -> None:
        from streamops.demo.sample import Sample

        events = sample.events
        for i in range(0, len(events), 40):
            produce(kafka_conf(bundle), topic, Sample(events[i : i + 40]))
            time.sleep(0.25)

    feeder = threading.Thread(target=producer, daemon=True)
    feeder.start()
    kinds = []
    for i in range(KILLS):
        marker = tmp_path / f"paused-{i}"
        before = log.read_text() if log.exists() else ""
        if i % 2 == 0:
            # Worst moment: Delta commit done, Spark's commit file not yet written.
            proc = _start(bundle_path, log, str(marker))
            _wait(marker.exists, proc, log)
            kinds.append(f"after delta commit of batch {marker.read_text()}")
        else:
            proc = _start(bundle_path, log)
            _wait(lambda b=before: log.read_text().count("batch") > b.count("batch"), proc, log)
            time.sleep(rng.uniform(0.0, 2.5))
            kinds.append("at a random point")
        _kill9(proc)
    feeder.join(180)
    assert not feeder.is_alive()

    # Catch up to the end without a crash, then compare with what was produced.
    final = _start(bundle_path, log, "--available-now")
    assert final.wait(300) == 0, log.read_text()[-3000:]

    good = [e for e in sample.events if e.kind != "malformed"]
    bronze = DeltaTable(bundle.bronze_location(job)).to_pyarrow_table()
    coords = list(
        zip(
            bronze.column("kafka_partition").to_pylist(),
            bronze.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert len(coords) == len(set(coords)), "a record was written to bronze twice"
    assert sorted(bronze.column("claim_id").to_pylist()) == sorted(
        e.event["claim_id"] for e in good if e.event
    )

    quarantine = DeltaTable(bundle.quarantine_location(job)).to_pyarrow_table()
    q_coords = list(
        zip(
            quarantine.column("kafka_partition").to_pylist(),
            quarantine.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert len(q_coords) == len(set(q_coords)) == sample.count("malformed")

    expected = expected_hourly(sample.valid_events(), ("claim_type", "region"), "claim_amount")
    rows = table_rows(bundle.table_location(job.sink), ("claim_type", "region"))
    assert set(rows) == set(expected)
    for key, amounts in expected.items():
        assert rows[key]["claims"] == len(amounts), key
        assert rows[key]["total_amount"] == pytest.approx(sum(amounts), rel=1e-9), key
    assert len([k for k in kinds if k.startswith("after")]) >= KILLS // 2, kinds
