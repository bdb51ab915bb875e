"""Checkpoint safety on real checkpoints: one real job run makes them (module fixture); each test
breaks a copy. Integrity codes, read-only check, the reset guard, reconstruction round trip,
backup/restore, and the same reader on Azurite (abfs://)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from streamops.bundle import Bundle
from streamops.checkpoint import backup as bk
from streamops.checkpoint.reader import read_checkpoint
from streamops.checkpoint.reconstruct import reconstruct
from streamops.checkpoint.registry import REGISTRY_NAME, guard, load_registry, registry_path
from streamops.checkpoint.rules import check
from streamops.cli import app
from streamops.deploy.guard import check_before_deploy
from streamops.errors import CheckpointGuardError
from streamops.localstack import AzuriteEndpoint
from streamops.runner.job import run_job
from streamops.demo.sample import generate, produce, utc
from tests.integration.helpers import local_bundle

JOB = "claims_hourly"
START = utc("2026-11-24T06:00:00Z")
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Made:
    root: Path  # holds data/ (tables + checkpoints) of the real run
    topic: str
    produced: int


def _bundle(tmp: Path, bootstrap: str, topic: str, **job: Any) -> Bundle:
    return local_bundle(tmp, bootstrap, topics={"claims": topic},
                        jobs={JOB: {"max_offsets_per_trigger": 150, **job}})  # fmt: skip


@pytest.fixture(scope="module")
def made(
    spark: SparkSession, bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> Made:
    topic = f"claims-ck-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=2)])[topic].result(timeout=30)
    root = tmp_path_factory.mktemp("made")
    bundle = _bundle(root, bootstrap_servers, topic)
    sample = generate(bundle.job(JOB), partitions=2, start=START, span=timedelta(hours=2),
                      n=500, malformed=5, late=3, too_late=2, seed=7)  # fmt: skip
    produce(bootstrap_servers, topic, sample)
    run = run_job(bundle, JOB, spark, available_now=True, timeout_s=300)
    assert len(run.batches) >= 3
    return Made(root, topic, len(sample.events))


@pytest.fixture
def copy(made: Made, tmp_path: Path) -> Path:
    """A private copy of the run's storage (tables + checkpoints); returns the new root."""
    shutil.copytree(made.root / "data", tmp_path / "data")
    return tmp_path


def _gold(root: Path) -> Path:
    return root / "data" / "_checkpoints" / JOB


def _bronze(root: Path) -> Path:
    return root / "data" / "_checkpoints" / f"{JOB}_bronze"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _codes(location: Path | str, **kw: Any) -> set[str]:
    return {f.code for f in check(str(location), **kw).findings}


def test_reader_parses_the_real_checkpoint(copy: Path) -> None:
    ck = read_checkpoint(str(_gold(copy)))
    assert ck.query_id and ck.listing.commits == ck.listing.offsets
    assert ck.offsets[-1].version == "v1" and "batchWatermarkMs" in ck.offsets[-1].metadata
    committed = ck.committed_offsets()
    assert committed is not None and committed.sources[0] is not None
    assert sum(committed.sources[0][next(iter(committed.sources[0]))].values()) > 0
    assert ck.listing.operators and all(op.has_metadata for op in ck.listing.operators)
    assert {s.kind for s in ck.listing.state_files} & {"delta", "snapshot", "zip"}
    assert all(s.startswith("sources/") for s in ck.listing.sources)


