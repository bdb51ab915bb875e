"""Checkpoint safety on real checkpoints of the one data path: Spark's Kafka source writes the
bronze checkpoint (Kafka offsets), the bronze table read as a Delta stream writes the gold one
(Delta source offsets, RocksDB window state). One real job makes them (module fixture: two
catch-up runs over the session broker's SASL listener, so gold has several batches and drops two
too-late events); each test works on a private copy of its tables and checkpoints.

Covered: every integrity code on both checkpoints, the source checks by offset shape (broker for
Kafka, the bronze table's log for Delta), the reset/drift guard, backups and restore, offsets
rebuilt for a lost bronze checkpoint from each of the three sources (every record exactly once,
or for Kafka timestamps: none missed), a lost gold checkpoint (restored, never rebuilt), and the
late report on the Spark-written tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from streamops.bundle import Bundle
from streamops.checkpoint import backup as bk
from streamops.checkpoint.checks import check
from streamops.checkpoint.reader import delta_offset, kafka_offsets, read_checkpoint
from streamops.checkpoint.reconstruct import (
    Reconstruction,
    from_consumer_group,
    from_kafka_timestamps,
    reconstruct,
)
from streamops.checkpoint.registry import (
    QueryNow,
    guard,
    load_registry,
    queries_of,
    registry_path,
)
from streamops.cli import app
from streamops.demo.sample import Sample, generate, produce, utc
from streamops.deploy.guard import check_before_deploy
from streamops.errors import CheckpointError, CheckpointGuardError
from streamops.kafka.groups import group_offsets
from streamops.kafka.offsets import client_config, topic_partitions, watermarks
from streamops.localstack import AzuriteEndpoint, LocalStack
from streamops.monitoring.late_report import late_report
from streamops.pipeline.bronze import ensure_tables
from streamops.runner.entry import recovery_offsets
from streamops.runner.job import run_job
from tests.integration.helpers import kafka_conf, local_bundle
from tests.unit.helpers import edited, write

JOB = "claims_hourly"
BRONZE = f"{JOB}_bronze"
START = utc("2026-11-24T06:00:00Z")
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Made:
    root: Path  # holds data/ (tables + checkpoints) of the real run
    topic: str
    dropped: int  # too-late events gold's watermark dropped
    dropped_windows: frozenset[tuple[str, str, str]]  # (window start, claim_type, region)


def _bundle(root: Path, topic: str, **job: Any) -> Bundle:
    return local_bundle(root, topics={"claims": topic},
                        jobs={JOB: {"max_offsets_per_trigger": 150, **job}})  # fmt: skip


def _bundle_file(root: Path, topic: str) -> Path:
    """The same storage and topic as `_bundle(root, topic)`, as a bundle.yml for the CLI."""
    text = edited(
        ("storage_root: .cache/data", f"storage_root: {root / 'data'}"),
        ("topic: insurance.claims", f"topic: {topic}"),
    )
    return write(root, text)


@pytest.fixture(scope="module")
def made(
    spark: SparkSession, local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Made:
    topic = f"claims-ck-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": local_stack.broker_bootstrap()})
    admin.create_topics([NewTopic(topic, num_partitions=2)])[topic].result(timeout=30)
    root = tmp_path_factory.mktemp("made")
    bundle = _bundle(root, topic)
    job = bundle.job(JOB)
    first = generate(job, partitions=2, start=START, span=timedelta(hours=2), n=300,
                     malformed=4, late=3, seed=7)  # fmt: skip
    # Too-late events after a restart: the watermark comes back from the checkpoint, so gold
    # drops them at once (within one run they would pass while the watermark is still low).
    second = generate(job, partitions=2, start=START + timedelta(hours=2), span=timedelta(hours=1),
                      n=150, malformed=2, late=2, too_late=2, seed=8, first_index=300)  # fmt: skip
    dropped = 0
    for sample in (first, second):
        produce(kafka_conf(bundle), topic, sample)
        run = run_job(bundle, JOB, spark, available_now=True, timeout_s=300)
        dropped += run.dropped_by_watermark
    assert dropped == second.count("too_late") == 2
    windows = frozenset(
        (_hour(e.event["event_time"]), e.event["claim_type"], e.event["region"])
        for e in second.events
        if e.kind == "too_late" and e.event
    )
    return Made(root, topic, dropped, windows)


@pytest.fixture
def copy(made: Made, tmp_path: Path) -> Path:
    """A private copy of the run's storage (tables + checkpoints); returns the new root.

    The registry is left out: it records the original run's absolute paths.
    """
    shutil.copytree(made.root / "data", tmp_path / "data")
    (tmp_path / "data" / "_checkpoints" / "_streamops_registry.json").unlink()
    return tmp_path


def _hour(t: Any) -> str:
    return str(t.replace(minute=0, second=0, microsecond=0).isoformat())


def _checkpoints(bundle: Bundle) -> dict[str, Path]:
    return {q.kind: Path(q.checkpoint) for q in queries_of(bundle, JOB)}


def _query(bundle: Bundle, kind: str) -> QueryNow:
    return next(q for q in queries_of(bundle, JOB) if q.kind == kind)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _codes(location: Path | str, **kw: Any) -> set[str]:
    return {f.code for f in check(str(location), **kw).findings}


def _batches(ck: Path, kind: str = "offsets") -> list[int]:
    return sorted(int(p.name) for p in (ck / kind).iterdir() if p.name.isdigit())


def _drop_crc(ck: Path) -> None:
    for crc in ck.rglob(".*.crc"):
        crc.unlink()  # Spark would refuse a file whose checksum no longer matches anyway


def _rewrite_source(ck: Path, batch: int, change: Callable[[Any], Any]) -> str:
    """Replace the first source line of offsets/<batch>; returns the file's old text."""
    f = ck / "offsets" / str(batch)
    old = f.read_text(encoding="utf-8")
    lines = old.splitlines()
    f.write_text("\n".join([*lines[:2], json.dumps(change(json.loads(lines[2])))]), "utf-8")
    _drop_crc(ck)
    return old


