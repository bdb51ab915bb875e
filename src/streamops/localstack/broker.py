"""The local Kafka broker: Apache Kafka in KRaft mode, one node that is broker and controller.

Run from the jars `make setup` copies into <cache>/jvm/kafka (pinned by jvm/kafka/pom.xml and
jars.lock). Every start formats an empty storage directory under <state_dir>/broker with a new
cluster id and new free ports, so a broker starts empty, as a test expects. Three listeners, all
on loopback: PLAINTEXT, SASL_PLAINTEXT (SASL/PLAIN, one user whose password is generated per
start) and CONTROLLER (KRaft only, not for clients).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamops.errors import LocalStackError
from streamops.localstack import process

NAME = "broker"
PLAINTEXT = "PLAINTEXT"
SASL = "SASL_PLAINTEXT"
CONTROLLER = "CONTROLLER"
LISTENERS: tuple[str, ...] = (PLAINTEXT, SASL, CONTROLLER)
SASL_MECHANISM = "PLAIN"
USERNAME = "streamops"
MAIN_CLASS = "kafka.Kafka"
# A KRaft broker hands its partitions back and closes its logs on SIGTERM: a few seconds.
STOP_GRACE_S = 20.0
# The first start of a JVM on a busy 2-core machine can be slow; normally ready in ~5 s.
READY_TIMEOUT_S = 60.0
_FORMAT_TIMEOUT_S = 60.0
# The java launcher and the JVM read these; they would override the heap or logging set here.
UNSET_ENV = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS")
_HEAP = ("-Xmx384m", "-Xms128m")
# The format tool runs for a second: a small heap and the quick JIT start it fastest.
_TOOL_JVM = ("-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
_FIX_JAVA = "Fix: install Java 17 (apt-get install -y openjdk-17-jre-headless)"

# log4j2 (properties format). The broker's stdout is its log file (see process.spawn), so one
# console appender keeps Kafka's lines and anything the JVM itself prints in one file, in order.
# WARN for Kafka, INFO for the two loggers that mark start and stop. Kafka's own shutdown hook
# logs while it stops; log4j's hook would close logging before that.
_LOG4J2 = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
logger.shared.name = kafka.server.SharedServer
logger.shared.level = INFO
# The jars from Maven carry no kafka-version.properties; its warning on every start is noise.
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = ERROR
"""


@dataclass(frozen=True, repr=False)
class KafkaEndpoints:
    """How clients reach the local broker: its two client listeners and the SASL login.

    The password is generated at each broker start; repr() masks it, so logging this is safe.
    """

    plaintext: str
    sasl: str
    sasl_mechanism: str
    username: str
    password: str

    def __repr__(self) -> str:
        return (
            f"KafkaEndpoints(plaintext={self.plaintext!r}, sasl={self.sasl!r}, "
            f"sasl_mechanism={self.sasl_mechanism!r}, username={self.username!r}, password='***')"
        )

    __str__ = __repr__

    def plaintext_config(self) -> dict[str, Any]:
        """confluent-kafka settings for the PLAINTEXT listener."""
        return {"bootstrap.servers": self.plaintext}

    def sasl_config(self) -> dict[str, Any]:
        """confluent-kafka settings for the SASL listener, credentials included; never log it."""
        return {
            "bootstrap.servers": self.sasl,
            "security.protocol": SASL,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
        }


def home(state_dir: Path) -> Path:
    """The broker's folder in a stack's state dir: configuration and data."""
    return state_dir / NAME


def config_file(state_dir: Path) -> Path:
    """server.properties of the stack's broker."""
    return home(state_dir) / "server.properties"


def marker(state_dir: Path) -> str:
    """Text in /proc/<pid>/cmdline of this stack's broker, and of no other process."""
    return f"{MAIN_CLASS} {config_file(state_dir)}"


def new_password() -> str:
    """A fresh password for the SASL user."""
    return secrets.token_urlsafe(24)


def endpoints(record: dict[str, Any]) -> KafkaEndpoints | None:
    """The endpoints a state.json record holds; None if it lacks them (an older record)."""
    listeners, sasl = record.get("listeners"), record.get("sasl")
    if not isinstance(listeners, dict) or not isinstance(sasl, dict):
        return None
    try:
        return KafkaEndpoints(
            plaintext=str(listeners[PLAINTEXT]),
            sasl=str(listeners[SASL]),
            sasl_mechanism=str(sasl["mechanism"]),
            username=str(sasl["username"]),
            password=str(sasl["password"]),
        )
    except KeyError:
        return None


def java() -> str:
    """Path of `java`; LocalStackError with the fix if it is not on PATH."""
    path = shutil.which("java")
    if path is None:
        raise LocalStackError(f"the broker needs Java 17, and `java` is not on PATH. {_FIX_JAVA}.")
    return path


