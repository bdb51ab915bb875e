"""Shared fixtures: the local stack (tests.stack_fixtures) and one SparkSession per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytest_plugins = ["tests.stack_fixtures"]

# Spark resolves the machine's hostname otherwise, and warns when it maps to a loopback address.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local[2] SparkSession (streamops_kafka registered) for the whole test session."""
    from streamops.pipeline.session import local_session

    session = local_session(cores=2)
    try:
        yield session
    finally:
        for q in session.streams.active:
            q.stop()
        session.stop()