def _topic_records(bundle: Bundle, topic: str) -> set[tuple[int, int]]:
    """Every (partition, offset) the topic holds now."""
    c = Consumer(client_config(bundle.runtime.kafka_for("claims").bootstrap_servers,
                               kafka_conf(bundle)))  # fmt: skip
    try:
        marks = watermarks(c, topic, topic_partitions(c, topic))
    finally:
        c.close()
    return {(p, o) for p, (lo, hi) in marks.items() for o in range(lo, hi)}


def _sink_records(bundle: Bundle) -> list[tuple[int, int]]:
    """(partition, offset) of every row of bronze and quarantine, duplicates kept."""
    job = bundle.job(JOB)
    seen: list[tuple[int, int]] = []
    for uri in (bundle.bronze_location(job), bundle.quarantine_location(job)):
        t = DeltaTable(uri).to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
        seen += list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))
    return seen


def _more(bundle: Bundle, topic: str, n: int, seed: int) -> Sample:
    sample = generate(bundle.job(JOB), partitions=2, start=START + timedelta(hours=3),
                      span=timedelta(hours=1), n=n, malformed=2, seed=seed,
                      first_index=1000 * seed)  # fmt: skip
    produce(kafka_conf(bundle), topic, sample)
    return sample


# --- reading and checking real checkpoints -------------------------------------------------


def test_reader_parses_both_real_checkpoints(copy: Path, made: Made) -> None:
    bundle = _bundle(copy, made.topic)
    cks = _checkpoints(bundle)

    bronze = read_checkpoint(str(cks["bronze"]))
    assert bronze.query_id and bronze.listing.commits == bronze.listing.offsets
    committed = bronze.committed_offsets()
    assert committed is not None and committed.version == "v1"
    k = kafka_offsets(committed.sources[0])
    assert k is not None and set(k) == {made.topic} and sum(k[made.topic].values()) > 0
    assert bronze.listing.sources == ("sources/0/0",) and not bronze.listing.operators

    gold = read_checkpoint(str(cks["gold"]))
    assert gold.query_id and gold.query_id != bronze.query_id
    assert len(gold.listing.commits) >= 3 and "batchWatermarkMs" in gold.offsets[-1].metadata
    committed = gold.committed_offsets()
    assert committed is not None and kafka_offsets(committed.sources[0]) is None
    d = delta_offset(committed.sources[0])
    bronze_table = DeltaTable(bundle.bronze_location(bundle.job(JOB)))
    assert d is not None and d.reservoir_id == bronze_table.metadata().id
    assert d.reservoir_version <= bronze_table.version() + 1
    assert gold.listing.operators and all(op.has_metadata for op in gold.listing.operators)
    assert {s.kind for s in gold.listing.state_files} >= {"zip", "sst"}  # RocksDB