def classpath(cache_dir: Path) -> str:
    """-cp value for the jars in <cache>/jvm/kafka; LocalStackError if they are missing."""
    jars = cache_dir / "jvm" / "kafka"
    if not any(jars.glob("kafka_2.13-*.jar")):
        raise LocalStackError(
            f"the Kafka broker's jars are not installed (looked in {jars}). Fix: run `make setup`."
        )
    return f"{jars}/*"


def _write_private(path: Path, text: str) -> None:
    # server.properties holds the SASL password: readable by the owner only.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def server_properties(
    data_dir: Path, addresses: dict[str, str], username: str, password: str
) -> str:
    """server.properties of a single-node KRaft broker with the given listener addresses."""
    listeners = ",".join(f"{name}://{addresses[name]}" for name in LISTENERS)
    advertised = ",".join(f"{name}://{addresses[name]}" for name in (PLAINTEXT, SASL))
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{username}="{password}";'
    )
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"listeners={listeners}",
        f"advertised.listeners={advertised}",
        f"listener.security.protocol.map={PLAINTEXT}:PLAINTEXT,{SASL}:SASL_PLAINTEXT,"
        f"{CONTROLLER}:PLAINTEXT",
        f"inter.broker.listener.name={PLAINTEXT}",
        f"controller.listener.names={CONTROLLER}",
        f"controller.quorum.bootstrap.servers={addresses[CONTROLLER]}",
        f"sasl.enabled.mechanisms={SASL_MECHANISM}",
        f"listener.name.{SASL.lower()}.plain.sasl.jaas.config={jaas}",
        f"log.dirs={data_dir}",
        # One node: internal topics with one replica, or they are never created.
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Topics are created on purpose, with their partition count; a typo must not create one.
        "auto.create.topics.enable=false",
    ]
    return "\n".join(lines) + "\n"


def cluster_id() -> str:
    """A random cluster id in Kafka's Uuid text form (22 characters of URL-safe base64)."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        # Kafka's own generator skips ids starting with '-': they read as a command-line option.
        if not text.startswith("-"):
            return text


def prepare(
    cache_dir: Path, state_dir: Path, addresses: dict[str, str], password: str, log: Path
) -> list[str]:
    """Write the configuration, format empty storage, return the broker's command line."""
    java_bin, cp = java(), classpath(cache_dir)
    folder = home(state_dir)
    data = folder / "data"
    shutil.rmtree(data, ignore_errors=True)
    config = config_file(state_dir)
    _write_private(config, server_properties(data, addresses, USERNAME, password))
    log4j = folder / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    jvm_log = f"-Dlog4j2.configurationFile={log4j}"
    fmt = [java_bin, *_TOOL_JVM, jvm_log, "-cp", cp, "kafka.tools.StorageTool", "format"]
    fmt += ["--standalone", "-t", cluster_id(), "-c", str(config)]
    env = {k: v for k, v in os.environ.items() if k not in UNSET_ENV}
    try:
        done = subprocess.run(
            fmt, capture_output=True, text=True, env=env, timeout=_FORMAT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise LocalStackError(
            f"formatting the broker's storage in {data} took over {_FORMAT_TIMEOUT_S:.0f} s. "
            "Fix: check the machine's load, then run `streamops local up` again."
        ) from None
    except OSError as exc:
        raise LocalStackError(f"the broker cannot start: {java_bin}: {exc}. {_FIX_JAVA}.") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output + "\n")
        if "UnsupportedClassVersionError" in output:
            raise LocalStackError(f"Kafka 4.1 needs Java 17 or newer ({java_bin}). {_FIX_JAVA}.")
        raise LocalStackError(
            f"formatting the broker's storage failed (exit {done.returncode}): "
            f"{process.last_message(output)} "
            f"(output in {log}). Fix: if the jars are damaged run `make setup`."
        )
    return [java_bin, *_HEAP, jvm_log, "-cp", cp, MAIN_CLASS, str(config)]


def bind_failure(log: Path) -> str | None:
    """The address the broker could not bind, if that is why it exited."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        # "...KafkaException: Socket server failed to bind to 127.0.0.1:41231: Address already..."
        _, sep, rest = line.partition("failed to bind to ")
        if sep and "Address already in use" in rest:
            return rest.split(": ", 1)[0]
    return None


def _answers_one(conf: dict[str, Any], timeout: float) -> bool:
    host, _, port = conf["bootstrap.servers"].rpartition(":")
    # A plain connect first: it fails fast and keeps librdkafka from retrying a closed port.
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError):
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # Refused connections and failed logins while probing are expected, not worth a log line.
    admin = AdminClient({**conf, "log_level": 0})
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    # Until the broker is unfenced, metadata lists no broker and topics cannot be created.
    return bool(md.brokers)


def answers(ep: KafkaEndpoints, timeout: float = 1.0) -> bool:
    """Whether clients get metadata on both listeners, the SASL one with the credentials."""
    return _answers_one(ep.plaintext_config(), timeout) and _answers_one(ep.sasl_config(), timeout)
