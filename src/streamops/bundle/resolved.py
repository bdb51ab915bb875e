"""The validated bundle resolved for one target: what every stage downstream receives."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

from streamops.bundle.kafka_settings import (
    GeneratedSecret,
    KafkaClientSettings,
    LocalBroker,
    LocalBrokerLookup,
    Secret,
)
from streamops.bundle.models import BundleSpec, Job, KafkaSecurity, Source, Table, Target
from streamops.bundle.runtime import RuntimeContext
from streamops.bundle.storage import environment_login, login_for
from streamops.bundle.tables import TableRef, sibling_name
from streamops.errors import LocalStackError, Problem, UsageError

# The local target may use any reachable Kafka (e.g. the docker-compose stack) in place of the
# embedded broker: this variable wins over `targets.<t>.kafka.bootstrap_servers`.
ENV_BOOTSTRAP = "STREAMOPS_KAFKA_BOOTSTRAP_SERVERS"
# The local target's 'embedded' broker is the one whose stack state lives in this folder (tests
# and the demo run stacks of their own beside a developer's `streamops local up`).
ENV_LOCAL_STACK = "STREAMOPS_LOCAL_STACK_DIR"
# A bundle outside the streamops checkout (tests, a user's own project) names the jars folder.
ENV_JVM_DIR = "STREAMOPS_JVM_DIR"
EMBEDDED = "embedded"
# Set by Databricks on every cluster (e.g. "18.0"): the bundle is loaded by the job itself.
ENV_DATABRICKS_RUNTIME = "DATABRICKS_RUNTIME_VERSION"
# A URL scheme (abfss://, dbfs:/, file:/): two letters at least, so a Windows drive is not one.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle, resolved for one target. Everything downstream takes this."""

    spec: BundleSpec
    target_name: str
    path: Path
    warnings: tuple[Problem, ...] = ()
    bootstrap_override: str | None = None
    # State folder of the local stack whose broker 'embedded' means (default: `streamops local up`'s).
    local_stack_dir: Path | None = None
    # Where `make setup` put the pinned JVM jars (default <bundle dir>/.cache/jvm).
    jvm_dir_override: Path | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Loaded on a Databricks cluster (the job itself), not on Airflow or a laptop.
    on_cluster: bool = False
    # Finds the broker 'embedded' means; handed in by whoever runs clients (with_local_broker).
    local_broker: LocalBrokerLookup | None = field(default=None, repr=False, compare=False)
    # This side's state folder as the loader resolved it (see `state_dir`); None: `cache_dir`.
    state_location: Path | None = None

    def with_local_broker(self, lookup: LocalBrokerLookup) -> Bundle:
        """This bundle, able to resolve 'embedded' through `lookup` (the local stack's)."""
        return dataclasses.replace(self, local_broker=lookup)

    @property
    def target(self) -> Target:
        return self.spec.targets[self.target_name]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def cache_dir(self) -> Path:
        """Where local state lives: venv, broker and Azurite data, logs, local tables."""
        return self.root / ".cache"

    @property
    def state_dir(self) -> Path:
        """Where this machine's side writes its own state (the wheel it builds, pages log, open
        alerts, reports, metrics JSON lines): `targets.<t>.state_dir`; else `cache_dir` on a
        local target; else $STREAMOPS_STATE_DIR or a folder under the OS temp dir (loader)."""
        return self.state_location or self.cache_dir

    @property
    def jvm_dir(self) -> Path:
        """The pinned JVM jars (`spark/`: Kafka connector + Delta; `kafka/`: the local broker)."""
        return self.jvm_dir_override or self.cache_dir / "jvm"

    @property
    def jobs(self) -> dict[str, Job]:
        return self.spec.jobs

    def job(self, name: str) -> Job:
        """The job called `name`, or a usage error listing the jobs there are."""
        try:
            return self.spec.jobs[name]
        except KeyError:
            raise UsageError(
                f"no job '{name}' in {self.path.name}; jobs: {', '.join(self.spec.jobs)}"
                + did_you_mean(name, self.spec.jobs)
            ) from None

    def source(self, job: Job) -> Source:
        return self.spec.sources[job.source]

    def table(self, key: str) -> Table:
        return self.spec.tables[key]

    def _resolve(self, location: str) -> str:
        if _SCHEME.match(location) or location.startswith("/"):
            return location.rstrip("/")
        # Relative paths are relative to bundle.yml (local target only; rules refuse them elsewhere).
        return str((self.root / location).resolve())

    @cached_property
    def storage_root(self) -> str:
        return self._resolve(self.target.storage_root)

    @cached_property
    def checkpoint_root(self) -> str:
        root = self.target.checkpoint_root
        return self._resolve(root) if root else f"{self.storage_root}/_checkpoints"

    def checkpoint_location(self, job: Job) -> str:
        """Derived from the stable query name, so a job never shares or silently moves it."""
        if job.checkpoint:
            return self._resolve(job.checkpoint)
        return f"{self.checkpoint_root}/{job.query_name}"

    def bronze_checkpoint_location(self, job: Job) -> str:
        """Checkpoint of the job's bronze query, beside the gold one and named the same way."""
        return f"{self.checkpoint_location(job).rstrip('/')}_bronze"

    def bronze_location(self, job: Job) -> str:
        """Raw parsed events of the job, with their Kafka coordinates."""
        return f"{self.storage_root}/tables/{job.query_name}_bronze"

    def quarantine_location(self, job: Job) -> str:
        """Events the job could not use, with their raw bytes and the reason."""
        return f"{self.storage_root}/tables/{job.query_name}_quarantine"

    def table_location(self, key: str) -> str:
        t = self.spec.tables[key]
        return self._resolve(t.location) if t.location else f"{self.storage_root}/tables/{key}"

    @property
    def tables_by_name(self) -> bool:
        """Databricks targets address tables by Unity Catalog name; local ones by path."""
        return self.target.mode == "databricks"

    def table_ref(self, key: str) -> TableRef:
        """Table `key` as the job code and compaction address it (streamops.bundle.tables)."""
        name = self.spec.tables[key].name if self.tables_by_name else None
        return TableRef(self.table_location(key), name)

    def bronze_ref(self, job: Job) -> TableRef:
        """The job's bronze table, in the Unity Catalog schema of its sink on Databricks."""
        return self._sibling(job, self.bronze_location(job), f"{job.query_name}_bronze")

    def quarantine_ref(self, job: Job) -> TableRef:
        return self._sibling(job, self.quarantine_location(job), f"{job.query_name}_quarantine")

    def _sibling(self, job: Job, location: str, table: str) -> TableRef:
        if not self.tables_by_name:
            return TableRef(location)
        return TableRef(location, sibling_name(self.spec.tables[job.sink].name, table))

    @cached_property
    def runtime(self) -> RuntimeContext:
        """Kafka settings per source and storage logins per location, resolved on first use.

        Lazy so that loading a bundle (DAG parsing, `validate`) never needs the local broker up;
        each source's Kafka settings are resolved once, when a client first asks for them (so
        storage-only work such as compaction never needs the broker either).
        """
        # $STREAMOPS_STORAGE_OPTIONS, where set, wins everywhere; on the job cluster the driver's
        # readers otherwise log in as the cluster does (bundle/storage.py).
        cluster = self.target.databricks_or_default.storage if self.on_cluster else None
        storage = partial(login_for, environment=environment_login(), cluster=cluster)
        return RuntimeContext(self.target_name, partial(_kafka_settings, self), storage)

    def source_options(
        self, source_name: str, query_name: str, starting_offsets: str | None = None
    ) -> dict[str, str]:
        """Options of Spark's Kafka source for query `query_name` reading source `source_name`,
        with that source's brokers, login, topic and starting offsets (`starting_offsets`
        overrides them); secrets resolved now, never log them."""
        kafka = self.runtime.kafka_for(source_name)
        return kafka.source_options(query_name, starting_offsets=starting_offsets)

    def bootstrap_servers(self, source: Source) -> str:
        """Bootstrap servers for a source; 'embedded' until the local stack resolves it."""
        if self.bootstrap_override:
            return self.bootstrap_override
        return source.bootstrap_servers or self.target.kafka.bootstrap_servers

    def kafka_security(self, source: Source) -> KafkaSecurity:
        """How a source's clients log in: its own `security`, else the target's."""
        return source.security if source.security is not None else self.target.kafka.security


