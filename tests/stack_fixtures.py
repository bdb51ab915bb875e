"""Pytest plugin: one real local stack (Apache Kafka broker + Azurite) per test session."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamops.bundle.resolved import ENV_LOCAL_STACK
from streamops.localstack import AzuriteEndpoint, KafkaEndpoints, LocalStack

PROJECT = Path(__file__).resolve().parents[1]
CACHE_DIR = PROJECT / ".cache"
STACKS_DIR = CACHE_DIR / "test-stack"


def _reap_stale_stacks() -> None:
    # Services run detached, so a test run killed hard leaves them behind; its pid names them.
    if not STACKS_DIR.is_dir():
        return
    for state_dir in STACKS_DIR.iterdir():
        owner = state_dir.name.split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            LocalStack(CACHE_DIR, state_dir=state_dir).down()
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """A broker and Azurite started once for the session, on free ports, stopped at the end."""
    _reap_stale_stacks()
    # Own state dir per session, so tests never adopt or stop a developer's `streamops local up`
    # nor a concurrent test run's stack.
    state_dir = STACKS_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stack = LocalStack(CACHE_DIR, state_dir=state_dir)
    try:
        stack.up()
        # Bundles loaded from here on mean this stack's broker by 'embedded' (SASL included),
        # and so do the job processes the tests start.
        os.environ[ENV_LOCAL_STACK] = str(stack.state_dir)
        yield stack
    finally:
        os.environ.pop(ENV_LOCAL_STACK, None)
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def bootstrap_servers(local_stack: LocalStack) -> str:
    """bootstrap.servers of the session's broker."""
    return local_stack.broker_bootstrap()


@pytest.fixture(scope="session")
def kafka_endpoints(local_stack: LocalStack) -> KafkaEndpoints:
    """Both client listeners (PLAINTEXT, SASL_PLAINTEXT) of the session's broker, with the login."""
    return local_stack.broker_endpoints()


@pytest.fixture(scope="session")
def azurite(local_stack: LocalStack) -> AzuriteEndpoint:
    """The session's Azurite endpoint."""
    return local_stack.azurite()


@pytest.fixture
def new_topic(bootstrap_servers: str) -> Callable[..., str]:
    """Factory: new_topic(partitions=1, prefix="t", config=None) creates a uniquely named topic
    (with topic-level `config`), returns it.

    The broker does not create topics on first use: a test creates each topic it produces to.
    """
    # Quiet: the client outlives the broker at the end of the session.
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})

    def make(partitions: int = 1, prefix: str = "t", config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        new = NewTopic(name, num_partitions=partitions, config=config or {})
        futures = admin.create_topics([new])
        futures[name].result(timeout=30)
        return name

    return make