def test_healthy_checks_are_read_only_and_say_what_they_skipped(copy: Path, made: Made) -> None:
    cks = _checkpoints(_bundle(copy, made.topic))
    for kind, ck in cks.items():
        before = _digest(ck)
        result = CliRunner().invoke(app, ["checkpoint", "check", str(ck), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["healthy"] and report["findings"] == [], (kind, report)
        assert set(report["checks_skipped"]) >= {"broker", "registry"}
        assert _digest(ck) == before
    gold = check(str(cks["gold"]))
    assert "state" in gold.checks_run
    assert "reads no Kafka topic" in gold.checks_skipped["broker"]
    assert "--bundle" in gold.checks_skipped["delta-source"]
    assert "bootstrap" in check(str(cks["bronze"])).checks_skipped["broker"]


def _break(ck: Path, how: str) -> None:
    offs = _batches(ck)
    last = offs[-1]
    if how == "metadata_missing":
        (ck / "metadata").unlink()
    elif how == "metadata_garbled":
        (ck / "metadata").write_text('{"id": "abc', encoding="utf-8")
    elif how == "offsets_gap":
        (ck / "offsets" / str(offs[1])).unlink()
    elif how == "commits_gap":
        (ck / "commits" / str(offs[1])).unlink()
    elif how == "commit_without_offsets":
        (ck / "offsets" / str(last)).unlink()
    elif how == "uncommitted":
        (ck / "commits" / str(last)).unlink()
        (ck / "commits" / str(last - 1)).unlink()
    elif how == "truncated":
        text = (ck / "offsets" / str(last)).read_text(encoding="utf-8")
        (ck / "offsets" / str(last)).write_text(text[: len(text) - 9], encoding="utf-8")
    elif how == "version":
        text = (ck / "commits" / str(last)).read_text(encoding="utf-8")
        (ck / "commits" / str(last)).write_text(text.replace("v1", "v99", 1), encoding="utf-8")
    elif how == "backwards":
        _rewrite_source(ck, last, _back_to_start)
    elif how == "state_missing":
        for p in (ck / "state" / "0" / "0").iterdir():
            if p.name.split(".")[0].split("_")[0] == str(last + 1):
                p.unlink()
    _drop_crc(ck)


def _back_to_start(source: Any) -> Any:
    if delta_offset(source) is not None:
        return dict(source, reservoirVersion=0, index=-1)
    return {topic: {p: 0 for p in parts} for topic, parts in source.items()}


BREAKAGES = [
    ("metadata_missing", "CK101"), ("metadata_garbled", "CK102"), ("offsets_gap", "CK110"),
    ("commits_gap", "CK111"), ("commit_without_offsets", "CK112"), ("uncommitted", "CK113"),
    ("backwards", "CK114"), ("truncated", "CK120"), ("version", "CK121"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "how", "code"),
    [("bronze", h, c) for h, c in BREAKAGES]
    + [("gold", h, c) for h, c in BREAKAGES]
    + [("gold", "state_missing", "CK130")],
)
def test_each_breakage_has_its_code_and_the_fix_that_fits_the_query(
    copy: Path, made: Made, kind: str, how: str, code: str
) -> None:
    ck = _checkpoints(_bundle(copy, made.topic))[kind]
    _break(ck, how)
    before = _digest(ck)
    result = CliRunner().invoke(app, ["checkpoint", "check", str(ck)])
    assert result.exit_code == 1, result.output
    assert code in result.output and "Fix:" in result.output
    found = [f for f in check(str(ck)).findings if f.code == code]
    assert found, result.output
    # Bronze reads only Kafka and keeps no state: its offsets can be rebuilt. Gold cannot.
    for f in found:
        assert "checkpoint restore" in f.fix
        assert ("reconstruct" in f.fix) == (kind == "bronze"), f.fix
    assert _digest(ck) == before


def test_unreadable_location_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["checkpoint", "check", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["unreadable"]


def test_source_checks_follow_the_shape_of_each_source(copy: Path, made: Made) -> None:
    """Kafka offsets (bronze) against the broker over SASL; Delta source offsets (gold) against
    the bronze table's log. A Delta offset is valid, never a missing topic."""
    bundle = _bundle(copy, made.topic)
    kafka = bundle.runtime.kafka_for("claims")
    assert kafka.uses_sasl
    broker = {"bootstrap_servers": kafka.bootstrap_servers, "kafka_config": kafka.librdkafka()}
    cks = _checkpoints(bundle)
    bronze_table = (bundle.bronze_location(bundle.job(JOB)),)

    report = check(str(cks["bronze"]), **broker)
    assert report.exit_code == 0 and "broker" in report.checks_run, report.render()
    last = _batches(cks["bronze"], "commits")[-1]
    old = _rewrite_source(cks["bronze"], last, lambda s: {t: dict.fromkeys(s[t], 10**6) for t in s})
    assert "CK141" in _codes(cks["bronze"], **broker)
    _rewrite_source(cks["bronze"], last, lambda s: {"gone-topic-x": s[made.topic]})
    assert "CK142" in _codes(cks["bronze"], **broker)
    (cks["bronze"] / "offsets" / str(last)).write_text(old, encoding="utf-8")

    report = check(str(cks["gold"]), source_tables=bronze_table, **broker)
    assert report.exit_code == 0, report.render()
    assert "broker" not in report.checks_run and "delta-source" in report.checks_run
    last = _batches(cks["gold"], "commits")[-1]
    _rewrite_source(cks["gold"], last, lambda s: dict(s, reservoirVersion=10**6))
    assert _codes(cks["gold"], source_tables=bronze_table, **broker) == {"CK144"}
    _rewrite_source(cks["gold"], last, lambda s: dict(s, reservoirId=str(uuid.uuid4())))
    assert _codes(cks["gold"], source_tables=bronze_table, **broker) == {"CK143"}


def test_offsets_lost_to_retention_are_found(
    copy: Path, made: Made, new_topic: Callable[..., str]
) -> None:
    """CK140 with the broker's real retention: records deleted with delete_records."""
    bundle = _bundle(copy, made.topic)
    topic = new_topic(1, prefix="claims-retention")
    p = Producer({**kafka_conf(bundle), "log_level": 3})
    for i in range(10):
        p.produce(topic, value=f"{i}".encode(), partition=0)
    assert p.flush(30) == 0
    admin = AdminClient({**kafka_conf(bundle), "log_level": 3})
    for fut in admin.delete_records([TopicPartition(topic, 0, 8)]).values():
        fut.result(timeout=30)
    ck = _checkpoints(bundle)["bronze"]
    _rewrite_source(ck, _batches(ck, "commits")[-1], lambda _s: {topic: {"0": 5}})
    kafka = bundle.runtime.kafka_for("claims")
    report = check(str(ck), bootstrap_servers=kafka.bootstrap_servers,
                   kafka_config=kafka.librdkafka())  # fmt: skip
    [found] = [f for f in report.findings if f.code == "CK140"]
    assert "3 records lost to retention" in found.message and "retention" in found.fix


def test_check_with_the_bundle_runs_every_check(copy: Path, made: Made) -> None:
    """`check --bundle --target`: the job's broker for bronze, the bronze table for gold, the
    recorded query id for both; a changed query id is CK150."""
    bundle = _bundle(copy, made.topic)
    guard(bundle, JOB, event="start")
    path = _bundle_file(copy, made.topic)
    cks = _checkpoints(bundle)
    runs = {}
    for kind, ck in cks.items():
        args = ["checkpoint", "check", str(ck), "--bundle", str(path), "-t", "local", "--json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[kind] = set(json.loads(result.output)["checks_run"])
    assert runs["bronze"] == {"structure", "broker", "registry"}
    assert runs["gold"] == {"structure", "state", "delta-source", "registry"}

    (cks["gold"] / "metadata").write_text('{"id":"00000000-0000-0000-0000-000000000000"}')
    args = ["checkpoint", "check", str(cks["gold"]), "--bundle", str(path), "-t", "local"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "CK150" in result.output, result.output


# --- the reset and drift guard -------------------------------------------------------------


def test_guard_refuses_resets_and_drift(copy: Path, made: Made) -> None:
    bundle = _bundle(copy, made.topic)
    cks = _checkpoints(bundle)
    guard(bundle, JOB, event="start")
    rec = load_registry(registry_path(bundle), {}).jobs[JOB]
    assert rec["gold"].query_id == read_checkpoint(str(cks["gold"])).query_id
    assert rec["bronze"].offsets and kafka_offsets(rec["bronze"].offsets[0]) is not None
    assert rec["gold"].offsets and delta_offset(rec["gold"].offsets[0]) is not None
    assert check_before_deploy(bundle, JOB) == []

    moved = _bundle(copy, made.topic, checkpoint=str(copy / "elsewhere"))
    with pytest.raises(CheckpointGuardError, match=f"job '{JOB}'.*checkpoint location changed"):
        guard(moved, JOB, event="start")
    problems = check_before_deploy(moved, JOB)
    assert problems and "checkpoint location changed" in problems[0].message
    assert "put the old location back" in problems[0].fix

    renamed = _bundle(copy, made.topic, query_name="claims_hourly_v2")
    with pytest.raises(CheckpointGuardError, match="query name changed"):
        guard(renamed, JOB, event="deploy")

    # A reset: the query id recorded at the last start differs from the checkpoint's now.
    original = (cks["gold"] / "metadata").read_text()
    (cks["gold"] / "metadata").write_text('{"id":"00000000-0000-0000-0000-000000000000"}')
    with pytest.raises(CheckpointGuardError, match="was reset or replaced"):
        guard(bundle, JOB, event="start")
    (cks["gold"] / "metadata").write_text('{"id": "abc')  # garbled: named, with the way out
    with pytest.raises(CheckpointError, match=r"metadata: invalid JSON.*checkpoint check"):
        guard(bundle, JOB, event="start")
    (cks["gold"] / "metadata").write_text(original)

    # An empty bronze checkpoint while bronze and quarantine hold its batches.
    shutil.rmtree(cks["bronze"])
    cks["bronze"].mkdir()
    with pytest.raises(CheckpointGuardError) as refused:
        guard(bundle, JOB, event="start")
    msg = str(refused.value)
    assert f"bronze query '{BRONZE}'" in msg and "empty or gone while its sink" in msg
    assert "streamops checkpoint reconstruct --job claims_hourly" in msg
    problems = check_before_deploy(bundle, JOB)
    assert problems and "checkpoint restore" in problems[0].fix


def test_guard_lets_a_first_start_pass_when_the_tables_exist_empty(
    tmp_path: Path, made: Made, spark: SparkSession
) -> None:
    """The job creates bronze and quarantine before its queries start: tables without a batch of
    the query are no sink that a missing checkpoint would duplicate into."""
    bundle = _bundle(tmp_path, made.topic)
    ensure_tables(spark, bundle, bundle.job(JOB))
    assert guard(bundle, JOB, event="start") == {}


# --- a lost bronze checkpoint: offsets rebuilt from the sink --------------------------------


def test_bronze_rebuilt_from_the_delta_commit_holds_every_record_once(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    bundle = _bundle(copy, made.topic)
    cks = _checkpoints(bundle)
    guard(bundle, JOB, event="start")
    before = read_checkpoint(str(cks["bronze"]))
    gold_id = (cks["gold"] / "metadata").read_text()
    shutil.rmtree(cks["bronze"])  # the bronze checkpoint is lost
    with pytest.raises(CheckpointGuardError, match=r"bronze query.*checkpoint reconstruct"):
        run_job(bundle, JOB, spark, available_now=True)

    rec = reconstruct(bundle, JOB)
    [bronze] = rec.queries
    assert bronze.query_name == BRONZE and bronze.source == "delta-commit"
    committed = before.committed_offsets()
    assert committed is not None and bronze.starting_offsets == committed.sources[0]
    assert bronze.batch == before.last_committed
    assert "checkpoint restore" in rec.skipped[JOB]  # gold: restored, never rebuilt
    offsets_file = copy / "offsets.json"
    offsets_file.write_text(rec.to_json(), encoding="utf-8")

    _more(bundle, made.topic, 120, seed=9)
    run = run_job(bundle, JOB, spark, available_now=True, reset_from=offsets_file)

    seen = _sink_records(bundle)
    assert len(seen) == len(set(seen)), "a record was written twice"
    assert set(seen) == _topic_records(bundle, made.topic), "a record is missing"
    # The new checkpoint goes on numbering after the sink's last batch; gold went on from its own.
    commits = read_checkpoint(str(cks["bronze"])).listing.commits
    assert commits[:2] == (bronze.batch - 1, bronze.batch) and len(commits) > 2
    assert (cks["gold"] / "metadata").read_text() == gold_id and run.batches
    resets = load_registry(registry_path(bundle), {}).resets
    assert [r.job for r in resets] == [JOB] and BRONZE in resets[0].starting_offsets
    assert resets[0].overrode[BRONZE]  # what the reset went past is recorded


def test_bronze_rebuilt_from_the_mirrored_consumer_group_holds_every_record_once(
    spark: SparkSession, local_stack: LocalStack, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Second in trust: the end offsets the job commits to the group `<bronze query name>` over
    the SASL listener (its own topic: other tests' runs commit to the same group name)."""
    topic = new_topic(2, prefix="claims-group")
    bundle = _bundle(tmp_path, topic)
    produce(kafka_conf(bundle), topic, generate(bundle.job(JOB), partitions=2, start=START,
                                                span=timedelta(hours=1), n=200, malformed=3,
                                                seed=21))  # fmt: skip
    run_job(bundle, JOB, spark, available_now=True, timeout_s=300)
    q = _query(bundle, "bronze")
    kafka = bundle.runtime.kafka_for("claims")
    ends = {p: hi for p, (_, hi) in _marks(bundle, topic).items()}
    assert group_offsets(kafka.bootstrap_servers, BRONZE, topic, sorted(ends),
                         kafka.librdkafka()) == ends  # fmt: skip

    found = from_consumer_group(bundle, JOB, q)
    assert found is not None and found.source == "consumer-group"
    assert found.starting_offsets == {topic: {str(p): o for p, o in ends.items()}}
    assert found.batch == read_checkpoint(q.checkpoint).last_committed
    assert from_consumer_group(bundle, JOB, QueryNow("bronze", "no_such_query", "", ())) is None

    shutil.rmtree(q.checkpoint)
    offsets_file = tmp_path / "offsets.json"
    offsets_file.write_text(Reconstruction(JOB, "local", [found]).to_json(), encoding="utf-8")
    _more(bundle, topic, 80, seed=22)
    run_job(bundle, JOB, spark, available_now=True, queries=("bronze",), reset_from=offsets_file)

    seen = _sink_records(bundle)
    assert len(seen) == len(set(seen)) and set(seen) == _topic_records(bundle, topic)


def _marks(bundle: Bundle, topic: str) -> dict[int, tuple[int, int]]:
    c = Consumer(client_config(bundle.runtime.kafka_for("claims").bootstrap_servers,
                               kafka_conf(bundle)))  # fmt: skip
    try:
        return watermarks(c, topic, topic_partitions(c, topic))
    finally:
        c.close()


def test_bronze_rebuilt_from_kafka_timestamps_holds_every_record_once(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    """Third: per partition, the first record at the newest Kafka timestamp the sink holds,
    moved past the records sharing that timestamp that the sink already holds (by their Kafka
    coordinates). And the new checkpoint numbers its batches from 0 (no batch to go on from):
    the sinks still write every batch, under transaction versions above the tables'."""
    bundle = _bundle(copy, made.topic)
    q = _query(bundle, "bronze")
    committed = read_checkpoint(q.checkpoint).committed_offsets()
    assert committed is not None
    exact = {int(p): o for p, o in committed.sources[0][made.topic].items()}
    cols = ["kafka_partition", "kafka_offset", "kafka_timestamp"]
    stamp = {
        (r["kafka_partition"], r["kafka_offset"]): r["kafka_timestamp"]
        for uri in q.tables
        for r in DeltaTable(uri).to_pyarrow_table(columns=cols).to_pylist()
    }
    newest = {p: max(t for (pp, _), t in stamp.items() if pp == p) for p, _ in stamp}
    # The timestamp alone points back at records the sink holds (many share the newest one).
    shared = sum(1 for (p, _o), t in stamp.items() if t == newest[p])
    assert shared > len(exact)

    found = from_kafka_timestamps(bundle, JOB, q)
    assert found is not None and found.source == "kafka-timestamps"
    assert found.batch == committed.batch_id
    assert {int(p): o for p, o in found.starting_offsets[made.topic].items()} == exact
    assert "none is read twice or skipped" in found.why

    shutil.rmtree(q.checkpoint)
    offsets_file = copy / "offsets.json"
    unnumbered = dataclasses.replace(found, batch=None)  # the new checkpoint starts at batch 0
    offsets_file.write_text(Reconstruction(JOB, "local", [unnumbered]).to_json(), encoding="utf-8")
    _more(bundle, made.topic, 90, seed=23)
    run = run_job(bundle, JOB, spark, available_now=True, queries=("bronze",),
                  reset_from=offsets_file)  # fmt: skip
    assert min(w.batch_id for w in run.bronze_writes) == 0
    # Every record after the rebuilt offsets (other tests of the module produce to the topic
    # too) was written, none skipped as an "already written" batch id.
    after = sum(hi - exact[p] for p, (_lo, hi) in _marks(bundle, made.topic).items())
    assert sum(w.rows + w.quarantined for w in run.bronze_writes) == after >= 90
    assert not any(w.skipped for w in run.bronze_writes)

    seen = _sink_records(bundle)
    assert set(seen) == _topic_records(bundle, made.topic), "a record is missing"
    assert len(seen) == len(set(seen)), "a record was written twice"


def test_bronze_rebuilt_from_a_consumer_group_one_batch_behind_writes_nothing_twice(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    """The job died after a batch's Delta commit and before mirroring its offsets to the group:
    the group is a batch behind; the rebuilt offsets start where the sink stands."""
    bundle = _bundle(copy, made.topic)
    q = _query(bundle, "bronze")
    ck = read_checkpoint(q.checkpoint)
    committed = ck.committed_offsets()
    assert committed is not None and ck.last_committed is not None
    exact = {int(p): o for p, o in committed.sources[0][made.topic].items()}
    behind = read_checkpoint(q.checkpoint).offsets[-2].sources[0][made.topic]
    assert any(int(o) < exact[int(p)] for p, o in behind.items())
    group = f"{BRONZE}-{uuid.uuid4().hex[:6]}"  # this test's own group (the real one is shared)
    kafka = bundle.runtime.kafka_for("claims")
    c = Consumer(client_config(kafka.bootstrap_servers, {**kafka_conf(bundle), "group.id": group}))
    try:
        c.commit(offsets=[TopicPartition(made.topic, int(p), int(o)) for p, o in behind.items()],
                 asynchronous=False)  # fmt: skip
    finally:
        c.close()

    found = from_consumer_group(bundle, JOB, dataclasses.replace(q, query_name=group))
    assert found is not None and found.source == "consumer-group"
    assert {int(p): o for p, o in found.starting_offsets[made.topic].items()} == exact
    assert "moved up to the sink's newest Kafka coordinates" in found.why


def test_recover_rebuilds_only_the_lost_checkpoint(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    """`jobs/stream.py --recover` (the deploy DAG's recover action): bronze lost, gold intact."""
    bundle = _bundle(copy, made.topic)
    cks = _checkpoints(bundle)
    guard(bundle, JOB, event="start")
    shutil.rmtree(cks["bronze"])
    said: list[str] = []
    path = recovery_offsets(bundle, JOB, say=said.append)
    queries = json.loads(path.read_text())["queries"]
    assert list(queries) == [BRONZE] and queries[BRONZE]["source"] == "delta-commit"
    assert f"[{JOB}] recovery: {JOB} keeps its checkpoint" in said
    gold_id = (cks["gold"] / "metadata").read_text()
    run_job(bundle, JOB, spark, available_now=True, reset_from=path)
    assert (cks["gold"] / "metadata").read_text() == gold_id  # gold went on from its own
    seen = _sink_records(bundle)
    assert len(seen) == len(set(seen)) and set(seen) == _topic_records(bundle, made.topic)


# --- a lost gold checkpoint: restored from a backup, never rebuilt ---------------------------


def test_lost_gold_checkpoint_says_restore_and_the_restore_works(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    bundle = _bundle(copy, made.topic)
    path = _bundle_file(copy, made.topic)
    cks = _checkpoints(bundle)
    guard(bundle, JOB, event="start")
    cli = CliRunner()
    result = cli.invoke(app, ["checkpoint", "backup", "--job", JOB, "-b", str(path), "-t", "local"])
    assert result.exit_code == 0, result.output
    shutil.rmtree(cks["gold"])  # the gold checkpoint (offsets + window state) is lost

    fix = f"streamops checkpoint restore --job {JOB} --target local"
    with pytest.raises(CheckpointGuardError) as refused:
        guard(bundle, JOB, event="start")
    msg = str(refused.value)
    assert f"gold query '{JOB}'" in msg and "neither can be rebuilt from Kafka offsets" in msg
    assert fix in msg and "reconstruct" not in msg
    with pytest.raises(CheckpointError, match=fix):
        recovery_offsets(bundle, JOB, say=lambda _m: None)
    [problem] = check_before_deploy(bundle, JOB)
    assert fix in problem.fix
    assert fix in reconstruct(bundle, JOB).skipped[JOB]
    # Kafka offsets for gold in a reset file are refused too, naming the same fix.
    wrong = copy / "gold-offsets.json"
    wrong.write_text(json.dumps({"job": JOB, "queries": {JOB: {"startingOffsets": {
        made.topic: {"0": 0, "1": 0}}}}}))  # fmt: skip
    with pytest.raises(CheckpointGuardError, match="reads the bronze table, not Kafka"):
        guard(bundle, JOB, event="start", reset_from=wrong)

    # The fix the message names: restore puts back only the lost checkpoint.
    result = cli.invoke(
        app, ["checkpoint", "restore", "--job", JOB, "-b", str(path), "-t", "local"]
    )
    assert result.exit_code == 0, result.output
    assert (
        f"{BRONZE}: keeps its checkpoint" in result.output and f"{JOB}: restored" in result.output
    )
    gold_batches = _batches(cks["gold"], "commits")
    _more(bundle, made.topic, 100, seed=10)
    run = run_job(bundle, JOB, spark, available_now=True)
    assert min(b.batch_id for b in run.batches) == gold_batches[-1] + 1  # gold went on
    seen = _sink_records(bundle)
    assert len(seen) == len(set(seen)) and set(seen) == _topic_records(bundle, made.topic)
    # Gold holds every on-time event: only the two dropped before the loss are missing.
    assert sum(m.missed for m in late_report(bundle, JOB)) == made.dropped


def test_gold_restored_from_a_backup_older_than_its_table_loses_no_window(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    """The newest backup is older than the gold table: gold goes on from the backup's batch,
    re-reads bronze from there under new batch boundaries, and the batch ids the table already
    holds are written again (above the table's transaction version), not skipped."""
    bundle = _bundle(copy, made.topic)
    job = bundle.job(JOB)
    gold = _query(bundle, "gold")
    guard(bundle, JOB, event="start")
    saved = bk.backup(gold.checkpoint, gold.query_name, bk.backup_root(bundle), retention=3)
    _more(bundle, made.topic, 120, seed=31)
    run_job(bundle, JOB, spark, available_now=True)  # the table moves past the backup
    shutil.rmtree(gold.checkpoint)
    path = _bundle_file(copy, made.topic)
    restored = CliRunner().invoke(
        app, ["checkpoint", "restore", "--job", JOB, "-b", str(path), "-t", "local"]
    )
    assert restored.exit_code == 0, restored.output
    assert saved.batch is not None and _batches(Path(gold.checkpoint), "commits")[-1] == saved.batch
    _more(bundle, made.topic, 80, seed=32)

    run = run_job(bundle, JOB, spark, available_now=True)
    assert min(b.batch_id for b in run.batches) <= saved.batch + 1  # gold went on from the backup
    assert not [w for w in run.writes if w.skipped and w.batch_id != saved.batch + 1]
    bronze_rows = DeltaTable(bundle.bronze_location(job)).to_pyarrow_table(columns=["claim_id"])
    counted = sum(
        DeltaTable(bundle.table_location(job.sink)).to_pyarrow_table().column("claims").to_pylist()
    )
    missed = sum(m.missed for m in late_report(bundle, JOB))
    assert missed == made.dropped  # only the two too-late events dropped before the loss
    assert counted + missed == bronze_rows.num_rows


def test_gold_rebuilt_from_bronze_when_no_backup_is_left(
    copy: Path, made: Made, spark: SparkSession
) -> None:
    """The other way back the message names: gold's table and checkpoint moved aside, gold
    re-reads bronze from its first version and holds every on-time event again."""
    bundle = _bundle(copy, made.topic)
    job = bundle.job(JOB)
    gold = _query(bundle, "gold")
    guard(bundle, JOB, event="start")
    shutil.rmtree(gold.checkpoint)
    with pytest.raises(CheckpointGuardError, match="move its sink table"):
        guard(bundle, JOB, event="start")
    shutil.move(bundle.table_location(job.sink), copy / "gold-table-aside")

    run = run_job(bundle, JOB, spark, available_now=True)
    assert run.batches[0].batch_id == 0  # gold started over (bronze went on from its own)
    bronze_events = DeltaTable(bundle.bronze_location(job)).to_pyarrow_table(columns=["claim_id"])
    counted = sum(
        DeltaTable(bundle.table_location(job.sink)).to_pyarrow_table().column("claims").to_pylist()
    )
    missed = sum(m.missed for m in late_report(bundle, JOB))
    assert counted + missed == bronze_events.num_rows and missed <= made.dropped


# --- backups, Azurite, late report -------------------------------------------------------------


def test_backup_and_restore(copy: Path, made: Made) -> None:
    bundle = _bundle(copy, made.topic)
    root = bk.backup_root(bundle)
    for q in queries_of(bundle, JOB):
        ck = Path(q.checkpoint)
        first = bk.backup(q.checkpoint, q.query_name, root, retention=2)
        assert first.files > 0 and check(first.path).exit_code == 0
        assert first.batch == _batches(ck, "commits")[-1]
        for _ in range(2):
            bk.backup(q.checkpoint, q.query_name, root, retention=2)
        assert len(bk.list_backups(root, q.query_name)) == 2  # retention
        before = _digest(ck)
        shutil.rmtree(ck)
        n = bk.restore(bk.list_backups(root, q.query_name)[-1], q.checkpoint)
        assert n > 0 and check(q.checkpoint).exit_code == 0
        assert _digest(ck) == {k: v for k, v in before.items() if not Path(k).name.startswith(".")}
        with pytest.raises(CheckpointError, match="not empty"):
            bk.restore(bk.list_backups(root, q.query_name)[-1], q.checkpoint)
    # A broken checkpoint is not backed up; the older backups stay.
    (Path(_query(bundle, "gold").checkpoint) / "metadata").unlink()
    with pytest.raises(CheckpointError, match="CK101"):
        bk.backup(_query(bundle, "gold").checkpoint, JOB, root, retention=2)
    assert len(bk.list_backups(root, JOB)) == 2


def test_check_and_backup_on_azurite(copy: Path, made: Made, azurite: AzuriteEndpoint) -> None:
    import adlfs

    opts = azurite.adlfs_options()
    fs = adlfs.AzureBlobFileSystem(**opts)
    container = f"ck{uuid.uuid4().hex[:10]}"
    fs.mkdir(container)
    for kind, ck in _checkpoints(_bundle(copy, made.topic)).items():
        fs.put(str(ck), f"{container}/ck/{kind}", recursive=True)
        url = f"abfs://{container}/ck/{kind}"
        report = check(url, opts)
        assert report.exit_code == 0, report.render()
        made_backup = bk.backup(url, kind, f"abfs://{container}/backups", retention=3,
                                storage_options=opts)  # fmt: skip
        assert check(made_backup.path, opts).exit_code == 0
        fs.rm(f"{container}/ck/{kind}/metadata")
        assert "CK101" in _codes(url, storage_options=opts)
    assert check(f"abfs://{container}/missing", opts).exit_code == 2


def test_late_report_reads_the_spark_written_tables(copy: Path, made: Made) -> None:
    """Bronze and gold as Spark wrote them, read with delta-rs: exactly the dropped events."""
    bundle = _bundle(copy, made.topic)
    missed = late_report(bundle, JOB)
    assert sum(m.missed for m in missed) == made.dropped
    assert {(m.window_start, m.group["claim_type"], m.group["region"]) for m in missed} == set(
        made.dropped_windows
    )
    args = ["late-report", "--job", JOB, "-b", str(_bundle_file(copy, made.topic)), "-t", "local"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert sum(w["missed"] for w in json.loads(result.output)) == made.dropped