def _kafka_settings(bundle: Bundle, source_name: str) -> KafkaClientSettings:
    src = bundle.spec.sources[source_name]
    return dataclasses.replace(
        _kafka_login(bundle, src),
        topic=src.topic,
        starting_offsets=src.starting_offsets,
        fail_on_data_loss=src.fail_on_data_loss,
    )


def _kafka_login(bundle: Bundle, src: Source) -> KafkaClientSettings:
    """Where and how the clients of `src` connect: its brokers with its login (else the target's)."""
    sec = bundle.kafka_security(src)
    bootstrap = bundle.bootstrap_servers(src)
    if bootstrap != EMBEDDED:
        if bundle.bootstrap_override and sec.protocol.startswith("SASL_") and not sec.username:
            # $STREAMOPS_KAFKA_BOOTSTRAP_SERVERS on a local target whose login is the local
            # broker's generated one: that login means nothing to another broker, so the
            # override is a PLAINTEXT listener (name credentials in bundle.yml for a SASL one).
            return KafkaClientSettings(bootstrap)
        shaded = bundle.target.mode == "databricks"
        return KafkaClientSettings(
            bootstrap, sec.protocol, sec.sasl_mechanism, sec.username, sec.password, shaded
        )
    # The local broker started by `streamops local up`: its listeners and generated credentials.
    ep = _local_broker(bundle)
    if not sec.protocol.startswith("SASL_"):
        return KafkaClientSettings(ep.plaintext)
    user: Secret = sec.username if sec.username else GeneratedSecret(ep.username)
    pwd: Secret = sec.password if sec.password else GeneratedSecret(ep.password)
    return KafkaClientSettings(ep.sasl, sec.protocol, ep.sasl_mechanism, user, pwd)


def _local_broker(bundle: Bundle) -> LocalBroker:
    where = (
        f"{bundle.path.name}: targets.{bundle.target_name}.kafka.bootstrap_servers is 'embedded'"
    )
    if bundle.local_broker is None:
        raise LocalStackError(
            f"{where} (the local broker), but this bundle was loaded without a way to find it. "
            "Fix: load it with `load(path, target, local_broker=streamops.localstack."
            "local_broker)` (or `bundle.with_local_broker(...)`) where a run needs Kafka."
        )
    try:
        return bundle.local_broker(bundle.cache_dir, bundle.local_stack_dir)
    except LocalStackError as exc:
        raise LocalStackError(f"{where} but {exc}") from None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
