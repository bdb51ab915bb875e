"""Shared fixtures: the local stack (tests.stack_fixtures) and one SparkSession per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytest_plugins = ["tests.stack_fixtures"]

# Spark resolves the machine's hostname otherwise, and warns when it maps to a loopback address.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Test bundles live in tmp folders: the pinned jars are the checkout's (`make setup`).
JVM_DIR = Path(__file__).resolve().parents[1] / ".cache" / "jvm"
os.environ.setdefault("STREAMOPS_JVM_DIR", str(JVM_DIR))


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local[2] SparkSession (Kafka connector, Delta, RocksDB) for the whole test session."""
    from streamops.pipeline.session import jars_dir, local_session

    session = local_session(jars=jars_dir(JVM_DIR), cores=2)
    try:
        yield session
    finally:
        for q in session.streams.active:
            q.stop()
        session.stop()
