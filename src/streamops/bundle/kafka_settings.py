"""What every Kafka client of one bundle source needs, resolved once per source (Bundle.runtime).

Two forms, for the two kinds of client: Spark's Kafka source options (`kafka.`-prefixed, JAAS
line included, plus what the source reads: topic, starting offsets, data-loss policy) and
librdkafka's settings (confluent-kafka: preflight, reconstruction, consumer-group commits, the
sample producer). Secrets stay references until a client asks for its settings; reprs mask them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from streamops.bundle.secrets import MASK


class Secret(Protocol):
    """A value resolved only when a client is built; its repr never shows it."""

    def resolve(self) -> str: ...


@dataclass(frozen=True)
class GeneratedSecret:
    """A credential known only at run time (the local broker's generated SASL password, a key
    from the environment)."""

    value: str = field(repr=False)

    def resolve(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return MASK


class LocalBroker(Protocol):
    """The running local broker as `streamops.localstack` reports it: listeners and login."""

    @property
    def plaintext(self) -> str: ...
    @property
    def sasl(self) -> str: ...
    @property
    def sasl_mechanism(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...


# How a bundle finds the broker its 'embedded' means: called with the bundle's cache folder and
# the stack's state folder (None: the one `streamops local up` uses), only when a client asks.
# Handed in from above (`streamops.localstack.local_broker`): the bundle never imports the stack.
LocalBrokerLookup = Callable[[Path, Path | None], LocalBroker]


@dataclass(frozen=True)
class KafkaClientSettings:
    """How every Kafka client of one source reaches its brokers, logs in, and reads its topic."""

    bootstrap_servers: str
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: Secret | None = None
    password: Secret | None = None
    # Databricks runtimes shade the Kafka client: the JAAS login module lives under kafkashaded.
    shaded: bool = False
    # What Spark's source reads (`sources.<s>`); None only for settings built outside a bundle.
    topic: str | None = None
    starting_offsets: str = "earliest"
    fail_on_data_loss: bool = True

    def __repr__(self) -> str:
        return (
            f"KafkaClientSettings(bootstrap_servers={self.bootstrap_servers!r}, "
            f"protocol={self.protocol!r}, mechanism={self.mechanism!r}, "
            f"username={'set' if self.username else None}, password={MASK if self.password else None}, "
            f"topic={self.topic!r})"
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

    def source_options(
        self, query_name: str, *, starting_offsets: str | None = None
    ) -> dict[str, str]:
        """Every option of Spark's Kafka source for query `query_name` reading this source:
        login, topic, starting offsets (`starting_offsets` overrides the source's), data-loss
        policy; secrets resolved now, never log them."""
        if self.topic is None:
            raise ValueError("these Kafka settings name no topic; get them from bundle.runtime")
        return {
            **self.spark_options(),
            "subscribe": self.topic,
            "startingOffsets": starting_offsets or self.starting_offsets,
            "failOnDataLoss": str(self.fail_on_data_loss).lower(),
            # Consumer group ids of Spark's own consumers say which query they belong to.
            "groupIdPrefix": f"spark-{query_name}",
        }

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