def test_healthy_check_is_read_only_and_says_what_it_skipped(copy: Path) -> None:
    gold = _gold(copy)
    before = _digest(gold)
    result = CliRunner().invoke(app, ["checkpoint", "check", str(gold), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["healthy"] and report["findings"] == []
    assert "state" in report["checks_run"]
    assert set(report["checks_skipped"]) == {"broker", "registry"}
    assert _digest(gold) == before


def _break(ck: Path, how: str) -> None:
    offs = sorted(int(p.name) for p in (ck / "offsets").iterdir() if p.name.isdigit())
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
        f = ck / "offsets" / str(last)
        lines = f.read_text(encoding="utf-8").splitlines()
        src = json.loads(lines[2])
        topic = next(iter(src))
        src[topic] = {p: 0 for p in src[topic]}
        f.write_text("\n".join([*lines[:2], json.dumps(src)]), encoding="utf-8")
    elif how == "state_missing":
        for p in (ck / "state" / "0" / "0").iterdir():
            if p.name.split(".")[0] == str(last + 1):
                p.unlink()
    for crc in ck.rglob(".*.crc"):
        crc.unlink()  # Spark would refuse a file whose checksum no longer matches anyway


@pytest.mark.parametrize(
    ("how", "code"),
    [
        ("metadata_missing", "CK101"), ("metadata_garbled", "CK102"), ("offsets_gap", "CK110"),
        ("commits_gap", "CK111"), ("commit_without_offsets", "CK112"), ("uncommitted", "CK113"),
        ("backwards", "CK114"), ("truncated", "CK120"), ("version", "CK121"),
        ("state_missing", "CK130"),
    ],
)  # fmt: skip
def test_each_breakage_has_its_code(copy: Path, how: str, code: str) -> None:
    gold = _gold(copy)
    _break(gold, how)
    before = _digest(gold)
    result = CliRunner().invoke(app, ["checkpoint", "check", str(gold)])
    assert result.exit_code == 1, result.output
    assert code in result.output and "Fix:" in result.output
    assert code in _codes(gold)
    assert _digest(gold) == before


def test_unreadable_location_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["checkpoint", "check", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["unreadable"]


def test_broker_checks_find_a_recreated_topic(copy: Path, bootstrap_servers: str) -> None:
    gold = _gold(copy)
    assert _codes(gold, bootstrap_servers=bootstrap_servers) == set()
    last = max(int(p.name) for p in (gold / "offsets").iterdir() if p.name.isdigit())
    f = gold / "offsets" / str(last)
    lines = f.read_text(encoding="utf-8").splitlines()
    src = json.loads(lines[2])
    topic = next(iter(src))
    f.write_text("\n".join([*lines[:2], json.dumps({topic: {p: 10**6 for p in src[topic]}})]))
    assert "CK141" in _codes(gold, bootstrap_servers=bootstrap_servers)
    f.write_text("\n".join([*lines[:2], json.dumps({"gone-topic-x": src[topic]})]))
    assert "CK142" in _codes(gold, bootstrap_servers=bootstrap_servers)
    assert "broker" in check(str(gold)).checks_skipped


def test_guard_refuses_resets_and_drift(copy: Path, made: Made, bootstrap_servers: str) -> None:
    bundle = _bundle(copy, bootstrap_servers, made.topic)
    Path(registry_path(bundle)).unlink()  # recorded with the original run's absolute paths
    guard(bundle, JOB, event="start")
    rec = load_registry(registry_path(bundle), {})["jobs"][JOB]
    assert rec["gold"]["query_id"] == read_checkpoint(str(_gold(copy))).query_id
    assert rec["gold"]["offsets"] and rec["gold"]["batch"] is not None
    assert check_before_deploy(bundle, JOB) == []

    moved = _bundle(copy, bootstrap_servers, made.topic, checkpoint=str(copy / "elsewhere"))
    with pytest.raises(CheckpointGuardError, match=f"job '{JOB}'.*checkpoint location changed"):
        guard(moved, JOB, event="start")
    problems = check_before_deploy(moved, JOB)
    assert problems and "checkpoint location changed" in problems[0].message

    renamed = _bundle(copy, bootstrap_servers, made.topic, query_name="claims_hourly_v2")
    with pytest.raises(CheckpointGuardError, match="query name changed"):
        guard(renamed, JOB, event="deploy")

    # A reset: the query id recorded at the last start differs from the checkpoint's now.
    (_gold(copy) / "metadata").write_text('{"id":"00000000-0000-0000-0000-000000000000"}')
    with pytest.raises(CheckpointGuardError, match="was reset or replaced"):
        guard(bundle, JOB, event="start")
    result = CliRunner().invoke(
        app, ["checkpoint", "check", str(_gold(copy)), "--bundle", str(bundle.path), "--target",
              "local"],
    )  # fmt: skip
    # (the shipped bundle points elsewhere: the registry check says why it was skipped)
    assert "skipped registry" in result.output

    shutil.rmtree(_gold(copy))
    with pytest.raises(CheckpointGuardError, match="empty or gone while its sink already holds"):
        guard(bundle, JOB, event="start")


def test_reconstruct_round_trip_is_exactly_once(
    copy: Path, made: Made, bootstrap_servers: str, spark: SparkSession
) -> None:
    bundle = _bundle(copy, bootstrap_servers, made.topic)
    Path(registry_path(bundle)).unlink()
    guard(bundle, JOB, event="start")
    shutil.rmtree(_bronze(copy))  # the bronze checkpoint is lost
    with pytest.raises(CheckpointGuardError, match="bronze query"):
        run_job(bundle, JOB, spark, available_now=True, queries=("bronze",))

    rec = reconstruct(bundle, JOB)
    by_name = {q.query_name: q for q in rec.queries}
    bronze = by_name[bundle.job(JOB).bronze_query_name]
    assert bronze.source == "delta-commit" and "consumer-group" in rec.skipped
    offsets_file = copy / "offsets.json"
    offsets_file.write_text(rec.to_json(), encoding="utf-8")

    more = generate(bundle.job(JOB), partitions=2, start=START + timedelta(hours=2),
                    span=timedelta(hours=1), n=120, seed=8, first_index=500)  # fmt: skip
    produce(bootstrap_servers, made.topic, more)
    # Only the bronze query restarts; the gold one keeps its checkpoint.
    gold_offsets = rec.as_dict()["queries"].pop(bundle.job(JOB).query_name, None)
    assert gold_offsets is not None
    data = rec.as_dict()
    del data["queries"][bundle.job(JOB).query_name]
    offsets_file.write_text(json.dumps(data), encoding="utf-8")
    run_job(bundle, JOB, spark, available_now=True, queries=("bronze",), reset_from=offsets_file)

    seen: list[tuple[int, int]] = []
    for uri in (
        bundle.bronze_location(bundle.job(JOB)),
        bundle.quarantine_location(bundle.job(JOB)),
    ):
        t = DeltaTable(uri).to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
        seen += list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))
    assert len(seen) == len(set(seen)), "a record was written twice"
    assert len(seen) == made.produced + len(more.events), "a record is missing"
    resets = load_registry(registry_path(bundle), {})["resets"]
    assert [r["job"] for r in resets] == [JOB]
    assert bronze.query_name in resets[0]["starting_offsets"] and resets[0]["overrode"]
    # The new checkpoint goes on numbering after the sink's last batch.
    commits = read_checkpoint(str(_bronze(copy))).listing.commits
    assert bronze.batch is not None and commits[:2] == (bronze.batch - 1, bronze.batch)


def test_backup_and_restore(copy: Path, made: Made, bootstrap_servers: str) -> None:
    bundle = _bundle(copy, bootstrap_servers, made.topic)
    gold = _gold(copy)
    root = bk.backup_root(bundle)
    first = bk.backup(str(gold), JOB, root, retention=2)
    assert first.files > 0 and check(first.path).exit_code == 0
    for _ in range(2):
        time.sleep(0.01)
        bk.backup(str(gold), JOB, root, retention=2)
    assert len(bk.list_backups(root, JOB)) == 2  # retention
    before = _digest(gold)
    shutil.rmtree(gold)
    n = bk.restore(bk.list_backups(root, JOB)[-1], str(gold))
    assert n > 0 and check(str(gold)).exit_code == 0
    assert {k: v for k, v in _digest(gold).items() if not k.endswith(".crc")} == {
        k: v for k, v in before.items() if not Path(k).name.startswith(".")
    }
    with pytest.raises(Exception, match="not empty"):
        bk.restore(bk.list_backups(root, JOB)[-1], str(gold))


def test_check_and_backup_on_azurite(copy: Path, azurite: AzuriteEndpoint) -> None:
    import adlfs

    opts = azurite.adlfs_options()
    fs = adlfs.AzureBlobFileSystem(**opts)
    container = f"ck{uuid.uuid4().hex[:10]}"
    fs.mkdir(container)
    fs.put(str(_gold(copy)), f"{container}/ck/{JOB}", recursive=True)
    url = f"abfs://{container}/ck/{JOB}"
    report = check(url, opts)
    assert report.exit_code == 0, report.render()
    made_backup = bk.backup(url, JOB, f"abfs://{container}/backups", retention=3,
                            storage_options=opts)  # fmt: skip
    assert check(made_backup.path, opts).exit_code == 0
    fs.rm(f"{container}/ck/{JOB}/metadata")
    assert "CK101" in _codes(url, storage_options=opts)
    assert check(f"abfs://{container}/missing", opts).exit_code == 2
    _ = REGISTRY_NAME


def test_recover_rebuilds_only_the_lost_checkpoint(
    copy: Path, made: Made, bootstrap_servers: str, spark: SparkSession
) -> None:
    """`jobs/stream.py --recover` (the deploy DAG's recover action): bronze lost, gold intact."""
    from streamops.runner.entry import recovery_offsets

    bundle = _bundle(copy, bootstrap_servers, made.topic)
    Path(registry_path(bundle)).unlink()
    guard(bundle, JOB, event="start")
    shutil.rmtree(_bronze(copy))
    said: list[str] = []
    path = recovery_offsets(bundle, JOB, say=said.append)
    queries = json.loads(path.read_text())["queries"]
    assert list(queries) == [bundle.job(JOB).bronze_query_name]
    assert any("keeps its checkpoint" in s for s in said)
    gold_id = (_gold(copy) / "metadata").read_text()
    run_job(bundle, JOB, spark, available_now=True, reset_from=path)
    assert (_gold(copy) / "metadata").read_text() == gold_id  # gold went on from its own
    seen: list[tuple[int, int]] = []
    for uri in (
        bundle.bronze_location(bundle.job(JOB)),
        bundle.quarantine_location(bundle.job(JOB)),
    ):
        t = DeltaTable(uri).to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
        seen += list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))
    # Every record of the topic exactly once (other tests of this module may have added some).
    from confluent_kafka import Consumer

    from streamops.kafka.offsets import client_config, topic_partitions, watermarks

    c = Consumer(client_config(bootstrap_servers))
    ends = watermarks(c, made.topic, topic_partitions(c, made.topic))
    c.close()
    assert len(seen) == len(set(seen)) == sum(hi for _, hi in ends.values())


def test_reconstruct_from_the_mirrored_consumer_group(
    copy: Path, made: Made, bootstrap_servers: str
) -> None:
    """Second in trust: the end offsets the job commits to the group `<query name>`."""
    from confluent_kafka import Consumer
    from deltalake import DeltaTable as DT

    from streamops.checkpoint.reconstruct import from_consumer_group
    from streamops.kafka.offsets import client_config, topic_partitions, watermarks

    bundle = _bundle(copy, bootstrap_servers, made.topic)
    job = bundle.job(JOB)
    tables = (bundle.bronze_location(job), bundle.quarantine_location(job))
    found = from_consumer_group(bundle, JOB, job.bronze_query_name, tables)
    assert found is not None and found.source == "consumer-group"
    c = Consumer(client_config(bootstrap_servers))
    ends = watermarks(c, made.topic, topic_partitions(c, made.topic))
    c.close()
    # The job ran to the end of the topic (other tests may have added records since).
    got = found.starting_offsets[made.topic]
    assert all(0 < got[str(p)] <= hi for p, (_, hi) in ends.items())
    assert found.batch == DT(tables[0]).transaction_version(job.bronze_query_name)
    assert from_consumer_group(bundle, JOB, "no_such_query", tables) is None
