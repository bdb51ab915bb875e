"""Everything a run needs to reach the outside: the settings `Bundle.runtime` resolves once per
bundle (bundle/resolved.py) and every client shares.

Kafka settings come in the two forms the clients take: Spark's `kafka.`-prefixed source options
(JAAS line included) and librdkafka's (confluent-kafka: preflight, reconstruction, consumer-group
commits, the sample producer). Storage options serve fsspec/adlfs and delta-rs alike. Secrets stay
references until a client asks for its settings, and every repr masks them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamops.bundle.secrets import MASK
from streamops.errors import BundleError, Problem

# adlfs/delta-rs options for remote storage (account name + key/SAS/service principal) as JSON.
STORAGE_OPTIONS_ENV = "STREAMOPS_STORAGE_OPTIONS"
# Spark versions of Databricks runtimes, by runtime major (release notes); the key is the part of
# `cluster.spark_version` before the first dot, e.g. "18.0.x-scala2.13" -> "18".
DATABRICKS_SPARK = {"13": "3.4", "14": "3.5", "15": "3.5", "16": "3.5", "17": "4.0", "18": "4.1"}
# The Spark major.minor this project is tested with: requirements.lock pins pyspark to it, and a
# unit test keeps the two equal. Databricks Runtime 18 LTS runs Apache Spark 4.1.
TESTED_SPARK = "4.1"
TESTED_RUNTIME = "18.0.x-scala2.13"


class Secret(Protocol):
    """A value resolved only when a client is built; its repr never shows it."""

    def resolve(self) -> str: ...


@dataclass(frozen=True)
class GeneratedSecret:
    """A credential generated at run time (the local broker's SASL password)."""

    value: str = field(repr=False)

    def resolve(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return MASK


@dataclass(frozen=True)
class KafkaClientSettings:
    """How every Kafka client of one source reaches and logs in to its brokers."""

    bootstrap_servers: str
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: Secret | None = None
    password: Secret | None = None
    # Databricks runtimes shade the Kafka client: the JAAS login module lives under kafkashaded.
    shaded: bool = False

    def __repr__(self) -> str:
        return (
            f"KafkaClientSettings(bootstrap_servers={self.bootstrap_servers!r}, "
            f"protocol={self.protocol!r}, mechanism={self.mechanism!r}, "
            f"username={'set' if self.username else None}, password={MASK if self.password else None})"
        )

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def jaas_module(self) -> str:
        """The login module class Spark's Kafka client loads for the mechanism."""
        name = (
            "common.security.plain.PlainLoginModule"
            if self.mechanism == "PLAIN"
            else "common.security.scram.ScramLoginModule"
        )
        return f"{'kafkashaded.' if self.shaded else ''}org.apache.kafka.{name}"

    def spark_options(self) -> dict[str, str]:
        """`kafka.*` options of Spark's Kafka source with secrets resolved now; never log them."""
        opts = {"kafka.bootstrap.servers": self.bootstrap_servers}
        if self.protocol == "PLAINTEXT":
            return opts
        opts["kafka.security.protocol"] = self.protocol
        if self.uses_sasl and self.mechanism:
            user = self.username.resolve() if self.username else ""
            pwd = self.password.resolve() if self.password else ""
            opts["kafka.sasl.mechanism"] = self.mechanism
            opts["kafka.sasl.jaas.config"] = (
                f'{self.jaas_module()} required username="{_jaas_escape(user)}" '
                f'password="{_jaas_escape(pwd)}";'
            )
        return opts

    def librdkafka(self) -> dict[str, str]:
        """confluent-kafka settings with secrets resolved now; never log them."""
        conf = {"bootstrap.servers": self.bootstrap_servers}
        if self.protocol == "PLAINTEXT":
            return conf
        conf["security.protocol"] = self.protocol
        if self.uses_sasl and self.mechanism:
            conf["sasl.mechanism"] = self.mechanism
            conf["sasl.username"] = self.username.resolve() if self.username else ""
            conf["sasl.password"] = self.password.resolve() if self.password else ""
        return conf


def _jaas_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class RuntimeContext:
    """Kafka settings per source and storage options, resolved for one bundle and target."""

    target: str
    resolve_kafka: Callable[[str], KafkaClientSettings] = field(repr=False)
    storage: Mapping[str, str] | None = field(default=None, repr=False)
    # Per-location options when no fixed ones are set (the job cluster's own login).
    storage_for: Callable[[str], Mapping[str, Any] | None] | None = field(default=None, repr=False)
    _kafka: dict[str, KafkaClientSettings] = field(default_factory=dict, repr=False, compare=False)

    def kafka_for(self, source: str) -> KafkaClientSettings:
        """The client settings of bundle source `source`, resolved on first use, then kept."""
        if source not in self._kafka:
            self._kafka[source] = self.resolve_kafka(source)
        return self._kafka[source]

    def storage_options(self, location: str) -> dict[str, Any] | None:
        """fsspec/delta-rs options for `location`: none for a local path, the target's otherwise."""
        if "://" not in location or location.startswith("file:"):
            return None
        if self.storage:
            return dict(self.storage)
        found = self.storage_for(location) if self.storage_for is not None else None
        return dict(found) if found is not None else None


def storage_options_env() -> dict[str, str] | None:
    """adlfs/delta-rs options for remote storage from $STREAMOPS_STORAGE_OPTIONS, or None.

    Read here, like every environment variable streamops uses; credentials never belong in
    bundle.yml.
    """
    raw = os.environ.get(STORAGE_OPTIONS_ENV) or None
    if raw is None:
        return None
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError([Problem(f"${STORAGE_OPTIONS_ENV}", None, "(environment)",
                                   f"not valid JSON ({exc.msg} at character {exc.pos})",
                                   'set it to a JSON object, e.g. {"account_name": "...", '
                                   '"account_key": "..."}')]) from None  # fmt: skip
    if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
        raise BundleError([Problem(f"${STORAGE_OPTIONS_ENV}", None, "(environment)",
                                   "must be a JSON object of strings",
                                   'e.g. {"account_name": "...", "account_key": "..."}')])  # fmt: skip
    return opts


def spark_version_of(runtime: str) -> str | None:
    """Apache Spark major.minor of a Databricks runtime key such as '18.0.x-scala2.13'."""
    return DATABRICKS_SPARK.get(runtime.split(".", 1)[0])
