"""Everything a run needs to reach the outside, resolved once per bundle by `Bundle.runtime`
(bundle/resolved.py) and shared by every client: Kafka settings per source
(bundle/kafka_settings.py) and storage logins per location (bundle/storage.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streamops.bundle.kafka_settings import KafkaClientSettings
from streamops.bundle.storage import StorageLogin

# Spark versions of Databricks runtimes, by runtime major (release notes); the key is the part of
# `cluster.spark_version` before the first dot, e.g. "18.0.x-scala2.13" -> "18".
DATABRICKS_SPARK = {"13": "3.4", "14": "3.5", "15": "3.5", "16": "3.5", "17": "4.0", "18": "4.1"}
# The Spark major.minor this project is tested with: requirements.lock pins pyspark to it, and a
# unit test keeps the two equal. Databricks Runtime 18 LTS runs Apache Spark 4.1.
TESTED_SPARK = "4.1"
TESTED_RUNTIME = "18.0.x-scala2.13"


@dataclass(frozen=True)
class RuntimeContext:
    """Kafka settings per source and storage logins per location, for one bundle and target.

    Each is resolved on first use, then kept: building the context needs no broker and no secret.
    """

    target: str
    resolve_kafka: Callable[[str], KafkaClientSettings] = field(repr=False)
    resolve_storage: Callable[[str], StorageLogin] = field(repr=False)
    _kafka: dict[str, KafkaClientSettings] = field(default_factory=dict, repr=False, compare=False)
    _storage: dict[str, StorageLogin] = field(default_factory=dict, repr=False, compare=False)

    def kafka_for(self, source: str) -> KafkaClientSettings:
        """The client settings of bundle source `source`, resolved on first use, then kept."""
        if source not in self._kafka:
            self._kafka[source] = self.resolve_kafka(source)
        return self._kafka[source]

    def storage(self, location: str) -> StorageLogin:
        """How the driver's readers reach `location` (a path or URL), resolved once, then kept."""
        if location not in self._storage:
            self._storage[location] = self.resolve_storage(location)
        return self._storage[location]


def spark_version_of(runtime: str) -> str | None:
    """Apache Spark major.minor of a Databricks runtime key such as '18.0.x-scala2.13'."""
    return DATABRICKS_SPARK.get(runtime.split(".", 1)[0])
