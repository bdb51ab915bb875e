"""The local stack against the real Apache Kafka broker (KRaft), Azurite, deltalake and adlfs."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adlfs
import pyarrow as pa
import pytest
from azure.storage.blob import BlobServiceClient
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner

from streamops.cli import app
from streamops.errors import LocalStackError
from streamops.kafka.offsets import client_config, watermarks
from streamops.localstack import (
    AzuriteEndpoint,
    KafkaEndpoints,
    LocalStack,
    ServiceStatus,
    broker,
    process,
)
from tests.stack_fixtures import CACHE_DIR

LISTENERS = {"PLAINTEXT", "SASL_PLAINTEXT", "CONTROLLER"}


def _pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _consume(conf: dict[str, Any], topic: str, partitions: int, want: int) -> list[Any]:
    consumer = Consumer(
        {
            **conf,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got: list[Any] = []
    try:
        for _ in range(600):
            if len(got) >= want:
                break
            for msg in consumer.consume(num_messages=500, timeout=0.1):
                assert msg.error() is None, msg.error()
                got.append(msg)
    finally:
        consumer.close()
    return got


def test_lifecycle_up_is_idempotent_and_down_stops(tmp_path: Path) -> None:
    stack = LocalStack(CACHE_DIR, state_dir=tmp_path)
    lines: list[str] = []
    restarted = []
    try:
        first = stack.up(progress=lines.append)
        assert [s.name for s in first] == ["broker", "azurite"]
        assert any(line.startswith("broker ready in") for line in lines)
        assert all(s.log.is_file() and s.log.parent == tmp_path / "logs" for s in first)
        assert set(first[0].addresses) == LISTENERS
        assert first[0].addresses["PLAINTEXT"] == first[0].address
        assert len(set(first[0].addresses.values())) == 3

        ep = stack.broker_endpoints()
        assert ep.plaintext == stack.broker_bootstrap() == first[0].address
        assert ep.sasl == first[0].addresses["SASL_PLAINTEXT"]
        assert (ep.sasl_mechanism, ep.username) == ("PLAIN", "streamops")
        assert len(ep.password) >= 24
        # The password is in state.json (owner-only) and server.properties, nowhere else.
        assert stat.S_IMODE(stack.state_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(broker.config_file(tmp_path).stat().st_mode) == 0o600
        assert ep.password not in first[0].log.read_text()
        assert ep.password not in process.cmdline(first[0].pid)
        assert "Kafka Server started" in first[0].log.read_text()

        again = stack.up()
        assert [s.pid for s in again] == [s.pid for s in first]
        # A second process (a later `streamops local up`) adopts them from state.json too.
        adopted = LocalStack(CACHE_DIR, state_dir=tmp_path).up()
        assert [(s.pid, s.port) for s in adopted] == [(s.pid, s.port) for s in first]
        assert LocalStack(CACHE_DIR, state_dir=tmp_path).broker_endpoints() == ep

        statuses = {s.name: s for s in stack.status()}
        assert statuses["broker"].running and statuses["azurite"].running
        assert statuses["broker"].address == first[0].address == stack.broker_bootstrap()
        assert dict(statuses["broker"].addresses) == dict(first[0].addresses)
        assert stack.azurite().blob_url == f"http://{first[1].address}/devstoreaccount1"

        # A crashed service shows as down, and up() replaces only that one.
        os.kill(first[0].pid, signal.SIGKILL)
        assert not {s.name: s for s in stack.status()}["broker"].running
        with pytest.raises(LocalStackError, match="streamops local up"):
            stack.broker_bootstrap()
        with pytest.raises(LocalStackError, match="streamops local up"):
            stack.broker_endpoints()
        restarted = stack.up()
        assert restarted[0].pid != first[0].pid
        assert restarted[1].pid == first[1].pid
        # A new start: new credentials, and the old password no longer logs in.
        assert stack.broker_endpoints().password != ep.password
        now = stack.broker_endpoints()
        assert broker.answers(now)
        assert not broker.answers(
            KafkaEndpoints(now.plaintext, now.sasl, "PLAIN", "streamops", ep.password)
        )
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["azurite", "broker"]
    assert all(_pid_gone(s.pid) for s in restarted)
    assert not any(s.running for s in stack.status())
    assert stack.down() == []
    assert "Stopping SharedServer" in restarted[0].log.read_text()


def test_cli_up_status_json_down(tmp_path: Path) -> None:
    # A project of its own: bundle.yml locates .cache; the installed jars and Azurite are linked.
    (tmp_path / "bundle.yml").write_text("")
    cache = tmp_path / ".cache"
    cache.mkdir()
    for part in ("jvm", "node"):
        (cache / part).symlink_to(CACHE_DIR / part)
    bundle = str(tmp_path / "bundle.yml")
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["local", "up", "--bundle", bundle])
        assert up.exit_code == 0, up.output
        stack = LocalStack(cache)
        ep = stack.broker_endpoints()
        assert ep.sasl in up.output and ep.plaintext in up.output

        text = runner.invoke(app, ["local", "status", "--bundle", bundle])
        assert text.exit_code == 0, text.output
        assert "SASL_PLAINTEXT " + ep.sasl in text.output

        res = runner.invoke(app, ["local", "status", "--json", "--bundle", bundle])
        assert res.exit_code == 0, res.output
        assert ep.password not in res.output and ep.password not in up.output
        got = {s["name"]: s for s in json.loads(res.output)}
        assert list(got) == ["broker", "azurite"]
        b = got["broker"]
        assert set(b) == {"name", "state", "addresses", "pid", "log"}
        assert b["state"] == "running" and isinstance(b["pid"], int)
        assert b["addresses"]["PLAINTEXT"] == ep.plaintext
        assert b["addresses"]["SASL_PLAINTEXT"] == ep.sasl
        assert set(b["addresses"]) == LISTENERS
        assert b["log"] == str(cache / "localstack" / "logs" / "broker.log")
        assert got["azurite"]["addresses"] == {"blob": stack.azurite().blob_url.split("/")[2]}
    finally:
        down = runner.invoke(app, ["local", "down", "--bundle", bundle])
    assert down.exit_code == 0, down.output
    assert "broker   stopped" in down.output
    res = runner.invoke(app, ["local", "status", "--json", "--bundle", bundle])
    assert res.exit_code == 1
    assert [(s["name"], s["state"], s["pid"], s["addresses"]) for s in json.loads(res.output)] == [
        ("broker", "stopped", None, {}),
        ("azurite", "stopped", None, {}),
    ]


@pytest.fixture
def foreign_process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_stale_pid_is_neither_adopted_nor_stopped(
    tmp_path: Path, local_stack: LocalStack, foreign_process: subprocess.Popen[bytes]
) -> None:
    session = {s.name: s for s in local_stack.up()}
    ep = local_stack.broker_endpoints()

    def rec(name: str, svc_pid: int, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "pid": svc_pid,
            "host": "127.0.0.1",
            "port": port,
            "log": str(tmp_path / "logs" / f"{name}.log"),
            "listeners": dict(session["broker"].addresses),
            "sasl": {"mechanism": "PLAIN", "username": "streamops", "password": ep.password},
        }

    # This state dir records pids that now belong to others: the session's own broker (another
    # state dir's kafka.Kafka, answering on the recorded ports) and an unrelated process.
    process.StateFile(tmp_path / "state.json").write(
        {
            "broker": rec("broker", session["broker"].pid, session["broker"].port),
            "azurite": rec("azurite", foreign_process.pid, session["azurite"].port),
        }
    )
    stack = LocalStack(CACHE_DIR, state_dir=tmp_path)
    assert [(s.name, s.running) for s in stack.status()] == [
        ("broker", False),
        ("azurite", False),
    ]
    with pytest.raises(LocalStackError, match="is gone or does not answer"):
        stack.broker_endpoints()
    assert stack.down() == []
    assert foreign_process.poll() is None
    assert all(s.running for s in local_stack.status())
    assert local_stack.broker_endpoints() == ep


def test_nothing_running_raises_with_fix(tmp_path: Path) -> None:
    stack = LocalStack(CACHE_DIR, state_dir=tmp_path)
    with pytest.raises(LocalStackError, match="streamops local up"):
        stack.broker_bootstrap()
    with pytest.raises(LocalStackError, match="streamops local up"):
        stack.broker_endpoints()
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


def test_missing_broker_jars_name_make_setup(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "empty-cache", state_dir=tmp_path / "state")
    with pytest.raises(LocalStackError, match=r"jars are not installed.*Fix: run `make setup`"):
        stack.up(services=("broker",))
    assert stack.status()[0].running is False


def test_damaged_broker_jars_are_one_line_naming_make_setup(tmp_path: Path) -> None:
    jars = tmp_path / "cache" / "jvm" / "kafka"
    jars.mkdir(parents=True)
    (jars / "kafka_2.13-4.1.1.jar").write_bytes(b"not a jar")
    stack = LocalStack(tmp_path / "cache", state_dir=tmp_path / "state")
    with pytest.raises(LocalStackError) as info:
        stack.up(services=("broker",))
    msg = str(info.value)
    assert msg.startswith("formatting the broker's storage failed (exit 1): ")
    assert "kafka.tools.StorageTool" in msg and "run `make setup`" in msg
    assert "\n" not in msg and "\tat " not in msg
    assert "StorageTool" in (tmp_path / "state" / "logs" / "broker.log").read_text()


def test_missing_java_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalStackError, match=r"`java` is not on PATH.*openjdk-17"):
        LocalStack(CACHE_DIR, state_dir=tmp_path / "state").up(services=("broker",))


def test_unknown_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="choose from broker, azurite"):
        LocalStack(CACHE_DIR, state_dir=tmp_path).up(services=("kafka",))


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_taken_at_bind_is_retried_on_new_ports(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = process.free_ports
    calls: list[list[int]] = []

    def first_sasl_port_taken(host: str, count: int) -> list[int]:
        ports = real(host, count)
        if not calls:
            ports[1] = taken_port  # the SASL listener: the broker binds it after formatting
        calls.append(ports)
        return ports

    monkeypatch.setattr(process, "free_ports", first_sasl_port_taken)
    stack = LocalStack(CACHE_DIR, state_dir=tmp_path)
    lines: list[str] = []
    try:
        [svc] = stack.up(services=("broker",), progress=lines.append)
        assert f"broker could not bind 127.0.0.1:{taken_port} (taken meanwhile)" in "\n".join(lines)
        assert len(calls) == 2 and svc.addresses["SASL_PLAINTEXT"] != f"127.0.0.1:{taken_port}"
        assert stack.status()[0].running
    finally:
        stack.down()


def test_port_taken_every_time_is_one_clear_error(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = process.free_ports

    def always_taken(host: str, count: int) -> list[int]:
        ports = real(host, count)
        ports[0] = taken_port
        return ports

    monkeypatch.setattr(process, "free_ports", always_taken)
    monkeypatch.setattr("streamops.localstack._START_ATTEMPTS", 1)
    with pytest.raises(LocalStackError) as info:
        LocalStack(CACHE_DIR, state_dir=tmp_path).up(services=("broker",))
    msg = str(info.value)
    assert f"broker could not bind 127.0.0.1:{taken_port}: another process took the port" in msg
    assert "Fix: run `streamops local up` again" in msg
    assert "\n" not in msg


def test_log_tail_drops_java_stack_frames(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    log.write_text(
        "[t] ERROR Exiting Kafka (kafka.Kafka$)\n"
        "java.lang.RuntimeException: boom\n"
        "\tat kafka.server.BrokerServer.startup(BrokerServer.scala:587) ~[kafka.jar:?]\n"
        "Caused by: java.net.BindException: Address already in use\n"
        "\t... 6 more\n"
        "[t] INFO Stopping SharedServer\n"
    )
    assert process.tail(log).splitlines() == [
        "    [t] ERROR Exiting Kafka (kafka.Kafka$)",
        "    java.lang.RuntimeException: boom",
        "    [t] INFO Stopping SharedServer",
    ]


def test_endpoints_repr_and_status_json_hold_no_password() -> None:
    ep = KafkaEndpoints("127.0.0.1:1", "127.0.0.1:2", "PLAIN", "streamops", "s3cret-pw")
    assert "s3cret-pw" not in repr(ep) and "s3cret-pw" not in str(ep) and "'***'" in repr(ep)
    assert ep.sasl_config()["sasl.password"] == "s3cret-pw"
    status = ServiceStatus("broker", True, "127.0.0.1:1", 7, Path("b.log"), {"PLAINTEXT": "x:1"})
    assert status.as_json() == {
        "name": "broker",
        "state": "running",
        "addresses": {"PLAINTEXT": "x:1"},
        "pid": 7,
        "log": "b.log",
    }


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

    got = _consume({"bootstrap.servers": bootstrap_servers}, topic, 4, len(sent))
    assert sorted(m.value().decode() for m in got) == sorted(sent)
    assert {m.partition() for m in got} == {0, 1, 2, 3}


def test_sasl_listener_produce_and_consume(kafka_endpoints: KafkaEndpoints) -> None:
    conf = kafka_endpoints.sasl_config()
    assert conf["bootstrap.servers"] != kafka_endpoints.plaintext
    topic = f"sasl-{uuid.uuid4().hex[:12]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=2)])[topic].result(timeout=30)
    producer = Producer({**conf, "linger.ms": 5})
    for i in range(200):
        producer.produce(topic, key=f"k{i}", value=f"v{i}", partition=i % 2)
    assert producer.flush(30) == 0

    got = _consume(conf, topic, 2, 200)
    assert sorted(m.value().decode() for m in got) == sorted(f"v{i}" for i in range(200))
    # The same topic through the PLAINTEXT listener: one broker, two doors.
    assert len(_consume(kafka_endpoints.plaintext_config(), topic, 2, 200)) == 200


def test_sasl_listener_refuses_a_wrong_password(kafka_endpoints: KafkaEndpoints) -> None:
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {
        **kafka_endpoints.sasl_config(),
        "sasl.password": kafka_endpoints.password + "x",
        "error_cb": errors.append,
        "log_level": 0,
    }
    admin = AdminClient(conf)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    admin.poll(1)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert "Invalid username or password" in " ".join(e.str() for e in errors)
    assert not broker.answers(
        KafkaEndpoints(
            kafka_endpoints.plaintext,
            kafka_endpoints.sasl,
            "PLAIN",
            "streamops",
            kafka_endpoints.password + "x",
        )
    )
    assert broker.answers(kafka_endpoints)


def test_end_offsets_exact_right_after_batched_produce(
    bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(4, prefix="ends")
    counts = {0: 5000, 1: 3001, 2: 1, 3: 0}
    # Long linger: the producer sends few large batches.
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 200, "acks": "all"})
    for p, n in counts.items():
        for i in range(n):
            producer.produce(topic, value=f"{p}:{i}".encode(), partition=p)
            if i % 1000 == 0:
                producer.poll(0)
    assert producer.flush(30) == 0
    consumer = Consumer(client_config(bootstrap_servers))
    try:
        assert watermarks(consumer, topic, counts) == {p: (0, n) for p, n in counts.items()}
    finally:
        consumer.close()


def test_delete_records_moves_the_low_watermark(
    bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2, prefix="retention")
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
    for i in range(100):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.delete_records([TopicPartition(topic, 0, 40)], operation_timeout=10)
    [deleted] = [f.result(timeout=30) for f in futures.values()]
    assert deleted.low_watermark == 40

    consumer = Consumer(client_config(bootstrap_servers))
    try:
        assert watermarks(consumer, topic, [0, 1]) == {0: (40, 50), 1: (0, 50)}
    finally:
        consumer.close()
    got = _consume({"bootstrap.servers": bootstrap_servers}, topic, 2, 60)
    assert len(got) == 60
    assert min(m.offset() for m in got if m.partition() == 0) == 40


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
