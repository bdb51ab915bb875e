"""The local stack against the real tansu broker, Azurite, deltalake and adlfs."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import adlfs
import pyarrow as pa
import pytest
from azure.storage.blob import BlobServiceClient
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from deltalake import DeltaTable, write_deltalake

from streamops.errors import LocalStackError
from streamops.localstack import AzuriteEndpoint, LocalStack
from tests.stack_fixtures import CACHE_DIR


def _pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_lifecycle_up_is_idempotent_and_down_stops(tmp_path: Path) -> None:
    stack = LocalStack(CACHE_DIR, state_dir=tmp_path)
    lines: list[str] = []
    try:
        first = stack.up(progress=lines.append)
        assert [s.name for s in first] == ["broker", "azurite"]
        assert any(line.startswith("broker ready in") for line in lines)
        assert all(s.log.is_file() and s.log.parent == tmp_path / "logs" for s in first)

        again = stack.up()
        assert [s.pid for s in again] == [s.pid for s in first]
        # A second process (a later `streamops local up`) adopts them from state.json too.
        adopted = LocalStack(CACHE_DIR, state_dir=tmp_path).up()
        assert [(s.pid, s.port) for s in adopted] == [(s.pid, s.port) for s in first]

        statuses = {s.name: s for s in stack.status()}
        assert statuses["broker"].running and statuses["azurite"].running
        assert statuses["broker"].address == first[0].address == stack.broker_bootstrap()
        assert stack.azurite().blob_url == f"http://{first[1].address}/devstoreaccount1"

        # A crashed service shows as down, and up() replaces only that one.
        os.kill(first[0].pid, signal.SIGKILL)
        assert not {s.name: s for s in stack.status()}["broker"].running
        with pytest.raises(LocalStackError, match="streamops local up"):
            stack.broker_bootstrap()
        restarted = stack.up()
        assert restarted[0].pid != first[0].pid
        assert restarted[1].pid == first[1].pid
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["azurite", "broker"]
    assert all(_pid_gone(s.pid) for s in restarted)
    assert not any(s.running for s in stack.status())
    assert stack.down() == []


def test_nothing_running_raises_with_fix(tmp_path: Path) -> None:
    stack = LocalStack(CACHE_DIR, state_dir=tmp_path)
    with pytest.raises(LocalStackError, match="streamops local up"):
        stack.broker_bootstrap()
    with pytest.raises(LocalStackError, match="streamops local up"):
        stack.azurite()
    assert [(s.name, s.running) for s in stack.status()] == [
        ("broker", False),
        ("azurite", False),
    ]


def test_missing_azurite_names_make_setup(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "empty-cache", state_dir=tmp_path / "state")
    with pytest.raises(LocalStackError, match=r"not installed in \.cache/node.*make setup"):
        stack.up(services=("azurite",))
    assert stack.status()[1].running is False


def test_unknown_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="choose from broker, azurite"):
        LocalStack(CACHE_DIR, state_dir=tmp_path).up(services=("kafka",))


def test_session_stack_reports_running(local_stack: LocalStack) -> None:
    assert all(s.running and s.pid for s in local_stack.status())


def test_produce_and_consume_1000_records(
    bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=4)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
    sent = {f"value-{i}" for i in range(1000)}
    for i in range(1000):
        producer.produce(topic, key=f"key-{i}", value=f"value-{i}")
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    got: list[str] = []
    partitions: set[int] = set()
    try:
        for _ in range(600):
            if len(got) >= len(sent):
                break
            for msg in consumer.consume(num_messages=500, timeout=0.1):
                value, partition = msg.value(), msg.partition()
                assert msg.error() is None and value is not None and partition is not None
                got.append(value.decode())
                partitions.add(partition)
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)
    assert partitions == {0, 1, 2, 3}


def test_delta_table_on_azurite(azurite: AzuriteEndpoint) -> None:
    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    url = f"az://{container}/events"
    opts = azurite.deltalake_storage_options()

    write_deltalake(url, pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), storage_options=opts)
    write_deltalake(url, pa.table({"id": [4], "v": ["d"]}), mode="append", storage_options=opts)

    table = DeltaTable(url, storage_options=opts)
    assert table.version() == 1
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [1, 2, 3, 4]

    fs = adlfs.AzureBlobFileSystem(**azurite.adlfs_options())
    files = fs.find(f"{container}/events")
    assert f"{container}/events/_delta_log/00000000000000000000.json" in files
    assert f"{container}/events/_delta_log/00000000000000000001.json" in files
    assert sum(f.endswith(".parquet") for f in files) == 2
